"""The step attempt: what runs one op once, importable by the engine and every executor alike."""
