#!/bin/sh
# udhcpc event script of the vdc test guest (busybox udhcpc passes the lease in env vars).
say() {
	if [ -c /dev/ttyS0 ]; then echo "$*" >/dev/ttyS0; else echo "$*" >/dev/console; fi
}
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	if [ -n "$router" ]; then
		ip route replace default via "${router%% *}" dev "$interface"
	fi
	: >/etc/resolv.conf
	for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
	[ "$1" = bound ] && say "VDC-GUEST-DHCP $interface $ip"
	;;
esac
exit 0
