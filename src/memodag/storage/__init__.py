"""Storage: io managers (the data plane) and the instance (runs, events, output index)."""
