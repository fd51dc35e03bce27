#!/usr/bin/env bash
# Installs everything vdc's demo and tests need, idempotently, outside the repository:
# Debian packages, and a virtualenv under $VDC_CACHE_DIR with vdc installed editable.
# A second run with nothing to do takes about a second.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${VDC_CACHE_DIR:-/var/cache/vdc}
venv=$cache/venv

debs=(iproute2 nftables bird2 dnsmasq-base util-linux procps iputils-ping socat curl
      qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools ipxe-qemu seabios
      busybox-static cpio kmod mtools dosfstools fdisk syslinux syslinux-common extlinux
      ipmitool freeipmi-tools
      # the e2e cluster (tests/e2e/cluster) and its images
      containerd runc containernetworking-plugins conntrack iptables gcc libc6-dev
      buildah mmdebstrap)

missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$cache"
# pip's build warnings are noise on success; on failure the whole log is shown.
pip_quiet() {
  "$venv/bin/pip" -q "$@" >"$cache/pip.log" 2>&1 || { cat "$cache/pip.log" >&2; return 1; }
}
if [ ! -x "$venv/bin/python" ]; then
  echo "install-deps: creating virtualenv $venv"
  python3 -m venv "$venv"
fi
# Reinstall only when the dependency list changed.
stamp=$venv/.vdc-deps-$(sha256sum "$here/pyproject.toml" | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "install-deps: installing Python packages into $venv"
  pip_quiet install --upgrade pip
  pip_quiet install -e "$here[test]"
  rm -f "$venv"/.vdc-deps-*
  touch "$stamp"
fi
# The venv is shared by every checkout on the machine (CI clones afresh): vdc itself must
# be this checkout, or tests would quietly run another tree's code.
installed=$(cd / && "$venv/bin/python" -c 'import vdc_runtime, os; print(os.path.dirname(os.path.dirname(vdc_runtime.__file__)))' 2>/dev/null || true)
if [ "$installed" != "$here/runtime" ]; then
  echo "install-deps: pointing $venv at this checkout ($here)"
  pip_quiet install --no-deps -e "$here"
fi
# An editable install compiles nothing, and an environment with PYTHONDONTWRITEBYTECODE
# (these machines have it) would recompile vdc at every start: ~0.15 s of `vdc run`'s
# start-up. Compiling here is idempotent and skips what is current.
"$venv/bin/python" -m compileall -q "$here/runtime" "$here/operator" >/dev/null
