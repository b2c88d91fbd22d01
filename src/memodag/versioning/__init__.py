"""Versions: code, config, resources and upstream versions hashed into one version per output."""
