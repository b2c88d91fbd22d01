"""End to end: list-versions shows everything (clones folded), explain only what will run, and
explain compares an older config with what that config stored."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from cli_process import run_memodag

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "memoized_development"

FANNED = """
from memodag import MEMOIZED_RUN_TAG, DynamicOut, DynamicOutput, job, op


@op(version="1", out=DynamicOut(), config_schema={"n": int})
def pieces(context):
    for i in range(context.op_config["n"]):
        yield DynamicOutput(i, mapping_key=f"k{i}")


@op(version="1")
def double(x):
    return 2 * x


@op(version="1")
def total(xs):
    return sum(xs)


@op(version="1")
def report(t):
    return f"total {t}"


@job(tags={MEMOIZED_RUN_TAG: "true"})
def fanned():
    report(total(pieces().map(double).collect()))
"""


def memodag(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_memodag(*args, cwd=cwd, home=home)


def test_explain_of_an_older_config_blames_only_the_edited_helper(tmp_path: Path) -> None:
    home = tmp_path / "home"
    copy = tmp_path / "memoized_development"
    shutil.copytree(EXAMPLE, copy)
    job_file, california, maryland = (
        str(copy / "dog_tree.py"),
        str(copy / "california.yaml"),
        str(copy / "maryland.yaml"),
    )
    memodag(home, "job", "execute", "-f", job_file, "-c", california, cwd=tmp_path)
    memodag(home, "job", "execute", "-f", job_file, "-c", maryland, cwd=tmp_path)
    source = Path(job_file).read_text().replace("word[:1].upper() + word[1:]", "word.capitalize()")
    Path(job_file).write_text(source)

    explained = json.loads(
        memodag(
            home, "job", "explain", "-f", job_file, "-c", california, "--json", cwd=tmp_path
        ).stdout
    )["outputs"]
    assert [(o["step_output"], o["status"]) for o in explained] == [
        ("emit_sentence.result", "to-be-recomputed")
    ]
    (reason,) = explained[0]["reasons"]
    assert reason.startswith("code of op 'emit_sentence' changed: function ")
    assert reason.endswith(":capitalize edited"), reason

    listed = json.loads(
        memodag(
            home, "job", "list-versions", "-f", job_file, "-c", california, "--json", cwd=tmp_path
        ).stdout
    )["outputs"]
    assert {o["step_output"]: o["status"] for o in listed} == {
        "emit_dog.result": "stored",
        "emit_tree.result": "stored",
        "emit_sentence.result": "to-be-recomputed",
    }


def test_clones_fold_into_one_row_and_filters_narrow_the_table(tmp_path: Path) -> None:
    home = tmp_path / "home"
    job_file = tmp_path / "fanned.py"
    job_file.write_text(FANNED)
    config = tmp_path / "c30.yaml"
    config.write_text("ops:\n  pieces:\n    config:\n      n: 30\n")
    args = ("-f", str(job_file), "-c", str(config))
    memodag(home, "job", "execute", *args, cwd=tmp_path)

    folded = memodag(home, "job", "list-versions", *args, cwd=tmp_path).stdout
    assert "double[...].result (30 clones)" in folded
    assert "double[k7]" not in folded
    assert "33 stored" in folded  # every row is counted, folded or not

    unfolded = memodag(home, "job", "list-versions", *args, "--all", cwd=tmp_path).stdout
    assert sum(1 for line in unfolded.splitlines() if line.startswith("double[k")) == 30

    only_total = memodag(home, "job", "list-versions", *args, "--step", "total", cwd=tmp_path)
    lines = only_total.stdout.splitlines()
    assert any(line.startswith("total.result") for line in lines)
    assert not any(line.startswith(("double", "pieces", "report")) for line in lines)

    for command in ("list-versions", "explain"):
        misspelt = run_memodag(
            "job", command, *args, "--step", "totl", cwd=tmp_path, home=home, check=False
        )
        assert misspelt.returncode == 2, misspelt.stdout
        assert "--step 'totl' matches no step of job 'fanned'" in misspelt.stderr
        assert "did you mean 'total'?" in misspelt.stderr

    as_json = json.loads(
        memodag(home, "job", "list-versions", *args, "--json", cwd=tmp_path).stdout
    )["outputs"]
    assert len(as_json) == 33 and {o["step"] for o in as_json} >= {"double[k0]", "double[k29]"}

    # 31 pieces: the fan-out's config changed, so it re-runs and its pieces are known only then
    config.write_text("ops:\n  pieces:\n    config:\n      n: 31\n")
    nothing_stored = memodag(
        home, "job", "list-versions", *args, "--status", "to-be-recomputed", cwd=tmp_path
    ).stdout
    assert "stored" not in nothing_stored.replace("to-be-recomputed", "")
    explained = memodag(home, "job", "explain", *args, cwd=tmp_path).stdout
    assert "config field 'n' changed (30 -> 31)" in explained
    assert "total.result" in explained and "report.result" in explained
    assert "double[*].result" in explained and "double[k" not in explained
