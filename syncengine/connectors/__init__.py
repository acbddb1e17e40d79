"""HR source connectors: each turns one kind of HR source into raw records (dicts)."""
