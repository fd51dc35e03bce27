#!/bin/sh
set -e
ip route add default via 10.72.0.1
ip route add 10.72.2.0/26 via 10.72.1.1
ip route add 10.72.2.64/26 via 10.72.1.3
