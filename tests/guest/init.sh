#!/bin/sh
# /init of the vdc test guest: busybox-static plus this script, packed by tests/guest/build.py.
#
# One image serves every test; what it does is chosen by `vdc.*` kernel parameters, which
# are read from /proc/cmdline and, when QEMU passes one, from the fw_cfg file
# opt/vdc/cmdline (handy for the disk image, whose command line is fixed):
#
#   vdc.hostname=NAME   set the hostname (default: vdc-guest)
#   vdc.dhcp=1          udhcpc on every ethN          -> VDC-GUEST-DHCP <iface> <ip>
#   vdc.bmc=IP          IP to virtio-serial `placemat` -> VDC-GUEST-BMC <ip> (once written)
#   vdc.9p=TAG[,TAG]    mount 9p TAG at /mnt/TAG, write from-guest.txt
#                                                     -> VDC-GUEST-9P <tag> ok|readonly|failed
#   vdc.poweroff=1      power off after VDC-GUEST-DONE
#   vdc.debug=1         print the uptime after each insmod (VDC-GUEST-DEBUG lines)
#
# Always printed, one line each, on ttyS0 (see build.py / the report for the full list):
#   VDC-GUEST-READY boot=<n> uptime=<secs> boot_id=<uuid>
#     boot=<n> counts boots within one QEMU process: it lives in CMOS byte 0x7f, which
#     survives system_reset and guest reboots but starts at 0 in every new QEMU process.
#   VDC-GUEST-SEED instance-id=<id> / VDC-GUEST-USERDATA <line>  (NoCloud `cidata` seed)
#   VDC-GUEST-IGNITION <sha1>   (fw_cfg opt/com.coreos/config)
#   VDC-GUEST-TPM <major>       (/sys/class/tpm/tpm0)
#   VDC-GUEST-EFI secureboot=0|1  (booted by UEFI firmware: its SecureBoot variable)
#   VDC-GUEST-SERIAL <smbios product serial>
#   VDC-GUEST-DISKS <vd* names>
#   VDC-GUEST-ACPI ok|none      (acpid: power button -> poweroff -f; none without ACPI)
#   VDC-GUEST-DONE
# then a shell on the console, forever.

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root
mkdir -p /dev/pts /run /tmp /mnt /root /etc/acpi/PWRF
mount -t devpts devpts /dev/pts

# Markers go straight to the first serial port, whatever the console is.
say() {
	if [ -c /dev/ttyS0 ]; then echo "$*" >/dev/ttyS0; else echo "$*" >/dev/console; fi
}

debug=
case " $(cat /proc/cmdline) " in *" vdc.debug=1 "*) debug=1 ;; esac
while read -r m; do
	insmod "/$m" 2>/dev/null
	[ -n "$debug" ] && say "VDC-GUEST-DEBUG $(cut -d' ' -f1 /proc/uptime) insmod ${m##*/}"
done </modules.list

# Boot counter in CMOS RAM (port 0x70 selects, 0x71 holds the byte).
cmos_index() { printf '\177' | dd of=/dev/port bs=1 seek=112 count=1 conv=notrunc 2>/dev/null; }
boot=0
if [ -c /dev/port ]; then
	cmos_index
	boot=$(dd if=/dev/port bs=1 skip=113 count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
	boot=$(((${boot:-0} % 255) + 1))
	cmos_index
	printf "\\$(printf %o "$boot")" | dd of=/dev/port bs=1 seek=113 count=1 conv=notrunc 2>/dev/null
fi
say ""  # the firmware may have left a partial line ("Booting from ROM..")
say "VDC-GUEST-READY boot=$boot uptime=$(cut -d' ' -f1 /proc/uptime)" \
	"boot_id=$(cat /proc/sys/kernel/random/boot_id)"

cmdline=$(cat /proc/cmdline)
fwcmd=/sys/firmware/qemu_fw_cfg/by_name/opt/vdc/cmdline/raw
[ -r $fwcmd ] && cmdline="$cmdline $(cat $fwcmd)"
hostname=vdc-guest dhcp= bmc= shares= poweroff=
for arg in $cmdline; do
	case "$arg" in
	vdc.hostname=*) hostname=${arg#*=} ;;
	vdc.dhcp=*) dhcp=${arg#*=} ;;
	vdc.bmc=*) bmc=${arg#*=} ;;
	vdc.9p=*) shares="$shares $(echo "${arg#*=}" | tr , ' ')" ;;
	vdc.poweroff=*) poweroff=${arg#*=} ;;
	esac
done
hostname "$hostname"
ip link set lo up

serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)

