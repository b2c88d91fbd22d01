"""End-to-end tests of the ``memodag`` CLI: each drives the real command in a subprocess, with
MEMODAG_HOME in a tmp dir, and checks exit codes, output and what the instance recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli_process import run_memodag
from memodag import EventType, Instance, RunStatus

# Ops write what they saw to a side-effect file, so tests can tell which steps ran and with what.
CHAIN_JOB = """
import os
from memodag import op, job

def _note(text):
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(text + "\\n")

@op
def extract():
    _note("extract")
    return os.environ.get("EXTRACT_VALUE", "v1")

@op(config_schema={"factor": int, "label": str})
def transform(context, raw):
    cfg = context.op_config
    _note(f"transform got {raw} factor={cfg['factor']} label={cfg['label']}")
    return raw * cfg["factor"]

@op
def load(data):
    _note(f"load got {data}")
    return len(data)

@job
def chain():
    load(transform(extract()))
"""

TWO_JOBS = """
from memodag import op, job, RetryPolicy

@op
def one():
    return 1

@op(retry_policy=RetryPolicy(max_retries=1))
def explode(x):
    raise ValueError(f"kaboom on {x}")

@op
def never(y):
    return y

@job(description="Fails in the middle.\\nSecond line.")
def failing():
    never(explode(one()))

@job
def tiny():
    one()
