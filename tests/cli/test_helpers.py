"""Unit tests of the CLI's helpers: job loading, tag parsing, the progress listener, step summaries."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from memodag import Event, EventType
from memodag.cli.commands.runs import summarize_steps
from memodag.cli.console import format_duration
from memodag.cli.errors import CliError
from memodag.cli.lazy import LazyGroup
from memodag.cli.loading import CodeLocation, JobSpec, parse_tags
from memodag.cli.progress import RunProgress


def _event(kind: EventType, step: str | None = None, message: str = "", **data: object) -> Event:
    return Event(kind, "run-1", 0.0, step, message, data)


def test_core_imports_no_cli_and_help_imports_no_rich() -> None:
    code = textwrap.dedent(
        """
        import sys
        import memodag
        assert not any(m.startswith("memodag.cli") for m in sys.modules), "core imported the CLI"
        assert "click" not in sys.modules and "rich" not in sys.modules
        from memodag.cli.main import cli
        try:
            cli.main(["--help"], standalone_mode=False)
            cli.main(["job", "--help"], standalone_mode=False)
        except SystemExit:
            pass
        heavy = sorted(m for m in sys.modules if m.startswith(("rich", "yaml")))
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_parse_tags() -> None:
    assert parse_tags(["a=1", "b=x=y", " c =", "d=v1", "d=v2"]) == {
        "a": "1",
        "b": "x=y",
        "c": "",
        "d": "v2",
    }
    with pytest.raises(click.BadParameter, match="'novalue' is not KEY=VALUE"):
        parse_tags(["novalue"])


def test_code_location_round_trips_through_tags(tmp_path: Path) -> None:
    location = CodeLocation(module="pkg.jobs", working_dir=str(tmp_path))
    tags = location.to_tags("daily")
    assert tags["memodag/job"] == "daily"
    assert CodeLocation.from_tags({**tags, "other": "x"}) == location
    assert CodeLocation.from_tags({"team": "data"}) is None


def test_loading_a_file_picks_jobs_and_avoids_shadowing_real_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    source = """
        from memodag import op, job

        @op
        def one():
            return 1

        @job
        def first():
            one()

        @job(name="second_job")
        def second():
            one()

        alias = first
    """
    (tmp_path / "yaml.py").write_text(textwrap.dedent(source))
    spec = JobSpec(file=str(tmp_path / "yaml.py"), job_name="second_job")
    loaded = spec.load()
    assert loaded.job.name == "second_job"
    assert loaded.tags["memodag/code_file"] == str((tmp_path / "yaml.py").resolve())
    # the file is named like PyYAML but must not replace it
    import yaml

    assert hasattr(yaml, "safe_load")
    assert loaded.job.graph.nodes["one"].definition.compute_fn.__module__ != "yaml"

    with pytest.raises(CliError, match=r"defines 2 jobs: first, second_job"):
        JobSpec(file=str(tmp_path / "yaml.py")).load()
    with pytest.raises(CliError, match="no job named 'third'"):
        JobSpec(file=str(tmp_path / "yaml.py"), job_name="third").load()


def test_lazy_group_loads_on_use_and_accepts_aliases() -> None:
    group = LazyGroup(
        name="root",
        lazy_subcommands={"list-runs": "memodag.cli.commands.runs:runs"},
        aliases={"list_runs": "list-runs"},
    )
    result = CliRunner().invoke(group, ["--help"])
    assert "list-runs" in result.output and "list_runs" not in result.output
    assert "Inspect the runs" in CliRunner().invoke(group, ["list_runs", "--help"]).output


