#!/bin/sh
# Written by `hardway lab` (qemu driver): gives this VM its identity and address from the seed
# disk /dev/vdb, a tar archive that `hardway lab up` writes for each node (host key, root's
# authorized_keys, hostname, /etc/hosts, address). Every boot, so a changed seed takes effect.
set -eu
# Existing directories (/, /etc, /root) keep their owner and mode.
tar -x -f /dev/vdb -C / --no-overwrite-dir
# ADDRESS (address/prefix) and GATEWAY.
. /etc/hardway-lab/network
cat /etc/hostname > /proc/sys/kernel/hostname
ip link set dev lo up
ip link set dev eth0 up
ip addr replace "$ADDRESS" dev eth0
ip route replace default via "$GATEWAY" dev eth0
