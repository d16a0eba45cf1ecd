#!/bin/sh
# Stratus guest: system initialisation (inittab "sysinit", runs once, before anything else).
#
# Mounts the kernel file systems, loads the kernel modules listed in
# /etc/stratus/modules.txt (already in modules.dep dependency order; paths
# relative to /lib/modules/<release>) and brings up the loopback interface.
# The whole guest runs from the initramfs; no disk is needed.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

# End whatever partial line the firmware left on the serial console, so that
# every protocol line starts at the beginning of a line.
echo

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=0620 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /run
mkdir -p /run/stratus /var/log

# Keep the serial console for the protocol lines: only emergencies from the kernel.
dmesg -n 1

release=$(uname -r)
while IFS= read -r module; do
    [ -n "$module" ] || continue
    insmod "/lib/modules/$release/$module" || echo "stratus: cannot load $module"
done < /etc/stratus/modules.txt

ip link set dev lo up
hostname -F /etc/hostname
