"""End to end: what a version sees besides code, config keys and inputs. A real project on disk,
each run a fresh ``memodag`` process: mapping order in config and in data (early cutoff), and
declared data versions (``@op(data_version=...)``) of files an op reads by name.

Every op appends its name to ``ran.log`` when its body runs, and the last op writes its value to
``result.json``: the steps a rerun executes are compared with the set that must run, and the
value with a cold run's (a fresh instance)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

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


DATA_VERSIONED = """
import hashlib
import json
from pathlib import Path

from memodag import MEMOIZED_RUN_TAG, job, op, resource


def ran(name):
    with open("ran.log", "a") as log:
        log.write(name + "\\n")


@resource(config_schema={"root": str})
def data_dir(context):
    return Path(context.resource_config["root"])


def prices_version(context):
    # the content of the file the op reads; memodag cannot see it any other way
    path = context.resources.data_dir / context.op_config["file"]
    context.log.info("data version of %s", path)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@op(
    version="1",
    config_schema={"file": str},
    required_resource_keys={"data_dir"},
    data_version=prices_version,
)
def load(context):
    ran("load")
    text = (context.resources.data_dir / context.op_config["file"]).read_text()
    return [int(line) for line in text.split()]


@op(version="1")
def total(prices):
    ran("total")
    return sum(prices)


@op(version="1")
def unrelated():
    ran("unrelated")
    return "same"


@op(version="1")
def report(total, other):
    ran("report")
    Path("result.json").write_text(json.dumps({"total": total, "other": other}))
    return total


@job(tags={MEMOIZED_RUN_TAG: "true"}, resource_defs={"data_dir": data_dir})
def priced():
    report(total(load()), unrelated())
"""

DATA_CONFIG = """
ops:
  load:
    config:
      file: prices.txt
resources:
  data_dir:
    config:
      root: data
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_declared_data_version_reruns_the_op_when_the_file_it_reads_changes(
    tmp_path: Path, executor: str
) -> None:
    project = _project(tmp_path, DATA_VERSIONED)
    home = tmp_path / "home"
    (project / "data").mkdir()
    prices = project / "data" / "prices.txt"
    prices.write_text("1\n2\n3\n")
    config = DATA_CONFIG + f"execution:\n  {executor}: {{}}\n"
    _write_config(project, config)
    assert _execute(project, home, "run.yaml") == {"load", "total", "unrelated", "report"}
    assert _execute(project, home, "run.yaml") == set()  # the file did not change

    old = _sha(prices)
    prices.write_text("1\n2\n3\n40\n")  # same name, same config: other content
    listed = run_memodag(
        "job",
        "list-versions",
        "-f",
        "pipeline.py",
        "-c",
        "run.yaml",
        "--why",
        "--json",
        cwd=project,
        home=home,
    )
    rows = {o["step_output"]: o for o in json.loads(listed.stdout)["outputs"]}
    assert {k: o["status"] for k, o in rows.items()} == {
        "load.result": "to-be-recomputed",
        "total.result": "to-be-recomputed",
        "unrelated.result": "stored",
        "report.result": "to-be-recomputed",
    }
    assert rows["load.result"]["reasons"] == [
        f"data version of op 'load' changed ({old} -> {_sha(prices)})"
    ]
    assert _execute(project, home, "run.yaml") == {"load", "total", "report"}
    assert _result(project) == {"total": 46, "other": "same"}
    assert _result(project) == _cold(project, tmp_path, "run.yaml")
    assert _execute(project, home, "run.yaml") == set()


