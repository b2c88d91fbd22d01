"""``memodag job reexecute`` on fan-outs, end to end: a nested clone by its key, and a fan-out
re-run with everything after it (docs/dynamic.md, "Re-execution")."""

from __future__ import annotations

import json
from pathlib import Path

from cli_process import run_memodag

NESTED = """
from memodag import DynamicOut, DynamicOutput, job, op

@op(out=DynamicOut(), config_schema={"n": int})
def emit(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")

@op(out=DynamicOut())
def inner(x):
    for j in range(2):
        yield DynamicOutput(x * 10 + j, mapping_key=f"j{j}")

@op
def ten():
    return 10

@op
def scale(x, factor):
    return x * factor

@op
def total(xs):
    return sum(xs)

@job(config={"ops": {"emit": {"config": {"n": 2}}}})
def nested():
    factor = ten()
    sums = emit().map(lambda p: total.alias("inner_total")(inner(p).map(lambda q: scale(q, factor)).collect()))
    total(sums.collect())
"""


def _execute(tmp_path: Path, *args: str) -> dict:
    result = run_memodag(*args, "--json", cwd=tmp_path, home=tmp_path / "home")
    return json.loads(result.stdout)


def test_reexecute_a_nested_clone_by_its_key_and_a_fan_out_with_what_follows(tmp_path):
    (tmp_path / "jobs.py").write_text(NESTED)
    parent = _execute(tmp_path, "job", "execute", "-f", "jobs.py")
    assert parent["status"] == "SUCCESS"

    # the comma inside the brackets is part of the clone's key, not a list of two steps
    one = _execute(tmp_path, "job", "reexecute", parent["run_id"], "--steps", "scale[k1,j0]")
    assert one["status"] == "SUCCESS"
    assert one["steps"]["executed"] == 1

    # the fan-out re-runs: every new clone runs (each reading the parent's `ten`), and both
    # levels of collectors
    again = _execute(tmp_path, "job", "reexecute", parent["run_id"], "--steps", "emit*")
    assert again["status"] == "SUCCESS"
    # emit, inner x2, scale x4, inner_total x2, total
    assert again["steps"] == {"executed": 10, "memoized": 0, "failed": 0, "skipped": 0}


FAILING_FAN_OUT = """
from memodag import DynamicOut, DynamicOutput, job, op

@op(out=DynamicOut())
def emit():
    raise ValueError("no pieces today")
    yield DynamicOutput(1, mapping_key="a")

@op
def double(x):
    return 2 * x

@op
def total(xs):
    return sum(xs)

@op
def report(t):
    return t

@job
def fan():
    report(total(emit().map(double).collect()))
"""


def test_steps_a_failed_fan_out_never_made_are_listed_as_skipped(tmp_path):
    (tmp_path / "jobs.py").write_text(FAILING_FAN_OUT)
    home = tmp_path / "home"
    ran = run_memodag("job", "execute", "-f", "jobs.py", cwd=tmp_path, home=home, check=False)
    assert ran.returncode == 1
    assert "Steps: 0 executed, 0 memoized, 1 failed, 3 skipped" in ran.stdout
    assert "double[*] skipped: not made: fan-out 'emit' did not succeed" in ran.stdout
    assert "report skipped: upstream step 'total' was not made" in ran.stdout
    summary = json.loads(
        run_memodag(
            "job", "execute", "-f", "jobs.py", "--json", cwd=tmp_path, home=home, check=False
        ).stdout
    )
    assert summary["steps"] == {"executed": 0, "memoized": 0, "failed": 1, "skipped": 3}
    shown = run_memodag("runs", "show", summary["run_id"], "--json", cwd=tmp_path, home=home)
    steps = {s["step_key"]: s["status"] for s in json.loads(shown.stdout)["steps"]}
    assert steps == {
        "emit": "failed",
        "double[*]": "skipped",
        "total": "skipped",
        "report": "skipped",
    }


def test_a_failed_nested_fan_out_lists_what_it_never_made(tmp_path):
    source = NESTED.replace(
        "def inner(x):\n", "def inner(x):\n    if x == 0:\n        raise ValueError('no')\n"
    )
    (tmp_path / "jobs.py").write_text(source)
    ran = run_memodag(
        "job", "execute", "-f", "jobs.py", "--json", cwd=tmp_path, home=tmp_path / "h", check=False
    )
    run_id = json.loads(ran.stdout)["run_id"]
    shown = run_memodag("runs", "show", run_id, "--json", cwd=tmp_path, home=tmp_path / "h")
    steps = {s["step_key"]: (s["status"], s["message"]) for s in json.loads(shown.stdout)["steps"]}
    assert steps["inner[k0]"][0] == "failed"
    assert steps["scale[k0,*]"] == ("skipped", "not made: fan-out 'inner[k0]' did not succeed")
    assert steps["inner_total[k0]"][0] == "skipped"
    assert steps["total"] == (
        "skipped",
        "upstream step 'inner_total[k0]' was not made (fan-out 'inner[k0]' did not succeed)",
    )
    assert steps["inner_total[k1]"][0] == "success"
