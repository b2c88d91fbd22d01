"""``import memodag`` cost, in fresh interpreters.

``import_s`` is the wall time of ``python -c "import memodag"`` minus that of ``python -c "pass"``
(both started from the sample's process, alternating, three pairs per sample, median difference).
The details list the heaviest imports from ``python -X importtime``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Metrics, Target, Workload, timed

PAIRS = 3


def _wall(code: str) -> float:
    _, seconds = timed(lambda: subprocess.run([sys.executable, "-c", code], check=True))
    return seconds


def import_memodag(scratch: Path) -> Metrics:
    bare, loaded = [], []
    for _ in range(PAIRS):
        bare.append(_wall("pass"))
        loaded.append(_wall("import memodag"))
    in_process = subprocess.run(
        [
            sys.executable,
            "-c",
            "import time; t = time.perf_counter(); import memodag; print(time.perf_counter() - t)",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {
        "import_s": statistics.median(b - a for a, b in zip(bare, loaded, strict=True)),
        "python_startup_s": statistics.median(bare),
        "in_process_s": float(in_process),
    }


def importtime_offenders(top: int = 15) -> str:
    """The heaviest modules under ``import memodag`` by cumulative and by own time."""
    stderr = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import memodag"],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    rows: list[tuple[int, int, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(own), int(cumulative), name))
    total = max((c for _, c, n in rows if n.strip() == "memodag"), default=0)
    lines = [f"python -X importtime -c 'import memodag': memodag cumulative {total / 1e3:.1f} ms"]
    lines.append(f"top {top} by cumulative time (ms, includes children):")
    for _own, cumulative, name in sorted(rows, key=lambda r: -r[1])[:top]:
        lines.append(f"  {cumulative / 1e3:8.1f}  {name.rstrip()}")
    lines.append(f"top {top} by own time (ms):")
    for own, _, name in sorted(rows, key=lambda r: -r[0])[:top]:
        lines.append(f"  {own / 1e3:8.1f}  {name.strip()}")
    return "\n".join(lines)


WORKLOADS = [
    Workload(
        "import_memodag",
        import_memodag,
        description="python -c 'import memodag' minus python -c 'pass' (fresh interpreters)",
        primary="import_s",
        targets=(Target("import < 0.3 s", "import_s", max_value=0.3),),
        details=importtime_offenders,
    ),
]