def _run_failing(project: Path, home: Path) -> str:
    done = run_memodag(
        "job",
        "execute",
        "-f",
        "pipeline.py",
        "-c",
        "run.yaml",
        cwd=project,
        home=home,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def test_a_failing_data_version_is_a_clear_error_naming_the_op(tmp_path: Path) -> None:
    project = _project(tmp_path, DATA_VERSIONED)
    home = tmp_path / "home"
    (project / "data").mkdir()  # no prices.txt: the data version cannot read it
    _write_config(project, DATA_CONFIG)
    output = _run_failing(project, home)
    assert "data_version of op 'load' (prices_version) failed: FileNotFoundError" in output
    assert "Traceback" not in output


def test_a_failing_data_version_exits_1_in_every_command(tmp_path: Path) -> None:
    """User code that raised is a failure, not a usage mistake (2), whichever command ran it."""
    project = _project(tmp_path, DATA_VERSIONED)
    home = tmp_path / "home"
    (project / "data").mkdir()
    _write_config(project, DATA_CONFIG)
    codes = {}
    for command in ("execute", "list-versions", "explain"):
        done = run_memodag(
            "job", command, "-f", "pipeline.py", "-c", "run.yaml",
            cwd=project, home=home, check=False,
        )  # fmt: skip
        assert "data_version of op 'load' (prices_version) failed" in done.stdout + done.stderr
        codes[command] = done.returncode
    assert codes == {"execute": 1, "list-versions": 1, "explain": 1}


def test_a_data_version_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    source = DATA_VERSIONED.replace(
        "return hashlib.sha256(path.read_bytes()).hexdigest()[:12]", "return path.stat()"
    )
    project = _project(tmp_path, source)
    home = tmp_path / "home"
    (project / "data").mkdir()
    (project / "data" / "prices.txt").write_text("1\n")
    _write_config(project, DATA_CONFIG)
    output = _run_failing(project, home)
    assert "data_version of op 'load' (prices_version) returned os.stat_result(" in output
    assert "which is not a JSON value" in output


CUSTOM = '''
import json
import pickle
from pathlib import Path

from memodag import (
    MEMOIZED_RUN_TAG, MemoizableIOManager, VersionStrategy, io_manager, job, op, resource
)


def ran(name):
    with open("ran.log", "a") as log:
        log.write(name + "\\n")


class ConfigVersions(VersionStrategy):
    """Written for this job's database resource: versions it by its config's release."""

    def get_op_version(self, context):
        return "ops-1"

    def get_resource_version(self, context):
        return context.resource_config["release"]


@resource(config_schema={"release": str, "rows": int})
def database(context):
    return list(range(context.resource_config["rows"]))


@resource(config_schema={"root": str})
def store_dir(context):
    return Path(context.resource_config["root"])


class DirectoryManager(MemoizableIOManager):
    """Files by version under a directory another resource names."""

    def _path(self, resources, step_key, version):
        return resources.store_dir / f"{step_key}-{version}.pkl"

    def handle_output(self, context, obj):
        path = self._path(context.resources, context.step_key, context.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj))
        return str(path)

    def load_input(self, context):
        return pickle.loads(Path(context.address.uri).read_bytes())

    def has_output(self, context):
        context.log.info("looking in %s", context.resource_config["label"])
        return self._path(context.resources, context.step_key, context.version).exists()


@io_manager(config_schema={"label": str}, required_resource_keys={"store_dir"})
def directory_manager(_):
    return DirectoryManager()


@op(required_resource_keys={"database"})
def query(context):
    ran("query")
    return context.resources.database


@op
def total(rows):
    ran("total")
    return sum(rows)


@op
def report(total):
    ran("report")
    Path("result.json").write_text(json.dumps(total))
    return total


@job(
    tags={MEMOIZED_RUN_TAG: "true"},
    version_strategy=ConfigVersions(),
    resource_defs={
        "database": database, "store_dir": store_dir, "io_manager": directory_manager
    },
)
def custom():
    report(total(query()))
'''

CUSTOM_CONFIG = """
resources:
  database: {config: {release: "%s", rows: %d}}
  store_dir: {config: {root: %s}}
  io_manager: {config: {label: the store}}
"""


def test_a_strategy_for_the_job_s_resources_and_a_custom_manager_memoize_across_processes(
    tmp_path: Path,
) -> None:
    # the strategy knows the database, not the io manager; the manager's has_output needs the
    # resource naming its directory, its config and a log, as handle_output does
    project = _project(tmp_path, CUSTOM)
    home = tmp_path / "home"
    _write_config(project, CUSTOM_CONFIG % ("r1", 4, "stored"))
    assert _execute(project, home, "run.yaml") == {"query", "total", "report"}
    assert _execute(project, home, "run.yaml") == set()
    _write_config(project, CUSTOM_CONFIG % ("r2", 5, "stored"))  # a new database release
    assert _execute(project, home, "run.yaml") == {"query", "total", "report"}
    assert _execute(project, home, "run.yaml") == set()
    assert _result(project) == 10
    _write_config(project, CUSTOM_CONFIG % ("r2", 5, "cold-stored"))  # nothing stored there
    assert _cold(project, tmp_path, "run.yaml") == 10
