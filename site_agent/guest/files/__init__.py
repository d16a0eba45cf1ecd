"""Files packed into the guest initramfs (package data of the guest image builder)."""
