"""The benchmark interface (``Workload``, ``Target``) and the machinery behind ``run.py``.

A workload module defines ``WORKLOADS = [Workload(...), ...]``. Every sample runs in a fresh
Python subprocess (``_child.py``) whose working directory and ``MEMODAG_HOME`` are a fresh scratch
directory, so import costs, caches and stored files never leak from one sample to the next. The
workload's ``run`` function times only what it means to measure and returns named durations in
seconds; this module aggregates them (median, min, max), divides by the step count, and compares
each workload with its baseline measured in the same invocation. It never compares with figures
from another invocation: the machines here are noisy.
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CHILD = BENCH_DIR / "_child.py"
NOT_WORKLOAD_MODULES = {"run", "harness"}

Metrics = Mapping[str, float]


@dataclass(frozen=True)
class Target:
    """A figure to reach, checked on medians.

    ``max_value``: the workload's median ``metric`` must be below it (seconds).
    ``max_ratio``: the median ``metric`` divided by the baseline's median ``metric`` must be at
    most this.
    """

    label: str
    metric: str
    max_value: float | None = None
    max_ratio: float | None = None


@dataclass(frozen=True)
class Workload:
    """One thing to measure.

    Attributes:
        name: unique across all modules; what ``--only`` matches.
        run: ``run(scratch_dir) -> {metric: seconds}``, called once per sample in a fresh
            subprocess with a fresh, empty ``scratch_dir``. It must time only what it measures
            (use ``timed``) and must be reachable again by importing its module, so define it at
            module level (a ``functools.partial`` of a module-level function is fine).
        description: one line for the table and BENCHMARKS.md.
        baseline: name of the workload to compare with (measured in the same invocation).
        primary: the metric the table leads with, divided by ``steps`` for ``per_step_s``.
        steps: how many steps one sample runs (enables per-step figures).
        targets: figures to reach (checked on medians).
        details: optional ``details() -> str``, run once in a fresh subprocess after the timed
            samples; its text is printed under the table and stored in the JSON (e.g. profiles).
        repeat: at most this many samples, whatever ``--repeat`` says (for workloads that take
            tens of seconds, so the full set stays within a few minutes).
        requires: a module the workload needs that memodag does not install (a peer tool);
            when it cannot be imported the runner skips the workload and says so, with
            ``install`` (what to install to get it) in its message.

    Metric names say their unit: ``*_s`` are seconds, ``*_mb`` megabytes; anything else is
    shown as a plain number (counts, shares).
    """

    name: str
    run: Callable[[Path], Metrics]
    description: str = ""
    baseline: str | None = None
    primary: str = "run_s"
    steps: int | None = None
    targets: tuple[Target, ...] = ()
    details: Callable[[], str] | None = None
    repeat: int | None = None
    requires: str | None = None
    install: str | None = None


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return its result and its wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def timed_cpu(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Call ``fn``; return its result, its wall time and this process's CPU time (user +
    system, all threads) in seconds. CPU time barely moves when other processes compete for
    the cores, so it shows the work done when the wall time mostly shows the machine's load."""
    cpu = time.process_time()
    result, wall = timed(fn)
    return result, wall, time.process_time() - cpu


# -- discovery ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    module: str
    workload: Workload


def discover(root: Path = BENCH_DIR) -> dict[str, Entry]:
    """Every workload in ``root`` and its subfolders, by name, in file order."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    found: dict[str, Entry] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(REPO_ROOT).with_suffix("")
        if any(part.startswith(("_", ".")) for part in relative.parts[1:]):
            continue
        if path.parent == root and path.stem in NOT_WORKLOAD_MODULES:
            continue
        module_name = ".".join(relative.parts)
        module = importlib.import_module(module_name)
        for workload in getattr(module, "WORKLOADS", ()):
            if workload.name in found:
                other = found[workload.name].module
                raise ValueError(
                    f"workload name '{workload.name}' is defined in both {other} and {module_name}; names must be unique"
                )
            found[workload.name] = Entry(module_name, workload)
    return found


def select(entries: Mapping[str, Entry], patterns: Sequence[str]) -> list[str]:
    """Names matching any pattern (exact or glob), plus the baselines they need, in file order."""
    if not patterns:
        return list(entries)
    wanted: set[str] = set()
    for pattern in patterns:
        matches = [n for n in entries if _matches(n, entries[n].module, pattern)]
        if not matches:
            raise ValueError(f"--only {pattern!r} matches no workload; known: {', '.join(entries)}")
        wanted.update(matches)
    pending = list(wanted)
    while pending:
        baseline = entries[pending.pop()].workload.baseline
        if baseline and baseline not in wanted:
            wanted.add(baseline)
            pending.append(baseline)
    return [n for n in entries if n in wanted]


def _matches(name: str, module: str, pattern: str) -> bool:
    """A workload matches its name or its module (``w2_chain``, ``executors.w1_parallel``)."""
    short = module.removeprefix("benchmarks.")
    return any(fnmatch.fnmatchcase(candidate, pattern) for candidate in (name, short, module))


def missing_requirement(workload: Workload) -> str | None:
    """The module a workload requires that is not installed, or None."""
    import importlib.util

    if workload.requires is None or importlib.util.find_spec(workload.requires) is not None:
        return None
    return workload.requires


def check_baselines(entries: Mapping[str, Entry]) -> None:
    for name, entry in entries.items():
        baseline = entry.workload.baseline
        if baseline is not None and baseline not in entries:
            raise ValueError(f"workload '{name}' names baseline '{baseline}', which is not defined")


# -- running samples in fresh processes ---------------------------------------------------------


class SampleError(RuntimeError):
    """A sample's subprocess failed; the message carries the end of its stderr."""


