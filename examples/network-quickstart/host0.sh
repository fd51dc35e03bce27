#!/bin/sh
set -e
ip route add default via 10.72.2.1
