#!/bin/bash
# A CI job as Placemat's users write them, driving `placemat2` and `pmctl2` and nothing of
# vdc's own: start, wait for the nodes, read a console, power-cycle, forward a port, stop.
# Each step checks the output format or exit code that Placemat v2.4.11 gives.
#
#   placemat-ci.sh CLUSTER.yml WORKDIR      (runs where the lab may be built: a test netns)
set -euo pipefail
cluster=$1 work=$2
step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "start placemat2 in the background"
placemat2 --run-dir "$work/run" --data-dir "$work/data" --cache-dir "$work/cache" \
    "$cluster" >"$work/placemat2.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    pmctl2 node list >/dev/null 2>&1 && break
    kill -0 $pid 2>/dev/null || { cat "$work/placemat2.log"; fail "placemat2 exited"; }
    sleep 0.2
done
[ "$(pgrep --exact placemat2)" = "$pid" ] || fail "pgrep --exact placemat2 does not find it"

step "node list and show"
[ "$(pmctl2 node list)" = n1 ] || fail "node list: $(pmctl2 node list)"
pmctl2 node list --json | jq -e 'length == 1 and .[0].name == "n1"' >/dev/null
show=$(pmctl2 node show n1)
# Go's encoder: compact, Placemat's fields in its struct's order, nothing else.
[ "$(jq -c 'keys_unsorted' <<<"$show")" = \
  '["name","taps","volumes","cpu","memory","uefi","tpm","smbios","power_status","socket_path"]' ] \
    || fail "node show keys: $show"
[[ $show == '{"name":"n1",'* ]] || fail "node show is not compact: $show"
[ "$(jq -r .power_status <<<"$show")" = On ] || fail "power: $show"

step "read the console through the node's socket while it reboots"
socket=$(jq -r .socket_path <<<"$show")
socat -u "UNIX-CONNECT:$socket" - >"$work/console.txt" &
reader=$!
sleep 0.5
pmctl2 node action restart n1
for _ in $(seq 600); do grep -q VDC-GUEST-READY "$work/console.txt" && break; sleep 0.2; done
grep -q VDC-GUEST-READY "$work/console.txt" || fail "no READY on the console after restart"

step "power off and on"
pmctl2 node action stop n1
[ "$(pmctl2 node show n1 | jq -r .power_status)" = Off ] || fail "not off"
pmctl2 node action start n1
[ "$(pmctl2 node show n1 | jq -r .power_status)" = On ] || fail "not on"
for _ in $(seq 600); do
    [ "$(grep -c VDC-GUEST-READY "$work/console.txt")" -ge 2 ] && break; sleep 0.2
done
[ "$(grep -c VDC-GUEST-READY "$work/console.txt")" -ge 2 ] || fail "no READY after power on"
kill $reader

step "forward a port into a namespace"
pmctl2 forward add 18080 pm-web:10.9.0.2:8000
[ "$(pmctl2 forward list)" = "18080 pm-web:10.9.0.2:8000" ] || fail "forward list: $(pmctl2 forward list)"
[ "$(pmctl2 forward list --json)" = \
  '[{"local_port":18080,"pod":"pm-web","remote_host":"10.9.0.2","remote_port":8000}]' ] \
    || fail "forward list --json: $(pmctl2 forward list --json)"
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/ >/dev/null && break; sleep 0.2; done
curl -sf http://127.0.0.1:18080/ | grep -q "Directory listing" || fail "nothing through the forward"
pmctl2 forward delete 18080
[ "$(pmctl2 forward list --json)" = null ] || fail "an empty list is not null"

step "exit codes"
rc=0; pmctl2 node show nosuch 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "node show of an unknown node: $rc"
rc=0; pmctl2 node action 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "node action without arguments: $rc"

step "stop with SIGTERM"
trap - EXIT
kill -TERM $pid
rc=0; wait $pid || rc=$?
[ $rc = 1 ] || fail "placemat2 exit code after SIGTERM: $rc (Placemat's is 1)"
grep -q "removed everything this run created" "$work/placemat2.log" || fail "no clean stop"
echo "OK"
