"""``memodag ui``: the runs list at 10,000 runs, and the first paint of big run pages.

Sets up one instance with a run of a 1,000-op static chain, a run of an N-piece fan-out (folded
into one node per mapped op) and 10,000 small runs, starts ``memodag ui`` on it, then measures,
interleaved, medians of ``--repeat`` samples:

- ``GET /api/runs`` (a page of 50 of the 10,000 runs, with their step counts), against the
  baseline ``GET /api/jobs`` (a route that reads nothing) measured in the same invocation;
- the first paint of a run page in Chromium (navigation until every node of the graph is drawn),
  against the baseline first paint of the runs page;
- how long after a step of a live run ends the browser shows it finished (absolute).

Needs the ``ui`` extra, Playwright and the system's Chromium (/usr/bin/chromium).

    python benchmarks/ui.py [--repeat 5] [--ops 1000] [--pieces 10000] [--runs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SRC = REPO_ROOT / "src"

CHAIN = """
from memodag import job, op

@op(version="1")
def source():
    return 0

@op(version="1")
def inc(x):
    return x + 1

@job
def chain():
    value = source.alias("op0")()
    for i in range(1, {n}):
        value = inc.alias(f"op{{i}}")(value)
"""

FAN = """
from memodag import DynamicOut, DynamicOutput, job, op

@op(version="1", out=DynamicOut())
def pieces():
    for i in range({n}):
        yield DynamicOutput(i, mapping_key=f"k{{i}}")

@op(version="1")
def double(x):
    return 2 * x

@op(version="1")
def total(values):
    return sum(values)

@job
def fan():
    total(pieces().map(double).collect())
"""


LIVE = """
import pathlib, time
from memodag import job, op

FLAG = pathlib.Path(__file__).with_name("go")

@op
def wait_for_flag(context):
    while not FLAG.exists():
        time.sleep(0.01)
    return 1

@op
def after(context, x):
    while FLAG.exists():  # holds the run open until the browser has seen the first step end
        time.sleep(0.01)
    return x

@job
def live():
    after(wait_for_flag())
