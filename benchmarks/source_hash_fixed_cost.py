"""The fixed cost per run of ``SourceHashVersionStrategy``: what computing the first op version
costs in a fresh process, beyond hashing the op's own code (which grows with the job).

The op reaches pandas and memodag, so the versions of installed distributions are needed; the
environment is the benchmark's own (the shared venv has pandas, polars, Dask, pyarrow and ~120
distributions). pandas, polars, Dask and pyarrow are imported before timing, as a data pipeline
would, and a garbage collection runs before each timing (see ``first_version``). Metrics:

- ``fixed_s`` (``fixed_cpu_s``: its CPU time, steadier on a busy machine): the first
  ``get_op_version`` in this (fresh) process, with the distributions cache written by an
  earlier run (what every run after the first pays);
- ``cold_s``: the same in a fresh subprocess with an empty cache (the first run after an
  install or upgrade);
- ``importlib_metadata_s``: ``importlib.metadata.packages_distributions()`` and the versions of
  every distribution it names, in this process (how installed code was looked up before), and
  its CPU time ``importlib_metadata_cpu_s``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import Metrics, Target, Workload, timed_cpu

STACK = ("pandas", "polars", "dask", "pyarrow")

_CHILD = """
import importlib, json, sys, time
for name in {stack!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
sys.path.insert(0, {repo!r})
from benchmarks.source_hash_fixed_cost import first_version
print(json.dumps(first_version()))
"""


# Bound by ``first_version`` (importing them here would slow every benchmark's discovery).
pd: Any = None
Output: Any = None


def reaches_pandas(frame):
    """An op body that reaches an installed package and memodag (through globals, which every
    memodag version follows, so the figure compares with older ones)."""
    return Output(pd.DataFrame(frame).sum())


def first_version() -> tuple[float, float]:
    import pandas

    import memodag
    from memodag import SourceHashVersionStrategy, op
    from memodag.versioning.strategy import OpVersionContext

    globals().update(pd=pandas, Output=memodag.Output)

    definition = op(reaches_pandas)

    def compute() -> str:
        return SourceHashVersionStrategy().get_op_version(OpVersionContext(definition, None))

    # The imports above leave a full garbage collection due, over every object pandas & co.
    # created; whatever allocates next pays it (0.1 s here), which is theirs, not versioning's.
    gc.collect()
    _, seconds, cpu = timed_cpu(compute)
    return seconds, cpu


def _in_subprocess(scratch: Path, cache: Path) -> tuple[float, float]:
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "MEMODAG_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(stack=STACK, repo=repo)],
        cwd=scratch,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall, cpu = json.loads(out)
    return float(wall), float(cpu)


def _packages_distributions() -> None:
    import importlib.metadata

    for names in importlib.metadata.packages_distributions().values():
        for name in names:
            importlib.metadata.version(name)


def source_hash_fixed_cost(scratch: Path) -> Metrics:
    cache = scratch.resolve() / "cache"
    cold = _in_subprocess(scratch, cache)  # also writes the cache this process then reads
    os.environ["MEMODAG_CACHE_DIR"] = str(cache)
    for name in STACK:
        __import__(name)
    fixed, fixed_cpu = first_version()
    gc.collect()
    _, old, old_cpu = timed_cpu(_packages_distributions)
    return {
        "fixed_s": fixed,
        "fixed_cpu_s": fixed_cpu,
        "cold_s": cold[0],
        "importlib_metadata_s": old,
        "importlib_metadata_cpu_s": old_cpu,
    }


WORKLOADS = [
    Workload(
        "source_hash_fixed_cost",
        source_hash_fixed_cost,
        description="first SourceHashVersionStrategy version in a fresh process, data stack "
        "installed (fixed_s: cache warm, cold_s: first run)",
        primary="fixed_s",
        targets=(Target("fixed cost < 20 ms", "fixed_s", max_value=0.02),),
        requires="pandas",
        install="pandas (and polars, dask, pyarrow for the typical stack)",
    ),
]
