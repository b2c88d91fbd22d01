"""End to end: what a version sees besides code, config keys and inputs. A real project on disk,
each run a fresh ``memodag`` process: mapping order in config and in data (early cutoff), and
declared data versions (``@op(data_version=...)``) of files an op reads by name.

Every op appends its name to ``ran.log`` when its body runs, and the last op writes its value to
``result.json``: the steps a rerun executes are compared with the set that must run, and the
value with a cold run's (a fresh instance)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_process import run_memodag

ORDERED = """
import json
from pathlib import Path

from memodag import MEMOIZED_RUN_TAG, job, op


def ran(name):
    with open("ran.log", "a") as log:
        log.write(name + "\\n")


@op(version="1", config_schema={"weights": dict, "order": [str]})
def weights(context):
    ran("weights")
    # a mapping built in the order of a config list: its order is data
    built = {name: context.op_config["weights"][name] for name in context.op_config["order"]}
    return {"from_config": list(context.op_config["weights"].items()), "built": built}


@op(version="1")
def ordered_names(w):
    ran("ordered_names")
    return list(w["built"])


@op(version="1")
def report(w, names):
    ran("report")
    value = {"from_config": w["from_config"], "names": names}
    Path("result.json").write_text(json.dumps(value))
    return value


@job(tags={MEMOIZED_RUN_TAG: "true"}, early_cutoff=True)
def ordered():
    w = weights()
    report(w, ordered_names(w))
"""


def _project(tmp_path: Path, source: str) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pipeline.py").write_text(source)
    return project


def _execute(project: Path, home: Path, *config: str) -> set[str]:
    """Run the job in a fresh process; the set of op bodies that ran."""
    log = project / "ran.log"
    log.unlink(missing_ok=True)
    args = ["job", "execute", "-f", "pipeline.py"]
    for name in config:
        args += ["-c", name]
    run_memodag(*args, cwd=project, home=home)
    return set(log.read_text().split()) if log.exists() else set()


def _result(project: Path) -> object:
    return json.loads((project / "result.json").read_text())


def _cold(project: Path, tmp_path: Path, *config: str) -> object:
    """The value a run with nothing stored computes (a fresh instance)."""
    _execute(project, tmp_path / "cold-home", *config)
    return _result(project)


def _write_config(project: Path, text: str) -> None:
    (project / "run.yaml").write_text(text)


def test_reordering_a_config_mapping_reruns_the_op_and_its_consumers(tmp_path: Path) -> None:
    project = _project(tmp_path, ORDERED)
    home = tmp_path / "home"
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {a: 1, b: 2}\n      order: [a, b]\n",
    )
    assert _execute(project, home, "run.yaml") == {"weights", "ordered_names", "report"}
    assert _execute(project, home, "run.yaml") == set()  # nothing changed: all memoized

    # the mapping reordered, nothing else: the op iterating it sees another order
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {b: 2, a: 1}\n      order: [a, b]\n",
    )
    assert _execute(project, home, "run.yaml") == {"weights", "ordered_names", "report"}
    assert _result(project) == {"from_config": [["b", 2], ["a", 1]], "names": ["a", "b"]}
    assert _result(project) == _cold(project, tmp_path, "run.yaml")


def test_a_reordered_dict_output_is_new_data_under_early_cutoff(tmp_path: Path) -> None:
    project = _project(tmp_path, ORDERED)
    home = tmp_path / "home"
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {a: 1, b: 2}\n      order: [a, b]\n",
    )
    _execute(project, home, "run.yaml")
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {a: 1, b: 2}\n      order: [b, a]\n",
    )
    # weights re-runs (its config changed) and yields the same entries in another order:
    # another value, so ordered_names (versioned by that data) must not be served stored
    assert _execute(project, home, "run.yaml") == {"weights", "ordered_names", "report"}
    assert _result(project) == {"from_config": [["a", 1], ["b", 2]], "names": ["b", "a"]}
    assert _result(project) == _cold(project, tmp_path, "run.yaml")


def test_explain_names_a_reordered_config_mapping(tmp_path: Path) -> None:
    project = _project(tmp_path, ORDERED)
    home = tmp_path / "home"
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {a: 1, b: 2}\n      order: [a, b]\n",
    )
    _execute(project, home, "run.yaml")
    _write_config(
        project,
        "ops:\n  weights:\n    config:\n      weights: {b: 2, a: 1}\n      order: [a, b]\n",
    )
    explained = run_memodag(
        "job", "explain", "-f", "pipeline.py", "-c", "run.yaml", "--json", cwd=project, home=home
    )
    reasons = {o["step_output"]: o["reasons"] for o in json.loads(explained.stdout)["outputs"]}
    assert reasons["weights.result"] == [
        "config field 'weights' order changed (['a', 'b'] -> ['b', 'a'])"
    ]