"""


@dataclass
class Cli:
    """Runs ``memodag`` in a subprocess against one MEMODAG_HOME."""

    home: Path
    workdir: Path
    side_effects: Path

    def __call__(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "MEMODAG_HOME": str(self.home),
            "SIDE_EFFECTS": str(self.side_effects),
            "PYTHONIOENCODING": "utf-8",
            "COLUMNS": "250",
            **(env or {}),
        }
        full_env.pop("MEMODAG_INSTANCE_URL", None)
        full_env.pop("MEMODAG_DEBUG", None)
        return subprocess.run(
            [sys.executable, "-m", "memodag.cli.main", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or self.workdir,
            timeout=120,
        )

    def instance(self) -> Instance:
        return Instance.from_url(f"sqlite:///{self.home / 'instance.db'}")

    def notes(self) -> list[str]:
        if not self.side_effects.exists():
            return []
        return self.side_effects.read_text().splitlines()

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    work = tmp_path / "work"
    work.mkdir()
    yield Cli(tmp_path / "home", work, tmp_path / "side_effects.txt")


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_help_version_and_usage_errors(cli: Cli) -> None:
    root = _ok(cli("--help"))
    assert "job" in root.stdout and "runs" in root.stdout
    assert "0.1.0" in _ok(cli("--version")).stdout
    execute_help = _ok(cli("job", "execute", "-h")).stdout
    for flag in ("--file", "--module", "--job", "--config", "--tag"):
        assert flag in execute_help
    # neither -f nor -m: a usage error, exit 2, no traceback
    missing = cli("job", "execute")
    assert missing.returncode == 2
    assert "-f FILE.py or -m MODULE" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_execute_with_two_merged_config_files(cli: Cli) -> None:
    job_file = cli.write("pipeline.py", CHAIN_JOB)
    cli.write("base.yaml", "ops:\n  transform:\n    config:\n      factor: 2\n      label: base\n")
    cli.write("prod.yaml", "ops:\n  transform:\n    config:\n      label: prod\n")

    result = _ok(
        cli("job", "execute", "-f", str(job_file), "-c", "base.yaml", "-c", "prod.yaml",
            "--tag", "team=data", "--tag", "note=a=b")
    )  # fmt: skip

    # plain progress lines (stdout is a pipe), then the summary
    for step in ("extract", "transform", "load"):
        assert f"✓ {step} " in result.stdout
    assert "SUCCESS" in result.stdout
    assert "3 executed, 0 memoized, 0 failed, 0 skipped" in result.stdout
    # the later file overrides 'label', the earlier one still provides 'factor'
    assert cli.notes() == ["extract", "transform got v1 factor=2 label=prod", "load got v1v1"]

    instance = cli.instance()
    (run,) = instance.get_runs()
    assert run.run_id in result.stdout
    assert run.status == RunStatus.SUCCESS
    assert run.run_config["ops"]["transform"]["config"] == {"factor": 2, "label": "prod"}
    assert run.tags["team"] == "data" and run.tags["note"] == "a=b"
    assert run.tags["memodag/code_file"] == str(job_file.resolve())
    assert run.tags["memodag/job"] == "chain"
    succeeded = instance.get_events(run.run_id, [EventType.STEP_SUCCESS])
    assert sorted(e.step_key for e in succeeded) == ["extract", "load", "transform"]


def test_bad_config_exits_2_listing_every_problem(cli: Cli) -> None:
    job_file = cli.write("pipeline.py", CHAIN_JOB)
    cli.write(
        "bad.yaml",
        """
        ops:
          transform:
            config:
              factor: "two"
          trasnform: {}
        resources:
          nope: {}
        """,
    )
    result = cli("job", "execute", "-f", str(job_file), "-c", "bad.yaml")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "3 problem(s)" in result.stderr or "4 problem(s)" in result.stderr
    for fragment in ("ops.transform.config.factor", "ops.trasnform", "resources.nope", "label"):
        assert fragment in result.stderr
    assert cli.notes() == []  # nothing ran
    assert cli.instance().get_runs() == []  # and no run was recorded

    missing_file = cli("job", "execute", "-f", str(job_file), "-c", "absent.yaml")
    assert missing_file.returncode == 2
    assert "absent.yaml: config file not found" in missing_file.stderr


def test_a_malformed_dask_address_exits_2_at_once(cli: Cli) -> None:
    # Dask's Client, given "localhost" (no port), used to raise a bare ValueError and then hold
    # the interpreter 60 s at exit closing itself: the address is now checked with the config
    job_file = cli.write("jobs.py", TWO_JOBS)
    cli.write("dask.yaml", "execution:\n  dask:\n    config:\n      address: localhost\n")
    started = time.monotonic()
    result = cli("job", "execute", "-f", str(job_file), "-j", "tiny", "-c", "dask.yaml")

    assert result.returncode == 2, result.stderr
    assert "execution.dask.config.address: got 'localhost'" in result.stderr
    assert "tcp://host:8786" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # no minute-long hang on the way out
    assert cli.notes() == []
    assert cli.instance().get_runs() == []


def test_failing_op_exits_1_with_its_error(cli: Cli) -> None:
    job_file = cli.write("jobs.py", TWO_JOBS)

    result = cli("job", "execute", "-f", str(job_file), "-j", "failing")

    assert result.returncode == 1
    assert "✓ one" in result.stdout
    assert "✗ explode: ValueError: kaboom on 1" in result.stdout
    assert "↻ explode" in result.stdout  # the retry policy's second attempt
    assert "- never skipped" in result.stdout
    assert "FAILURE" in result.stdout
    assert "1 executed, 0 memoized, 1 failed, 1 skipped" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (run,) = cli.instance().get_runs()
    assert run.status == RunStatus.FAILURE
    assert f"memodag job reexecute {run.run_id[:8]}" in result.stdout

    verbose = cli("job", "execute", "-f", str(job_file), "-j", "failing", "--verbose")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stdout and "jobs.py" in verbose.stdout


def test_choosing_among_jobs_and_listing_them(cli: Cli) -> None:
    job_file = cli.write("jobs.py", TWO_JOBS)

    ambiguous = cli("job", "execute", "-f", str(job_file))
    assert ambiguous.returncode == 2
    assert "defines 2 jobs: failing, tiny" in ambiguous.stderr
    assert "-j JOB" in ambiguous.stderr

    unknown = cli("job", "execute", "-f", str(job_file), "-j", "nope")
    assert unknown.returncode == 2
    assert "no job named 'nope'" in unknown.stderr and "failing, tiny" in unknown.stderr

    table = _ok(cli("job", "list", "-f", str(job_file))).stdout
    assert "failing" in table and "tiny" in table and "Fails in the middle." in table
    listed = json.loads(_ok(cli("job", "list", "-f", str(job_file), "--json")).stdout)
    assert [(j["name"], j["ops"]) for j in listed] == [("failing", 3), ("tiny", 1)]
    assert listed[0]["description"] == "Fails in the middle."


def test_code_that_fails_to_import_is_reported_with_its_location(cli: Cli) -> None:
    broken = cli.write(
        "broken.py", "from memodag import job\n\nx = 1\nraise RuntimeError('no db')\n"
    )

    result = cli("job", "execute", "-f", str(broken))
    assert result.returncode == 2
    assert "RuntimeError: no db" in result.stderr
    assert f"{broken}:4" in result.stderr
    assert "Traceback" not in result.stderr

    debug = cli("--debug", "job", "execute", "-f", str(broken))
    assert debug.returncode == 2 and "Traceback" in debug.stderr

    absent = cli("job", "execute", "-f", "nowhere.py")
    assert absent.returncode == 2 and "not found" in absent.stderr


def test_module_loading_and_reexecute_from_recorded_location(cli: Cli, tmp_path: Path) -> None:
    package = tmp_path / "code"
    (package / "mypipes").mkdir(parents=True)
    (package / "mypipes" / "__init__.py").write_text("")
    # the job's own default config, so no -c is needed
    defaults = "@job(config={'ops': {'transform': {'config': {'factor': 3, 'label': 'mod'}}}})\n"
    (package / "mypipes" / "jobs.py").write_text(CHAIN_JOB.replace("@job\n", defaults))
    # the caller's PYTHONPATH kept after it: a checkout's memodag, not an installed one
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")]))
    }

    first = _ok(cli("job", "execute", "-m", "mypipes.jobs", env=env))
    assert "3 executed" in first.stdout
    (run,) = cli.instance().get_runs()
    assert run.tags["memodag/code_module"] == "mypipes.jobs"
    assert "memodag/code_file" not in run.tags

    # re-executed from another directory with only the run id: the module comes from the tags
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = _ok(cli("job", "reexecute", run.run_id[:6], "--steps", "load", cwd=elsewhere, env=env))
    assert "1 executed" in again.stdout
    assert cli.notes()[-1] == "load got v1v1v1"

    missing = cli("job", "execute", "-m", "no_such_module_here", env=env)
    assert missing.returncode == 2 and "no module named 'no_such_module_here'" in missing.stderr


def test_reexecute_selected_step_loads_the_rest_from_the_parent(cli: Cli) -> None:
    job_file = cli.write("pipeline.py", CHAIN_JOB)
    cli.write(
        "config.yaml", "ops:\n  transform:\n    config:\n      factor: 2\n      label: first\n"
    )
    parent = _ok(
        cli("job", "execute", "-f", str(job_file), "-c", "config.yaml", "--tag", "k=v", "--json")
    )
    summary = json.loads(parent.stdout)  # only JSON on stdout: no progress lines
    instance = cli.instance()
    (parent_run,) = instance.get_runs()
    assert summary["run_id"] == parent_run.run_id and summary["status"] == "SUCCESS"
    assert summary["steps"] == {"executed": 3, "memoized": 0, "failed": 0, "skipped": 0}
    cli.side_effects.unlink()

    # extract would now produce "v2" if it ran; the re-execution must use the parent's "v1"
    prefix = parent_run.run_id[:8]
    result = _ok(
        cli("job", "reexecute", prefix, "--steps", "transform", env={"EXTRACT_VALUE": "v2"})
    )

    assert cli.notes() == ["transform got v1 factor=2 label=first"]  # parent's input and config
    assert "✓ transform" in result.stdout and "extract" not in result.stdout
    assert "1 executed, 0 memoized, 0 failed, 0 skipped" in result.stdout
    child = instance.get_runs(limit=1)[0]
    assert child.parent_run_id == parent_run.run_id
    assert child.step_selection == ["transform"]
    assert child.run_config == parent_run.run_config
    assert child.tags["k"] == "v" and child.tags["memodag/job"] == "chain"
    started = instance.get_events(child.run_id, [EventType.STEP_START])
    assert [e.step_key for e in started] == ["transform"]
    (loaded,) = instance.get_events(child.run_id, [EventType.LOADED_INPUT])
    assert loaded.data["address"]["run_id"] == parent_run.run_id

    # -c replaces the parent's config; a selection naming no step is a usage error
    cli.write(
        "other.yaml", "ops:\n  transform:\n    config:\n      factor: 1\n      label: other\n"
    )
    _ok(cli("job", "reexecute", child.run_id, "-s", "transform*", "-c", "other.yaml"))
    assert cli.notes()[-2:] == ["transform got v1 factor=1 label=other", "load got v1"]
    bad = cli("job", "reexecute", parent_run.run_id, "--steps", "nope")
    assert bad.returncode == 2 and "matches no step" in bad.stderr
    unknown = cli("job", "reexecute", "ffffffff")
    assert unknown.returncode == 2 and "no run with id" in unknown.stderr


def test_runs_list_and_show(cli: Cli) -> None:
    jobs = cli.write("jobs.py", TWO_JOBS)
    _ok(cli("job", "execute", "-f", str(jobs), "-j", "tiny"))
    failing = cli("job", "execute", "-f", str(jobs), "-j", "failing")
    assert failing.returncode == 1
    instance = cli.instance()
    failed, tiny = instance.get_runs()
    # both ways on: the same inputs again, or a memoized run after fixing the data
    assert f"memodag job reexecute {failed.run_id[:8]} --steps 'explode*'" in failing.stdout
    assert "After fixing input data or config: memodag job execute again" in failing.stdout

    table = _ok(cli("runs", "list")).stdout
    assert failed.run_id[:8] in table and tiny.run_id[:8] in table
    assert "FAILURE" in table and "SUCCESS" in table

    listed = json.loads(_ok(cli("runs", "list", "--json", "--status", "failure")).stdout)
    assert [r["run_id"] for r in listed] == [failed.run_id]
    assert listed[0]["job_name"] == "failing" and listed[0]["status"] == "FAILURE"
    by_job = json.loads(_ok(cli("runs", "list", "--json", "--job", "tiny", "-n", "5")).stdout)
    assert [r["run_id"] for r in by_job] == [tiny.run_id]

    shown = _ok(cli("runs", "show", failed.run_id[:7])).stdout
    assert failed.run_id in shown
    assert "ValueError: kaboom on 1" in shown
    assert "skipped" in shown
    assert "Reason: steps failed: ['explode']" in shown  # the run's own failure, not only steps'

    detail = json.loads(_ok(cli("runs", "show", failed.run_id, "--json")).stdout)
    assert detail["run"]["run_id"] == failed.run_id
    assert detail["run"]["reason"] == "steps failed: ['explode']"
    steps = {s["step_key"]: s for s in detail["steps"]}
    assert steps["one"]["status"] == "success" and steps["one"]["attempts"] == 1
    assert steps["one"]["outputs"]["result"]["uri"].endswith("result.pkl")
    assert steps["explode"]["status"] == "failed" and steps["explode"]["attempts"] == 2
    assert steps["explode"]["error"]["class"] == "ValueError"
    assert steps["never"]["status"] == "skipped"

    missing = cli("runs", "show", "0000")
    assert missing.returncode == 2 and "no run with id" in missing.stderr


def test_memoize_flag_skips_steps_stored_at_their_version(cli: Cli) -> None:
    job_file = cli.write(
        "versioned.py",
        """
        import os
        from memodag import op, job

        @op(version="1")
        def source():
            with open(os.environ["SIDE_EFFECTS"], "a") as f:
                f.write("source ran\\n")
            return 21

        @op(version="1")
        def double(x):
            return x * 2

        @job
        def versioned():
            double(source())
        """,
    )
    first = _ok(cli("job", "execute", "-f", str(job_file), "--memoize", "--json"))
    second = _ok(cli("job", "execute", "-f", str(job_file), "--memoize"))

    assert json.loads(first.stdout)["steps"]["executed"] == 2
    assert "○ source memoized" in second.stdout and "○ double memoized" in second.stdout
    assert "0 executed, 2 memoized" in second.stdout
    assert cli.notes() == ["source ran"]
    latest = cli.instance().get_runs(limit=1)[0]
    assert latest.tags["memodag/is_memoized_run"] == "true"
    shown = json.loads(_ok(cli("runs", "show", latest.run_id, "--json")).stdout)
    first_id = json.loads(first.stdout)["run_id"]
    for step in shown["steps"]:
        assert step["status"] == "memoized"
        assert step["outputs"]["result"]["run_id"] == first_id  # stored by the first run

    # memoization needs versions: asking for it on unversioned ops is a usage error
    unversioned = cli.write("plain.py", TWO_JOBS)
    refused = cli("job", "execute", "-f", str(unversioned), "-j", "tiny", "--memoize")
    assert refused.returncode == 2 and "without a version" in refused.stderr


def test_a_job_file_that_runs_its_job_when_imported_is_refused_before_any_run(tmp_path):
    (tmp_path / "slow.py").write_text(
        "from memodag import job, op\n\n"
        "@op\ndef hello():\n    print('HELLO RAN')\n    return 1\n\n"
        "@job\ndef slow():\n    hello()\n\n"
        "slow.execute_in_process()\n"
    )
    home = tmp_path / ".memodag"
    out = run_memodag("job", "execute", "-f", "slow.py", cwd=tmp_path, home=home, check=False)
    assert out.returncode != 0
    assert "starts a run when it is imported (line 12 of" in out.stderr, out.stderr
    assert 'if __name__ == "__main__":' in out.stderr
    assert "HELLO RAN" not in out.stdout
    listed = run_memodag("runs", "list", "--json", cwd=tmp_path, home=home)
    assert json.loads(listed.stdout) == []


def test_an_unexpected_error_says_how_to_see_its_traceback(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    out = run_memodag("job", "execute", "-f", "broken.py", cwd=tmp_path, check=False)
    assert out.returncode != 0
    assert "RuntimeError: boom" in out.stderr
    hint = next(line for line in out.stderr.splitlines() if "traceback" in line)
    assert "memodag --debug" in hint, out.stderr
    debug = run_memodag("--debug", "job", "execute", "-f", "broken.py", cwd=tmp_path, check=False)
    assert "Traceback (most recent call last)" in debug.stderr


def test_a_burst_of_memoized_steps_prints_one_line_and_executed_steps_still_print_theirs(
    cli: Cli,
) -> None:
    job_file = cli.write(
        "burst.py",
        """
        import os
        from memodag import op, job

        @op(version=os.environ.get("TAIL_VERSION", "1"))
        def tail(x):
            return x + 1

        @op(version="1")
        def inc(x):
            return x + 1

        @op(version="1")
        def source():
            return 0

        @job
        def burst():
            value = source()
            for i in range(30):
                value = inc.alias(f"inc{i}")(value)
            tail(value)
        """,
    )
    _ok(cli("job", "execute", "-f", str(job_file), "--memoize"))
    rerun = _ok(cli("job", "execute", "-f", str(job_file), "--memoize"))
    lines = rerun.stdout.splitlines()
    assert [line for line in lines if line.startswith("○")] == [
        "○ 32 steps memoized (source … tail)"
    ], rerun.stdout
    assert "0 executed, 32 memoized" in rerun.stdout

    changed = _ok(
        cli("job", "execute", "-f", str(job_file), "--memoize", env={"TAIL_VERSION": "2"})
    )
    lines = changed.stdout.splitlines()
    burst = lines.index("○ 31 steps memoized (source … inc29)")
    assert lines[burst + 1].startswith("✓ tail "), changed.stdout
    assert "1 executed, 31 memoized" in changed.stdout


FAILING_FAN_OUT = """
from memodag import DynamicOut, DynamicOutput, job, op

@op(out=DynamicOut())
def regions():
    yield DynamicOutput("north", mapping_key="north")
    raise ValueError("region 'N/A' is not a name")

@op
def shout(name):
    return name.upper()

@job
def fan():
    regions().map(shout)
"""


def test_runs_show_names_the_error_of_a_step_that_stored_some_outputs(cli: Cli) -> None:
    jobs = cli.write("fan.py", FAILING_FAN_OUT)
    assert cli("job", "execute", "-f", str(jobs)).returncode == 1
    (failed,) = cli.instance().get_runs()
    shown = _ok(cli("runs", "show", failed.run_id)).stdout
    assert "ValueError: region 'N/A' is not a name" in shown
    assert "result[north]" in shown  # the piece it stored before failing is still shown
