#!/bin/sh
# Stratus guest: ACPI power button handler, run by busybox acpid
# (libvirt virDomainShutdown / "virsh shutdown" / QEMU "system_powerdown").
# Announces the shutdown on the console, then asks init for a clean power-off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir /run/stratus/shutting-down 2>/dev/null || exit 0   # one press is enough
id=none
[ -r /run/stratus/instance-id ] && IFS= read -r id < /run/stratus/instance-id
echo "STRATUS-SHUTDOWN $id" > /dev/console
exec poweroff
