"""Run the benchmark workloads and print a comparison table.

    python benchmarks/run.py [--repeat N] [--only NAME ...] [--json out.json] [--markdown out.md]

Samples are interleaved (round 1 of every workload, then round 2, ...) so slow drift on a busy
machine spreads over all workloads instead of landing on one; ratios compare medians measured in
this invocation only. Exit code 1 if a sample failed; a missed target is reported, not an error
(figures on a shared machine are evidence, not a gate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.harness import (
    SampleError,
    Summary,
    check_baselines,
    compare,
    discover,
    fmt_target,
    load_average,
    machine_info,
    markdown_table,
    missing_requirement,
    run_in_child,
    select,
    table_rows,
    text_table,
)


def compile_bytecode() -> None:
    """Compile memodag's and the workloads' bytecode before any sample.

    An installed package has its ``.pyc`` files (pip compiles them); an editable checkout under
    ``PYTHONDONTWRITEBYTECODE=1`` would otherwise recompile every module in every fresh sample
    process and every worker process, adding ~0.1 s to each that users never pay.
    """
    import compileall

    for folder in (REPO_ROOT / "src" / "memodag", REPO_ROOT / "benchmarks"):
        compileall.compile_dir(folder, quiet=1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="samples per workload (default 5)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only workloads whose name or module matches (glob; repeatable or "
        "comma-separated); their baselines are added",
    )
    parser.add_argument("--json", type=Path, help="write every sample and summary here")
    parser.add_argument("--markdown", type=Path, help="write the table as Markdown here")
    parser.add_argument("--list", action="store_true", help="list workloads and exit")
    parser.add_argument(
        "--no-details",
        action="store_true",
        help="skip the untimed details (profiles, import times)",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="do not sync the disks between samples (by default each sample starts with the "
        "previous one's writes flushed, so they are not timed against it)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds allowed per sample (default 300)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    entries = discover()
    check_baselines(entries)
    if args.list:
        for name, entry in entries.items():
            w = entry.workload
            base = f" (baseline {w.baseline})" if w.baseline else ""
            print(f"{name:28} {entry.module}: {w.description}{base}")
        return 0
    patterns = [p for item in args.only for p in item.split(",") if p]
    try:
        names = select(entries, patterns)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    for name in list(names):
        missing = missing_requirement(entries[name].workload)
        if missing is not None:
            names.remove(name)
            how = entries[name].workload.install or missing
            print(
                f"skipped {name}: module '{missing}' is not installed (pip install {how}); "
                "workloads measured against it show no ratio"
            )
    compile_bytecode()
    machine = machine_info()
    print(
        f"{machine['date']}  Python {machine['python']}  nproc {machine['nproc']}  "
        f"memodag {machine['memodag']} ({machine['git']})  load {machine['loadavg_start']}"
    )
    print(f"{len(names)} workloads x {args.repeat} samples, each in a fresh process\n")

    summaries = {n: Summary(n, entries[n].module, entries[n].workload) for n in names}
    started = time.perf_counter()
    for round_index in range(args.repeat):
        for name in names:
            summary = summaries[name]
            if summary.errors:  # a failing workload fails every round; do not wait for it again
                continue
            cap = summary.workload.repeat
            if cap is not None and round_index >= cap:
                continue
            if not args.no_sync:
                # write back the previous sample's files now, not during this sample's timing
                os.sync()
            try:
                result = run_in_child(entries[name], "run", args.timeout)
            except SampleError as exc:
                summary.errors.append(str(exc))
                print(f"  {name}: sample {round_index + 1} FAILED: {exc}", file=sys.stderr)
                continue
            summary.add(result["metrics"])
        print(
            f"  round {round_index + 1}/{args.repeat} done ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    if not args.no_details:
        for name in names:
            summary = summaries[name]
            if summary.workload.details is None or summary.errors:
                continue
            try:
                summary.details = run_in_child(entries[name], "details", args.timeout)["details"]
            except SampleError as exc:
                summary.details = f"details failed: {exc}"
    compare(summaries)
    machine["loadavg_end"] = load_average()
    machine["wall_s"] = round(time.perf_counter() - started, 1)

    rows = table_rows(summaries.values())
    print()
    print(text_table(rows))
    targets = [(s.name, t) for s in summaries.values() for t in s.targets]
    if targets:
        print("\nTargets (on medians):")
        for name, target in targets:
            print(f"  {name:24} {fmt_target(target)}")
    for summary in summaries.values():
        if summary.details:
            print(f"\n{summary.name} details:\n{summary.details.rstrip()}")
    print(
        f"\ntotal {machine['wall_s']} s; load average {machine['loadavg_start']} -> {machine['loadavg_end']}"
    )

    if args.json:
        report = {
            "machine": machine,
            "repeat": args.repeat,
            "argv": argv,
            "workloads": [s.to_dict() for s in summaries.values()],
        }
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        lines = [
            f"Measured {machine['date']} on {machine['nproc']} CPUs ({machine['cpu']}), "
            f"Python {machine['python']}, memodag {machine['memodag']} ({machine['git']}); "
            f"{args.repeat} samples per workload, each in a fresh process; load average "
            f"{machine['loadavg_start']} -> {machine['loadavg_end']}.",
            "",
            markdown_table(rows),
        ]
        if targets:
            lines += ["", "| workload | target |", "|---|---|"]
            lines += [f"| {name} | {fmt_target(t)} |" for name, t in targets]
        args.markdown.write_text("\n".join(lines) + "\n")

    return 1 if any(s.errors for s in summaries.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