"""


def _live_latency(page: object, url: str, home: Path, work: Path) -> float:
    """Seconds from a step's op returning (the flag it waits for appears) until the browser,
    following the run live, shows the step as finished."""
    flag = work / "go"
    flag.unlink(missing_ok=True)
    run = subprocess.Popen(
        [sys.executable, "-m", "memodag.cli.main", "job", "execute", "-f", "live.py"],
        cwd=work,
        env=_env(home),
        stdout=subprocess.DEVNULL,
    )
    try:
        started: list = []
        while not started:
            started = json.loads(urllib.request.urlopen(url + "api/runs?status=STARTED").read())[
                "runs"
            ]
            time.sleep(0.05)
        page.goto(f"{url}#/run/{started[0]['run_id']}")  # type: ignore[attr-defined]
        page.locator("g.node[data-node='after']").wait_for()  # type: ignore[attr-defined]
        flag.write_text("")
        begun = time.perf_counter()
        page.locator(  # type: ignore[attr-defined]
            "g.node[data-node='wait_for_flag'][data-status='success']"
        ).wait_for(timeout=60_000)
        return time.perf_counter() - begun
    finally:
        if not flag.exists():
            flag.write_text("")  # let the first step end
            time.sleep(0.5)
        flag.unlink(missing_ok=True)  # and the second
        run.wait(60)


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "MEMODAG_HOME": str(home)}
    env.pop("MEMODAG_INSTANCE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _memodag(*args: str, home: Path, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", *args],
        cwd=cwd,
        env=_env(home),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _add_small_runs(home: Path, count: int) -> None:
    """``count`` finished runs of a made-up job, each with a start, two steps and an end."""
    sys.path.insert(0, str(SRC))
    from memodag.storage.instance import Event, EventType, Instance, RunRecord, RunStatus

    os.environ["MEMODAG_HOME"] = str(home)
    instance = Instance.get()
    now = time.time() - count
    try:
        for i in range(count):
            run_id = str(uuid.uuid4())
            start = now + i
            instance.add_run(RunRecord(run_id, "small", RunStatus.SUCCESS, start_time=start))
            instance.store_events(
                [
                    Event(EventType.RUN_START, run_id, start),
                    Event(EventType.STEP_START, run_id, start, "a"),
                    Event(EventType.STEP_SUCCESS, run_id, start + 0.1, "a", data={"duration": 0.1}),
                    Event(EventType.STEP_MEMOIZED, run_id, start + 0.1, "b"),
                    Event(EventType.RUN_SUCCESS, run_id, start + 0.2),
                ],
                [],
            )
            instance.update_run_status(run_id, RunStatus.SUCCESS, start + 0.2)
    finally:
        instance.close()


def _start_ui(home: Path, cwd: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "memodag.cli.main", "ui", "--port", "0", *args],
        cwd=cwd,
        env=_env(home),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "memodag ui: http" in line:
            return process, line.split("memodag ui: ", 1)[1].split()[0]
    raise RuntimeError("memodag ui printed no URL")


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


def _paint(page: object, url: str, selector: str, count: int) -> float:
    """Seconds from navigation to ``count`` elements matching ``selector`` drawn."""
    page.goto("about:blank")  # type: ignore[attr-defined]
    started = time.perf_counter()
    page.goto(url)  # type: ignore[attr-defined]
    # a locator, not a JavaScript predicate: the page's CSP forbids evaluating strings
    page.locator(selector).nth(count - 1).wait_for(state="attached", timeout=120_000)  # type: ignore[attr-defined]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--pieces", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=10000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        home = work / "home"
        (work / "jobs.py").write_text(CHAIN.format(n=args.ops) + FAN.format(n=args.pieces))
        (work / "live.py").write_text(LIVE)
        setup = time.perf_counter()
        _add_small_runs(home, args.runs)
        _memodag("job", "execute", "-f", "jobs.py", "-j", "fan", home=home, cwd=work)
        _memodag("job", "execute", "-f", "jobs.py", "-j", "chain", home=home, cwd=work)
        print(f"setup: {time.perf_counter() - setup:.1f} s", file=sys.stderr)
        process, url = _start_ui(home, work, "-f", "live.py")
        try:
            runs = json.loads(urllib.request.urlopen(url + "api/runs?limit=2").read())["runs"]
            # runs of jobs the UI was not given (only live.py is): graphs come from the events
            chain_run, fan_run = runs[0]["run_id"], runs[1]["run_id"]
            samples: dict[str, list[float]] = {
                "api jobs (baseline)": [],
                f"api runs page of {args.runs + 2} runs": [],
                "paint runs page (baseline)": [],
                f"paint run page, {args.ops}-op chain": [],
                f"paint run page, {args.pieces}-piece fan-out": [],
                "live: step ended -> shown (absolute)": [],
            }
            names = list(samples)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for _ in range(args.repeat):
                    samples[names[0]].append(_get(url + "api/jobs"))
                    samples[names[1]].append(_get(url + "api/runs"))
                    samples[names[2]].append(_paint(page, url + "#/runs", "#runs tbody tr", 50))
                    samples[names[3]].append(
                        _paint(page, f"{url}#/run/{chain_run}", "g.node", args.ops)
                    )
                    samples[names[4]].append(_paint(page, f"{url}#/run/{fan_run}", "g.node", 3))
                    samples[names[5]].append(_live_latency(page, url, home, work))
                browser.close()
        finally:
            process.terminate()
            process.wait(10)
    # "first": the first sample, before the server keeps anything of the run (what a user
    # opening the page first waits for); the median is of every sample, the first included
    print(f"{'figure':<42} {'first s':>8} {'median s':>9} {'ratio':>7}")
    for name, values in samples.items():
        median = statistics.median(values)
        base = statistics.median(samples[names[0] if name.startswith("api") else names[2]])
        if name.startswith("live"):
            base = median
        print(f"{name:<42} {values[0]:>8.3f} {median:>9.3f} {median / base:>7.1f}")


if __name__ == "__main__":
    main()
