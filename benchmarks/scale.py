"""Scale: jobs of 1,000 and 10,000 ops define, plan and run with per-step costs flat in job size.

Two shapes (a chain, and one source feeding N-1 independent ops), each with fs_io_manager and
mem_io_manager on a fresh SQLite instance. Each 10,000-op workload's baseline is its 1,000-op
twin; the target is per-step run time within 1.5x of it.
"""

from __future__ import annotations

import functools

from benchmarks._shapes import INSTANCE_SQLITE, IO_FS, IO_MEM, cold_run
from benchmarks.harness import Target, Workload

SMALL, LARGE = 1_000, 10_000

_DESCRIPTIONS = {
    "chain": "{n} ops in a line",
    "wide": "1 source feeding {m} independent ops",
}


def _workloads() -> list[Workload]:
    workloads = []
    for shape in ("chain", "wide"):
        for io in (IO_FS, IO_MEM):
            for n in (SMALL, LARGE):
                small_name = f"scale_{shape}_{SMALL}_{io}"
                what = _DESCRIPTIONS[shape].format(n=f"{n:,}", m=f"{n - 1:,}")
                workloads.append(
                    Workload(
                        f"scale_{shape}_{n}_{io}",
                        functools.partial(
                            cold_run,
                            shape=shape,
                            n=n,
                            io=io,
                            instance_kind=INSTANCE_SQLITE,
                            plan=True,
                        ),
                        description=f"{what}, {io}_io_manager, SQLite instance, cold",
                        baseline=small_name if n == LARGE else None,
                        steps=n,
                        targets=(
                            (Target("per step <= 1.5x 1,000 ops", "per_step_s", max_ratio=1.5),)
                            if n == LARGE
                            else ()
                        ),
                    )
                )
    return workloads


WORKLOADS = _workloads()