def run_in_child(entry: Entry, mode: str, timeout: float) -> dict[str, Any]:
    """Run one sample (``mode="run"``) or the details (``mode="details"``) in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="memodag-bench-") as scratch:
        result_file = Path(scratch) / "result.json"
        work = Path(scratch) / "work"
        work.mkdir()
        env = {
            **os.environ,
            "MEMODAG_HOME": str(work / ".memodag"),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        env.pop("MEMODAG_INSTANCE_URL", None)
        command = [
            sys.executable,
            str(CHILD),
            entry.module,
            entry.workload.name,
            mode,
            str(result_file),
        ]
        stolen_before = stolen_cpu_seconds()
        try:
            proc = subprocess.run(
                command,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SampleError(f"timed out after {timeout:g}s") from exc
        if proc.returncode != 0 or not result_file.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise SampleError(f"exit code {proc.returncode}:\n{tail}")
        result: dict[str, Any] = json.loads(result_file.read_text())
        stolen_after = stolen_cpu_seconds()
        if mode == "run" and stolen_before is not None and stolen_after is not None:
            result["metrics"]["steal_s"] = stolen_after - stolen_before
        return result


def stolen_cpu_seconds() -> float | None:
    """CPU seconds the hypervisor has given to other guests instead of this machine (all CPUs,
    since boot): a sample with much steal ran on a machine slower than it looked."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


# -- statistics ------------------------------------------------------------------------------------


@dataclass
class TargetResult:
    label: str
    metric: str
    met: bool | None  # None: could not be checked (no baseline, metric missing)
    value: float | None
    limit: float
    kind: str  # "value" or "ratio"


@dataclass
class Summary:
    """Everything measured for one workload in one invocation."""

    name: str
    module: str
    workload: Workload
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ratio: float | None = None
    ratio_metric: str | None = None
    #: median of the per-round ratios (sample i over the baseline's sample i, run in the same
    #: round, seconds apart): steadier than the ratio of medians when the machine's speed drifts
    paired_ratio: float | None = None
    excess_per_step_s: float | None = None
    targets: list[TargetResult] = field(default_factory=list)
    details: str | None = None

    def add(self, metrics: Mapping[str, float]) -> None:
        steps = self.workload.steps
        values = dict(metrics)
        if steps and self.workload.primary in values:
            values["per_step_s"] = values[self.workload.primary] / steps
        for metric, value in values.items():
            self.samples.setdefault(metric, []).append(float(value))

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None

    def metric_names(self) -> list[str]:
        """The primary metric, per-step, then the others in the order the workload reported."""
        first = [m for m in (self.workload.primary, "per_step_s") if m in self.samples]
        return first + [m for m in self.samples if m not in first]

    def to_dict(self) -> dict[str, Any]:
        w = self.workload
        return {
            "name": self.name,
            "module": self.module,
            "description": w.description,
            "baseline": w.baseline,
            "primary": w.primary,
            "steps": w.steps,
            "samples": self.samples,
            "median": {m: statistics.median(v) for m, v in self.samples.items()},
            "min": {m: min(v) for m, v in self.samples.items()},
            "max": {m: max(v) for m, v in self.samples.items()},
            "ratio": self.ratio,
            "ratio_metric": self.ratio_metric,
            "paired_ratio": self.paired_ratio,
            "excess_per_step_s": self.excess_per_step_s,
            "targets": [t.__dict__ for t in self.targets],
            "errors": self.errors,
            "details": self.details,
        }


