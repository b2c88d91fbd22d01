"""Launching a run from the CLI: validate, run with a live display, summarize, pick the exit code.

Shared by ``job execute`` and ``job reexecute``. Config and step selection are validated here,
before the run is recorded, so those mistakes exit with 2 and leave no failed run behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memodag.cli.console import format_duration, make_console, short_id
from memodag.cli.errors import EXIT_OK, EXIT_RUN_FAILED, CliError
from memodag.cli.progress import RunProgress

if TYPE_CHECKING:
    from rich.console import Console

    from memodag.cli.loading import LoadedJob
    from memodag.storage.instance import Instance

EXIT_INTERRUPTED = 130


def launch_run(
    loaded: LoadedJob,
    instance: Instance,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    *,
    parent_run_id: str | None = None,
    step_selection: Sequence[str] | None = None,
    verbose: bool = False,
    as_json: bool = False,
) -> int:
    """Run ``loaded.job`` and print its progress and summary (or, ``as_json``, only a JSON
    summary); returns the exit code."""
    from memodag.engine.execute import execute_job
    from memodag.errors import ExecutionError
    from memodag.plan.plan import build_plan, select_steps
    from memodag.plan.run_config import resolve_run_config

    job = loaded.job
    # Validated and planned up front to size the display; the run reuses the plan.
    plan = build_plan(job, resolve_run_config(job, run_config))
    planned: set[str] = set(plan.steps)
    steps_pending = len(plan.nodes) > len(plan.steps)
    if step_selection:
        try:
            planned = select_steps(plan, step_selection)
        except ExecutionError:
            # a selection may name clones of the parent's fan-outs, which only execute_job
            # expands; it validates the selection itself, the display counts steps as they come
            planned, steps_pending = set(), True
    console = make_console()
    display = RunProgress(console, job.name, planned, steps_pending=steps_pending, silent=as_json)
    run_tags = {**loaded.tags, **tags}
    run_error: BaseException | None = None
    interrupted = False
    with display:
        try:
            execute_job(
                job,
                run_config=run_config,
                instance=instance,
                tags=run_tags,
                raise_on_error=False,
                parent_run_id=parent_run_id,
                step_selection=list(step_selection) if step_selection else None,
                listeners=[display],
                plan=plan,
            )
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:
            if display.run_id is None:
                raise  # nothing ran: a usage/config mistake, reported by the root group
            run_error = exc
    if display.run_id is None:
        if interrupted:
            raise KeyboardInterrupt
        raise CliError("the run did not start", EXIT_RUN_FAILED)
    if as_json:
        return _summarize_json(display, instance, run_error, interrupted)
    return _summarize(console, display, instance, run_error, interrupted, verbose)


def _summarize(
    console: Console,
    display: RunProgress,
    instance: Instance,
    run_error: BaseException | None,
    interrupted: bool,
    verbose: bool,
) -> int:
    from rich.text import Text

    run_id = display.run_id or ""
    record = instance.get_run(run_id)
    status = record.status.value if record else ("CANCELED" if interrupted else "FAILURE")
    duration = record.duration if record and record.duration is not None else None
    style = {"SUCCESS": "bold green", "FAILURE": "bold red"}.get(status, "bold yellow")
    header = Text()
    header.append(f"Run {run_id} ")
    header.append(status, style=style)
    header.append(f" (job {display.job_name}, {format_duration(duration) or '?'})")
    console.print(header)
    counts = display.counts()
    console.print(
        f"Steps: {counts['executed']} executed, {counts['memoized']} memoized, "
        f"{counts['failed']} failed, {counts['skipped']} skipped",
        markup=False,
    )
    failures = display.failures()
    if failures:
        console.print(Text("Failed steps:", style="bold red"))
        for key, state in failures:
            console.print(Text(f"  {key}: {state.message}"))
            stack = (state.error or {}).get("stack")
            if verbose and stack:
                console.print(Text(_indent(stack.rstrip(), "    "), style="dim"))
        if not verbose:
            console.print(Text("  (use -v/--verbose for tracebacks)", style="dim"))
        selection = " ".join(f"--steps '{k}*'" for k, _ in failures[:5])
        # a reexecution loads what the others stored in this run: right after fixing code of
        # the failed ops, wrong after fixing their input data (it would load the old data)
        console.print(
            Text(
                f"Re-run them on this run's inputs: memodag job reexecute {short_id(run_id)} "
                f"{selection}\nAfter fixing input data or config: memodag job execute again "
                "(memoized, it runs only what changed)",
                style="dim",
            )
        )
    if run_error is not None:
        console.print(Text(f"Run error: {type(run_error).__name__}: {run_error}", style="red"))
        if verbose:
            import traceback

            console.print(Text("".join(traceback.format_exception(run_error)), style="dim"))
    if interrupted:
        console.print(Text("Interrupted.", style="yellow"))
        return EXIT_INTERRUPTED
    return EXIT_OK if status == "SUCCESS" and run_error is None else EXIT_RUN_FAILED


def _summarize_json(
    display: RunProgress, instance: Instance, run_error: BaseException | None, interrupted: bool
) -> int:
    from memodag.cli.console import echo_json

    record = instance.get_run(display.run_id or "")
    status = record.status.value if record else ("CANCELED" if interrupted else "FAILURE")
    echo_json(
        {
            "run_id": display.run_id,
            "job_name": display.job_name,
            "status": status,
            "duration": record.duration if record else None,
            "parent_run_id": record.parent_run_id if record else None,
            "steps": display.counts(),
            "failures": [
                {"step_key": key, "message": state.message, "error": state.error}
                for key, state in display.failures()
            ],
            "run_error": f"{type(run_error).__name__}: {run_error}" if run_error else None,
        }
    )
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if status == "SUCCESS" and run_error is None else EXIT_RUN_FAILED


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())
