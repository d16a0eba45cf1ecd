"""Address pools of every site, through the broker (read-only)."""
