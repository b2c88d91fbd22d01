"""What versioning 200 ops by their source costs in a fresh process, with the source digest
cache (``versioning/source_cache.py``) empty (``source_hash_200_cold``: a project's first run,
or the first after an edit of every file) and filled by an earlier process
(``source_hash_200_warm``: every run after it).

The ops are the 200-function chain of ``costs.py`` (``op{i}`` adds one to ``op{i-1}``), each also
calling a helper of its own module, in one project module. Each sample runs a fresh process
that fills the caches (the installed distributions' and the source digests'), removes the source
digests for ``cold``, then times ``get_op_version`` of every op in a second fresh process, wall
and CPU.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Metrics, Workload

OPS = 200

_MODULE = "from memodag import op\n\n\ndef bump(x):\n    return x + 1\n\n\n" + "\n\n".join(
    f"@op\ndef op{i}(x: int) -> int:\n    value = bump(x)\n    return value + {i}\n"
    for i in range(OPS)
)

_CHILD = """
import json, sys, time
sys.path.insert(0, ".")
import hash_ops
from memodag import SourceHashVersionStrategy
from memodag.versioning.strategy import OpVersionContext

ops = [getattr(hash_ops, f"op{{i}}") for i in range({ops})]
strategy = SourceHashVersionStrategy()
wall, cpu = time.perf_counter(), time.process_time()
versions = {{strategy.get_op_version(OpVersionContext(d, None)) for d in ops}}
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
assert len(versions) == {ops}
print(json.dumps([wall, cpu]))
"""


def _versions_in_a_fresh_process(scratch: Path) -> tuple[float, float]:
    env = {**os.environ, "MEMODAG_CACHE_DIR": str(scratch / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(ops=OPS)],
        cwd=scratch,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall, cpu = json.loads(out.splitlines()[-1])
    return float(wall), float(cpu)


def source_hash_200(scratch: Path, warm: bool) -> Metrics:
    scratch = scratch.resolve()  # the children run in it: a relative cache folder would move
    (scratch / "hash_ops.py").write_text(_MODULE)
    _versions_in_a_fresh_process(scratch)  # fills the caches
    if not warm:  # keep the installed distributions' cache: only source digests are measured
        for digests in (scratch / "cache").glob("source-digests-*.json"):
            digests.unlink()
    wall, cpu = _versions_in_a_fresh_process(scratch)
    return {"versions_s": wall, "versions_cpu_s": cpu}


WORKLOADS = [
    Workload(
        "source_hash_200_cold",
        functools.partial(source_hash_200, warm=False),
        description="SourceHashVersionStrategy versions of 200 ops of one module in a fresh "
        "process, source digest cache empty",
        primary="versions_s",
    ),
    Workload(
        "source_hash_200_warm",
        functools.partial(source_hash_200, warm=True),
        description="the same in a fresh process after another filled the source digest cache",
        primary="versions_s",
        baseline="source_hash_200_cold",
    ),
]
