"""A job whose only output is written slowly by a custom write function: the subprocess that
test_atomic_writes.py SIGKILLs half-way through the write.

Usage: python slow_writer.py MARKER INSTANCE_DB RUN_ID BASE_URL [ENDPOINT_URL]
Touches MARKER once part of the value is written, then keeps writing for up to 60 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from memodag import Instance, Out, job, object_store_io_manager, op

CHUNK = b"x" * 256 * 1024


def main(argv: list[str]) -> None:
    marker, db, run_id, base_url = argv[:4]
    endpoint = argv[4] if len(argv) > 4 else None

    def slow_write(obj: Any, file: BinaryIO) -> None:
        file.write(CHUNK)
        file.flush()
        Path(marker).touch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            file.write(CHUNK)
            time.sleep(0.01)

    def read(file: BinaryIO) -> Any:
        return file.read()

    @op(out=Out(write=slow_write, read=read))
    def slow():
        return "big"

    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"} if endpoint else {}
    manager = object_store_io_manager.configured({"base_url": base_url, "storage_options": options})

    @job(resource_defs={"io_manager": manager})
    def slow_job():
        slow()

    slow_job.execute_in_process(instance=Instance.from_url(f"sqlite:///{db}"), run_id=run_id)


if __name__ == "__main__":
    main(sys.argv[1:])
