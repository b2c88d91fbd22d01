"""Workloads of the parallel executors (issue 5)."""
