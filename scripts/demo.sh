#!/usr/bin/env bash
# `make demo`: the quick start — a boot server, two workers that network-boot from it, a
# BMC network — in the foreground until Ctrl-C. DEMO_SECONDS=N stops it by itself once the
# workers are up (used to check the demo unattended).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VDC_CACHE_DIR:-/var/cache/vdc}/venv
vdc=$venv/bin/vdc
spec=examples/quickstart.yml

# The workers boot the small test guest built from Debian packages (cached after the first time).
paths=$("$venv/bin/python" tests/guest/build.py --print-paths)
install -m 644 "$("$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["vmlinuz"])' <<<"$paths")" examples/quickstart/boot/vmlinuz
install -m 644 "$("$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["initrd"])' <<<"$paths")" examples/quickstart/boot/initrd.gz

"$vdc" validate "$spec"
cat <<'MSG'

Starting the quick start. Machines run under TCG here, so booting takes tens of seconds.
While it runs, in another terminal:
  vdc node list                       # worker-1, worker-2 (vdc is /var/cache/vdc/venv/bin/vdc)
  vdc node enter worker-1             # its serial console; Ctrl-] leaves
  vdc node action restart worker-2    # power, as pmctl2 node action
  vdc node console-log worker-1 -f
  curl -s localhost:10808/nodes       # the REST API
  ipmitool -I lanplus -H 10.72.16.11 -U cybozu -P cybozu -C 17 power status   # worker-1's BMC
  curl -s --cacert /var/lib/vdc/bmc/ca.crt -u cybozu:cybozu \
       https://10.72.16.11/redfish/v1/Systems/worker-1               # its Redfish
Stop with Ctrl-C: everything it created is removed (volumes and logs stay in /var/lib/vdc).

MSG
"$vdc" run --run-dir /run/vdc/demo "$spec" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
"$venv/bin/python" scripts/demo_watch.py "${DEMO_SECONDS:-300}" || true
if [ -n "${DEMO_SECONDS:-}" ]; then
  kill -TERM "$pid"
fi
wait "$pid"
