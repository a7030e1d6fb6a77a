"""Small helpers with no place in the dependency chain (machine description for results)."""
