"""Images of every site, through the broker."""
