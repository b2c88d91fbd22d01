"""memodag benchmarks: workload modules plus the runner (``python benchmarks/run.py``).

Every module in this folder (and its subfolders) whose name does not start with ``_`` and which
defines ``WORKLOADS`` contributes workloads; see ``harness.py`` for the interface.
"""