def compare(summaries: Mapping[str, Summary]) -> None:
    """Fill in ratios to baselines and target checks (on medians)."""
    for summary in summaries.values():
        w = summary.workload
        base = summaries.get(w.baseline) if w.baseline else None
        if base is not None:
            metric = (
                "per_step_s"
                if "per_step_s" in summary.samples and "per_step_s" in base.samples
                else w.primary
            )
            mine, theirs = summary.median(metric), base.median(metric)
            if mine is not None and theirs:
                summary.ratio, summary.ratio_metric = mine / theirs, metric
            summary.paired_ratio = _paired_ratio(summary, base, metric)
            mine_step, base_step = summary.median("per_step_s"), base.median("per_step_s")
            if mine_step is not None and base_step is not None:
                summary.excess_per_step_s = mine_step - base_step
        summary.targets = [_check(t, summary, base) for t in w.targets]


def _paired_ratio(summary: Summary, base: Summary, metric: str) -> float | None:
    """Median of sample i / baseline sample i, when both ran every round (rounds align)."""
    mine, theirs = summary.samples.get(metric), base.samples.get(metric)
    if not mine or not theirs or len(mine) != len(theirs) or summary.errors or base.errors:
        return None
    if any(t == 0 for t in theirs):
        return None
    return statistics.median(m / t for m, t in zip(mine, theirs, strict=True))


def _check(target: Target, summary: Summary, base: Summary | None) -> TargetResult:
    value = summary.median(target.metric)
    if target.max_ratio is not None:
        theirs = base.median(target.metric) if base is not None else None
        ratio = value / theirs if value is not None and theirs else None
        met = None if ratio is None else ratio <= target.max_ratio
        return TargetResult(target.label, target.metric, met, ratio, target.max_ratio, "ratio")
    assert target.max_value is not None, f"target '{target.label}' sets no limit"
    met = None if value is None else value < target.max_value
    return TargetResult(target.label, target.metric, met, value, target.max_value, "value")


# -- the machine -----------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures were measured on (and how busy it was)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "loadavg_start": load_average(),
    }
    info.update(_code_version())
    return info


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was (noise indicator)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _code_version() -> dict[str, Any]:
    try:
        import memodag

        version = memodag.__version__
    except Exception:  # the table should still print if the package is broken
        version = None
    result: dict[str, Any] = {"memodag": version}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        result["git"] = head + ("+local changes in src" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        result["git"] = None
    return result


# -- formatting ------------------------------------------------------------------------------------


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1:
        return f"{value:.2f} s"
    if magnitude >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def fmt_metric(metric: str, value: float | None) -> str:
    """A value in the unit its metric name says (``*_s`` seconds, ``*_mb`` MB, else a number)."""
    if value is None:
        return "-"
    if metric.endswith("_s"):
        return fmt_seconds(value)
    if metric.endswith("_mb"):
        return f"{value:.0f} MB"
    return f"{value:.3g}"


def fmt_target(result: TargetResult) -> str:
    if result.kind == "ratio":
        value = "-" if result.value is None else f"{result.value:.2f}x"
        limit = f"<= {result.limit:.3g}x"
    else:
        value = fmt_metric(result.metric, result.value)
        limit = f"< {fmt_metric(result.metric, result.limit)}"
    verdict = {True: "met", False: "NOT MET", None: "unchecked"}[result.met]
    return f"{result.label}: {value} ({limit}) {verdict}"


def table_rows(summaries: Iterable[Summary]) -> list[list[str]]:
    """Header plus one row per workload: the primary metric's median/min/max, per step, ratio."""
    rows = [
        [
            "workload",
            "metric",
            "median",
            "min",
            "max",
            "per step",
            "baseline",
            "ratio",
            "paired",
            "+/step",
            "other medians",
        ]
    ]
    for s in summaries:
        w = s.workload
        if not s.samples:
            rows.append(
                [
                    s.name,
                    w.primary.removesuffix("_s"),
                    "FAILED",
                    "",
                    "",
                    "",
                    w.baseline or "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        values = s.samples.get(w.primary, [])
        others = ", ".join(
            f"{m.removesuffix('_s')} {fmt_metric(m, s.median(m))}"
            for m in s.metric_names()
            if m not in (w.primary, "per_step_s")
        )
        rows.append(
            [
                s.name,
                w.primary.removesuffix("_s"),
                fmt_metric(w.primary, s.median(w.primary)),
                fmt_metric(w.primary, min(values)) if values else "-",
                fmt_metric(w.primary, max(values)) if values else "-",
                fmt_seconds(s.median("per_step_s")),
                w.baseline or "",
                f"{s.ratio:.2f}x" if s.ratio is not None else "",
                f"{s.paired_ratio:.2f}x" if s.paired_ratio is not None else "",
                fmt_seconds(s.excess_per_step_s) if s.excess_per_step_s is not None else "",
                others,
            ]
        )
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]
    ]
    return "\n".join(lines)
