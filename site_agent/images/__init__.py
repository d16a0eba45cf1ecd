"""Images a site can boot VMs from."""
