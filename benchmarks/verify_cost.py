"""What checking stored outputs costs: a memoized rerun of a chain with the check before reuse
(one stat per output, a read and hash of the final one) against the same rerun with the check
switched off, and a cold run with writes hashed against one with plain writes; same process,
medians of interleaved rounds.

    TMPDIR=/dev/shm python benchmarks/verify_cost.py [--steps 500] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from memodag import MEMOIZED_RUN_TAG, Instance, job, op
from memodag.storage.io_managers import files
from memodag.versioning import memoize


def _chain(n: int) -> Any:
    @op(version="1")
    def start() -> int:
        return 0

    @op(version="1")
    def step(x: int) -> int:
        return x + 1

    @job(name=f"chain{n}", tags={MEMOIZED_RUN_TAG: "true"})
    def chain():
        value = start()
        for i in range(n):
            value = step.alias(f"s{i}")(value)

    return chain


class _PlainWriter:
    """What ``handle_output`` wrote through before outputs were hashed."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.size = None
        self.sequential = False

    def write(self, data: Any) -> int:
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def digest(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    chain = _chain(args.steps)
    home = Path(tempfile.mkdtemp(prefix="memodag-verify-"))
    instance = Instance.from_url(f"sqlite:///{home / 'i.db'}", storage_dir=home / "storage")
    chain.execute_in_process(instance=instance)
    verified = memoize.IndexMemoizer._verified
    hashing = files._HashingWriter
    times: dict[str, list[float]] = {
        k: [] for k in ("rerun", "rerun_unchecked", "cold", "cold_plain")
    }
    # reruns measured after the cold runs: a rerun right after a cold run pays for the index
    # entries and files that run rewrote, which would land on one variant only
    rounds = [
        pair if n % 2 == 0 else pair[::-1]  # which goes first alternates
        for pair in (("cold", "cold_plain"), ("rerun", "rerun_unchecked"))
        for n in range(args.rounds)
    ]
    for index, names in enumerate(rounds):
        if index == args.rounds:
            chain.execute_in_process(instance=instance)  # not timed: first rerun after cold runs
        for name in names:
            memoize.IndexMemoizer._verified = (  # type: ignore[method-assign]
                (lambda self, step, found: True) if name == "rerun_unchecked" else verified
            )
            files._HashingWriter = _PlainWriter if name == "cold_plain" else hashing  # type: ignore[misc]
            tags = {MEMOIZED_RUN_TAG: "false"} if name.startswith("cold") else None
            began = time.perf_counter()
            chain.execute_in_process(instance=instance, tags=tags)
            times[name].append(time.perf_counter() - began)
    memoize.IndexMemoizer._verified = verified  # type: ignore[method-assign]
    files._HashingWriter = hashing  # type: ignore[misc]
    median = {k: statistics.median(v) for k, v in times.items()}
    steps = args.steps + 1
    print(f"{steps} steps, median of {args.rounds} rounds")
    for name, value in median.items():
        print(f"  {name:16s} {value * 1000:8.1f} ms  ({value / steps * 1e6:6.1f} us/step)")
    print(
        f"  memoized rerun, checked / unchecked: {median['rerun'] / median['rerun_unchecked']:.3f}"
    )
    print(f"  cold run, hashed / plain writes:     {median['cold'] / median['cold_plain']:.3f}")


if __name__ == "__main__":
    main()