# DHCP on every ethN, in parallel; udhcpc stays in the background to renew.
if [ "$dhcp" = 1 ]; then
	for d in /sys/class/net/eth*; do
		[ -e "$d" ] || continue
		i=${d##*/}
		ip link set "$i" up
		udhcpc -i "$i" -b -t 10 -T 1 -A 2 -s /udhcpc.sh -p "/run/udhcpc.$i.pid" >/dev/null 2>&1 &
	done
	wait
fi

# The BMC address to the host over virtio-serial. A write blocks until the host side is
# open, so it runs in the background and the marker follows the write.
if [ -n "$bmc" ]; then
	port=
	for n in /sys/class/virtio-ports/vport*/name; do
		[ -r "$n" ] && [ "$(cat "$n")" = placemat ] && port=$(basename "$(dirname "$n")")
	done
	if [ -n "$port" ]; then
		mkdir -p /dev/virtio-ports && ln -sf "../$port" /dev/virtio-ports/placemat
		(echo "$bmc" >"/dev/$port" && say "VDC-GUEST-BMC $bmc") &
	else
		say "VDC-GUEST-BMC-NOPORT $bmc"
	fi
fi

for tag in $shares; do
	mkdir -p "/mnt/$tag"
	if ! mount -t 9p -o trans=virtio,version=9p2000.L "$tag" "/mnt/$tag" 2>/dev/null; then
		say "VDC-GUEST-9P $tag failed"
		continue
	fi
	if err=$({ echo "hello from ${serial:-$hostname}" >"/mnt/$tag/from-guest.txt"; } 2>&1); then
		say "VDC-GUEST-9P $tag ok"
	else
		case "$err" in
		*Read-only*) say "VDC-GUEST-9P $tag readonly" ;;
		*) say "VDC-GUEST-9P $tag failed" ;;
		esac
	fi
done

# NoCloud seed: a filesystem labelled cidata (iso9660 or vfat).
seed=$(findfs LABEL=cidata 2>/dev/null || findfs LABEL=CIDATA 2>/dev/null)
mkdir -p /mnt/seed
mounted=
for dev in $seed /dev/vd* /dev/sr*; do
	[ -b "$dev" ] || continue
	for fs in iso9660 vfat; do
		mount -r -t $fs "$dev" /mnt/seed 2>/dev/null || continue
		if [ -f /mnt/seed/meta-data ]; then mounted=$dev; break 2; fi
		umount /mnt/seed
	done
done
if [ -n "$mounted" ]; then
	iid=$(sed -n 's/^instance-id:[[:space:]]*//p' /mnt/seed/meta-data | head -n1 | tr -d "\"'")
	say "VDC-GUEST-SEED instance-id=$iid"
	say "VDC-GUEST-USERDATA $(head -n1 /mnt/seed/user-data 2>/dev/null)"
fi

ign=/sys/firmware/qemu_fw_cfg/by_name/opt/com.coreos/config/raw
[ -r $ign ] && say "VDC-GUEST-IGNITION $(sha1sum <$ign | cut -d' ' -f1)"

[ -e /sys/class/tpm/tpm0 ] && say "VDC-GUEST-TPM $(cat /sys/class/tpm/tpm0/tpm_version_major)"

# UEFI's global SecureBoot variable: 4 bytes of attributes, then 1 when the firmware
# enforces Secure Boot. Firmware built without Secure Boot has no such variable.
if [ -d /sys/firmware/efi ]; then
	mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
	sbvar=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
	# Read whole: efivarfs does not seek, so `od -j4` would read the attributes.
	set -- $(od -An -tu1 -N5 $sbvar 2>/dev/null)
	say "VDC-GUEST-EFI secureboot=${5:-0}"
fi

say "VDC-GUEST-SERIAL $serial"
say "VDC-GUEST-DISKS $(cd /sys/block && echo vd* | sed 's/^vd\*$//')"

# Power button -> poweroff -f, so QMP system_powerdown works.
printf '#!/bin/sh\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
if grep -qx "Power Button" /sys/class/input/input*/name 2>/dev/null &&
	acpid -c /etc/acpi -l /run/acpid.log; then
	say "VDC-GUEST-ACPI ok"
else
	say "VDC-GUEST-ACPI none"
fi

say "VDC-GUEST-DONE"
[ "$poweroff" = 1 ] && poweroff -f

export PS1='vdc-guest# '
while true; do
	setsid cttyhack sh
	sleep 1
done
