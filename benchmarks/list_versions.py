"""``memodag job list-versions`` at 10,000 outputs, and a memoized rerun of 10,000 ops.

Two stored jobs: a 10,000-op static chain and a 10,000-piece fan-out (pieces -> double per piece
-> total). Each figure is a whole CLI process (``python -m memodag.cli.main ...``) minus the
baseline ``python -c "import memodag"`` measured in the same invocation, interleaved, medians of
``--repeat`` runs (at least 5). The table is rendered to a pipe (what a terminal gets, without
colors); ``--json`` prints every row.

    python benchmarks/list_versions.py [--repeat 5] [--n 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHAIN = """
from memodag import MEMOIZED_RUN_TAG, job, op

@op(version="1")
def source():
    return 0

@op(version="1")
def inc(x):
    return x + 1

@job(tags={{MEMOIZED_RUN_TAG: "true"}})
def chain():
    value = source.alias("op0")()
    for i in range(1, {n}):
        value = inc.alias(f"op{{i}}")(value)
"""

FAN = """
from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, job, op

@op(version="1", out=DynamicOut())
def pieces():
    for i in range({n}):
        yield DynamicOutput(i, mapping_key=f"k{{i}}")

@op(version="1")
def double(x):
    return 2 * x

@op(version="1")
def total(xs):
    return sum(xs)

@job(tags={{MEMOIZED_RUN_TAG: "true"}})
def fan():
    total(pieces().map(double).collect())
"""

RERUN = """
import runpy, sys
from memodag import Instance
job = runpy.run_path(sys.argv[1])[sys.argv[2]]
result = job.execute_in_process(instance=Instance.get())
if result.executed_step_keys:
    raise SystemExit(f"the memoized rerun executed {len(result.executed_step_keys)} steps")
"""


def _run(args: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n", type=int, default=10_000)
    options = parser.parse_args()
    repeat = max(5, options.repeat)
    python = sys.executable
    cli = [python, "-m", "memodag.cli.main"]
    with tempfile.TemporaryDirectory(prefix="memodag-bench-lv-") as tmp:
        scratch = Path(tmp)
        env = {**os.environ, "MEMODAG_HOME": str(scratch / "home"), "COLUMNS": "120"}
        env.pop("MEMODAG_INSTANCE_URL", None)
        (scratch / "chain.py").write_text(CHAIN.format(n=options.n))
        (scratch / "fan.py").write_text(FAN.format(n=options.n))
        (scratch / "rerun.py").write_text(RERUN)
        for name in ("chain.py", "fan.py"):  # stored once, untimed
            _run([*cli, "job", "execute", "-f", name], env, scratch)
        commands = {
            "baseline: python -c 'import memodag'": [python, "-c", "import memodag"],
            "chain list-versions (table)": [*cli, "job", "list-versions", "-f", "chain.py"],
            "chain list-versions --json": [
                *cli,
                "job",
                "list-versions",
                "-f",
                "chain.py",
                "--json",
            ],
            "fan-out list-versions (table)": [*cli, "job", "list-versions", "-f", "fan.py"],
            "fan-out list-versions --json": [
                *cli,
                "job",
                "list-versions",
                "-f",
                "fan.py",
                "--json",
            ],
            "chain memoized rerun (CLI execute)": [*cli, "job", "execute", "-f", "chain.py"],
            "chain memoized rerun (API)": [python, "rerun.py", "chain.py", "chain"],
            "fan-out memoized rerun (API)": [python, "rerun.py", "fan.py", "fan"],
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeat):  # interleaved, so drift hits every command alike
            for name, args in commands.items():
                samples[name].append(_run(args, env, scratch))
    baseline = statistics.median(samples["baseline: python -c 'import memodag'"])
    print(f"n = {options.n}, medians of {repeat} runs, python {sys.version.split()[0]}")
    print(f"{'command':36} {'median s':>9} {'above import s':>15}")
    for name, values in samples.items():
        median = statistics.median(values)
        above = "" if name.startswith("baseline") else f"{median - baseline:15.3f}"
        print(f"{name:36} {median:9.3f} {above}")


if __name__ == "__main__":
    main()
