#!/bin/sh
# Stratus guest: inittab "shutdown" action, run by init before it kills all
# processes and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
sync
umount /run/stratus/cidata 2>/dev/null
exit 0
