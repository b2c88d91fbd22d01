"""Executors: where step attempts run. They run attempts and report back; they decide nothing."""
