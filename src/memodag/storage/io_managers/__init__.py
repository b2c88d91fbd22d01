"""Built-in io managers: local filesystem, versioned filesystem, in-memory, fsspec object stores."""
