#!/usr/bin/env bash
# `make demo`: run the quick-start data center in the foreground until Ctrl-C.
# DEMO_SECONDS=N stops it by itself after N seconds (used to check the demo unattended).
set -euo pipefail
cd "$(dirname "$0")/.."
vdc=${VDC_CACHE_DIR:-/var/cache/vdc}/venv/bin/vdc
spec=examples/network-quickstart.yml

"$vdc" validate "$spec"
cat <<'MSG'

Starting the quick-start data center. While it runs, in another terminal:
  ip netns                                     # spine0, rack0-tor, rack1-tor, rack0-host, rack1-host
  ip netns exec rack0-host ping 10.72.2.74     # rack 0 to rack 1, through three routers
  ip netns exec rack0-host curl http://10.72.2.74:8000/
  curl -s localhost:10808/netns                # the REST API
Stop with Ctrl-C: everything it created is removed.

MSG
if [ -n "${DEMO_SECONDS:-}" ]; then
  "$vdc" run --run-dir /run/vdc/demo "$spec" &
  pid=$!
  sleep "$DEMO_SECONDS"
  ip netns exec rack0-host ping -c 1 -W 2 10.72.2.74
  kill -TERM "$pid"
  wait "$pid"
else
  exec "$vdc" run --run-dir /run/vdc/demo "$spec"
fi
