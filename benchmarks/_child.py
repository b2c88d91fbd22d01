"""One benchmark sample in a fresh process: ``_child.py MODULE WORKLOAD run|details RESULT_JSON``.

Started by ``harness.run_in_child`` with a fresh working directory. Imports the workload's module,
calls ``run`` with a fresh scratch directory (or ``details``), and writes the result as JSON.
Never imports memodag itself: what a workload imports is part of what it measures.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    module_name, workload_name, mode, result_path = argv
    module = importlib.import_module(module_name)
    workloads = {w.name: w for w in getattr(module, "WORKLOADS", ())}
    workload = workloads[workload_name]
    if mode == "details":
        if workload.details is None:
            raise SystemExit(f"workload '{workload_name}' has no details function")
        result: dict[str, object] = {"details": workload.details()}
    else:
        scratch = Path(tempfile.mkdtemp(prefix=f"{workload_name}-", dir="."))
        try:
            metrics = workload.run(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        result = {"metrics": {str(k): float(v) for k, v in metrics.items()}}
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