def test_progress_prints_one_plain_line_per_step_event_and_counts() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    display = RunProgress(console, "demo", ["a", "fan", "b"], live=False, steps_pending=True)
    events = [
        _event(EventType.RUN_START),
        _event(EventType.STEP_START, "a", attempt=0),
        _event(EventType.STEP_SUCCESS, "a", duration=0.123, attempt=0),
        _event(EventType.STEP_MEMOIZED, "fan", addresses={}),
        _event(EventType.STEP_SUCCESS, "fan[k1]", duration=1.5, attempt=0),  # a mapped clone
        _event(EventType.STEP_FAILURE, "b", "ValueError: bad", error={"stack": "tb"}, attempt=0),
        _event(EventType.STEP_RETRY, "b", "retry 1 of 1 in 0s", attempt=1),
        _event(EventType.STEP_FAILURE, "b", "ValueError: bad", error={"stack": "tb"}, attempt=1),
        _event(EventType.STEP_SKIPPED, "c", "upstream step 'b' failed"),
        _event(EventType.RUN_FAILURE),
    ]
    with display:
        for event in events:
            display(event)
    lines = out.getvalue().splitlines()
    assert lines == [
        "Run run-1 started: job demo (3 steps, more as fan-outs produce their pieces)",
        "✓ a 123ms",
        "○ fan memoized",
        "✓ fan[k1] 1.50s",
        "✗ b: ValueError: bad",
        "↻ b: retry 1 of 1 in 0s",
        "✗ b: ValueError: bad",
        "- c skipped: upstream step 'b' failed",
    ]
    assert display.counts() == {"executed": 2, "memoized": 1, "failed": 1, "skipped": 1}
    assert display.total == 5 and display.done == 5
    assert [k for k, _ in display.failures()] == ["b"]
    assert display.steps["b"].attempts == 2


def test_a_run_whose_steps_are_all_still_to_come_does_not_say_zero_steps() -> None:
    # a re-execution that selects clones of a fan-out knows its steps only as they expand
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    display = RunProgress(console, "demo", [], live=False, steps_pending=True)
    with display:
        display(_event(EventType.RUN_START))
    assert out.getvalue().splitlines()[0] == (
        "Run run-1 started: job demo (steps counted as fan-outs produce their pieces)"
    )


def test_a_broken_display_never_breaks_the_run() -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    display = RunProgress(console, "demo", [], live=False)
    display(_event(EventType.STEP_SUCCESS, "a", duration="not a number", attempt="x"))


def test_summarize_steps_from_events() -> None:
    address = {"uri": "file:///x/a.pkl", "mapping_key": None, "io_manager_key": "io_manager"}
    piece = {"uri": "file:///x/f.pkl", "mapping_key": "k1", "io_manager_key": "io_manager"}
    steps = summarize_steps(
        [
            _event(EventType.RUN_START),
            _event(EventType.STEP_START, "a", attempt=0),
            _event(EventType.HANDLED_OUTPUT, "a", output="result", address=address),
            _event(EventType.STEP_SUCCESS, "a", duration=0.5, attempt=0),
            _event(EventType.STEP_MEMOIZED, "f", addresses=[{**piece, "output_name": "out"}]),
            _event(EventType.STEP_START, "b", attempt=0),
            _event(EventType.STEP_FAILURE, "b", "KeyError: 'x'", error={"class": "KeyError"}),
            _event(EventType.STEP_RETRY, "b", "retry 1 of 1"),
            _event(EventType.STEP_START, "b", attempt=1),
        ]
    )
    by_key = {s["step_key"]: s for s in steps}
    assert list(by_key) == ["a", "f", "b"]
    assert by_key["a"]["status"] == "success" and by_key["a"]["duration"] == 0.5
    assert by_key["a"]["outputs"] == {"result": address}
    assert by_key["f"]["status"] == "memoized"
    assert by_key["f"]["outputs"] == {"out[k1]": {**piece, "output_name": "out"}}
    assert by_key["b"]["status"] == "running" and by_key["b"]["attempts"] == 2


def test_format_duration() -> None:
    assert [format_duration(s) for s in (None, 0.0123, 2.5, 125, 7300)] == [
        "",
        "12ms",
        "2.50s",
        "2m05s",
        "2h01m",
    ]
