#!/usr/bin/env bash
# Install the Debian packages Stratus needs (idempotent; fast when all are present).
set -euo pipefail

PACKAGES=(
  python3 python3-venv python3-dev gcc pkg-config make
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  qemu-system-x86 qemu-utils dnsmasq-base iproute2
  linux-image-cloud-amd64 busybox-static cpio kmod
  globus-proxy-utils voms-clients openssl
  postgresql
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system packages: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
