#!/usr/bin/env bash
# `make test-cold`: `make test` as a new machine runs it. A fresh clone of this checkout's
# HEAD, in a directory with no ../shared beside it, with VDC_CACHE_DIR and pip's cache
# empty, and the default cache path (/var/cache/vdc) hidden behind an empty directory in a
# mount namespace of its own, so nothing can be read from it. Debian packages are the
# machine's: they cannot be uninstalled for the run.
#
# The DMTF validator's Redfish schemas come from `make deps` (a crates.io package, into
# the cache) like everything else; VDC_REDFISH_CSDL, if set, is passed on as it is.
#
#   VDC_COLD_DIR=/var/tmp/x make test-cold     # where (default: a new /var/tmp/vdc-cold.*)
#   VDC_COLD_KEEP=1 make test-cold             # keep the directory afterwards
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${VDC_COLD_DIR:-$(mktemp -d /var/tmp/vdc-cold.XXXXXX)}
mkdir -p "$dir"
[ -z "$(ls -A "$dir")" ] || { echo "test-cold: $dir is not empty" >&2; exit 2; }

git clone -q "$here" "$dir/checkout/vdc"
mkdir -p "$dir/cache" "$dir/pip-cache" "$dir/empty"
echo "test-cold: $(git -C "$dir/checkout/vdc" log -1 --format='%h %s' | cut -c1-80)"
echo "test-cold: in $dir/checkout/vdc, VDC_CACHE_DIR=$dir/cache"
started=$(date +%s)
status=0
# A new machine's shell points Python at nothing: a PYTHONPATH of the caller's (a
# developer's checkout) would make the clone's tests import the caller's code instead.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
# The mount namespace only hides /var/cache/vdc; network namespaces, processes and the
# rest of the file system are the machine's, as for any run.
VDC_CACHE_DIR=$dir/cache PIP_CACHE_DIR=$dir/pip-cache \
  unshare --mount --propagation slave -- bash -c '
    set -e
    mkdir -p /var/cache/vdc
    mount --bind "$1/empty" /var/cache/vdc
    mount -o remount,bind,ro /var/cache/vdc
    cd "$1/checkout/vdc"
    make test
  ' test-cold "$dir" || status=$?
elapsed=$(($(date +%s) - started))
printf 'test-cold: make test exited %d after %d min %02d s\n' "$status" $((elapsed / 60)) $((elapsed % 60))
if [ -z "${VDC_COLD_KEEP:-}" ]; then
  rm -rf "$dir"
else
  echo "test-cold: kept $dir"
fi
exit "$status"
