"""A run that stores one output of its step, then waits: the subprocess test_orphans.py kills
before the step's outcome is recorded, leaving a file no event names.

Usage: python orphan_job.py DIR   (waits for DIR/release once DIR/started exists)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from memodag import Instance, Out, Output, job, op


def main(directory: Path) -> None:
    @op(out={"first": Out(), "second": Out()})
    def halves():
        yield Output([1, 2], "first")  # stored now; recorded only when the step ends
        (directory / "started").touch()
        deadline = time.monotonic() + 120
        while not (directory / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Output([3, 4], "second")

    @job
    def orphaned():
        halves()

    instance = Instance.from_url(
        f"sqlite:///{directory / 'instance.db'}", storage_dir=directory / "storage"
    )
    orphaned.execute_in_process(instance=instance)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
