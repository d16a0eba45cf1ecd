#!/usr/bin/env bash
# Start virtlogd, libvirtd and PostgreSQL if they are not running (works with or without systemd).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

have_systemd() { [ -d /run/systemd/system ]; }

start() {  # start NAME COMMAND...
  local name=$1; shift
  if pgrep -x "$name" >/dev/null; then return 0; fi
  if have_systemd; then $SUDO systemctl start "$name" || true; fi
  pgrep -x "$name" >/dev/null || $SUDO "$@"
}

# libvirt writes each network's MAC map under /var/lib/libvirt/dnsmasq even when no
# dnsmasq runs (isolated networks with a host address); without systemd nothing creates it.
$SUDO mkdir -p /var/lib/libvirt/dnsmasq

start virtlogd virtlogd -d
start libvirtd libvirtd -d

for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -c qemu:///system version >/dev/null || { echo "libvirtd did not come up" >&2; exit 1; }

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  for version in $(ls /etc/postgresql 2>/dev/null); do
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
fi
echo "daemons: libvirtd and virtlogd running"
