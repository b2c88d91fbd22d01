"""End to end: the memoized-development walkthrough through the CLI (list-versions, execute,
explain, --json), and gc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from cli_process import run_memodag

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "memoized_development"


def memodag(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_memodag(*args, cwd=cwd, home=home, check=False)


@pytest.fixture
def walkthrough(tmp_path: Path) -> Path:
    copy = tmp_path / "memoized_development"
    shutil.copytree(EXAMPLE, copy)
    return copy


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["step_output"]: row["status"] for row in json.loads(result.stdout)["outputs"]}


def test_memoized_development_walkthrough(tmp_path: Path, walkthrough: Path) -> None:
    home = tmp_path / "home"
    job_file = str(walkthrough / "dog_tree.py")
    california = str(walkthrough / "california.yaml")
    maryland = str(walkthrough / "maryland.yaml")

    before = memodag(
        home, "job", "list-versions", "-f", job_file, "-c", california, "--json", cwd=tmp_path
    )
    assert set(statuses(before).values()) == {"to-be-recomputed"}

    run = memodag(home, "job", "execute", "-f", job_file, "-c", california, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 executed" in run.stdout

    table = memodag(home, "job", "list_versions", "-f", job_file, "-c", maryland, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Step Output" in table.stdout and "Status of Output" in table.stdout
    assert statuses(
        memodag(
            home, "job", "list-versions", "-f", job_file, "-c", maryland, "--json", cwd=tmp_path
        )
    ) == {
        "emit_dog.result": "stored",
        "emit_tree.result": "to-be-recomputed",
        "emit_sentence.result": "to-be-recomputed",
    }

    explain = memodag(home, "job", "explain", "-f", job_file, "-c", maryland, cwd=tmp_path)
    assert explain.returncode == 0, explain.stderr
    assert "config field 'tree_species' changed ('redwood' -> 'white oak')" in explain.stdout

    rerun = memodag(home, "job", "execute", "-f", job_file, "-c", maryland, cwd=tmp_path)
    assert "2 executed, 1 memoized" in rerun.stdout, rerun.stdout

    # editing a project-local helper invalidates the op that calls it, and nothing else
    source = Path(job_file).read_text().replace("word[:1].upper() + word[1:]", "word.capitalize()")
    Path(job_file).write_text(source)
    edited = statuses(
        memodag(
            home, "job", "list-versions", "-f", job_file, "-c", maryland, "--json", cwd=tmp_path
        )
    )
    assert edited == {
        "emit_dog.result": "stored",
        "emit_tree.result": "stored",
        "emit_sentence.result": "to-be-recomputed",
    }


def test_gc_dry_run_then_delete(tmp_path: Path, walkthrough: Path) -> None:
    home = tmp_path / "home"
    job_file = str(walkthrough / "dog_tree.py")
    for config in ("california.yaml", "maryland.yaml"):
        result = memodag(
            home, "job", "execute", "-f", job_file, "-c", str(walkthrough / config), cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr

    assert memodag(home, "gc", cwd=tmp_path).returncode == 2  # nothing said about what to keep
    dry = memodag(home, "gc", "--keep-last", "1", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    dropped = {item["step_key"] for item in report["items"]}
    assert dropped == {"emit_tree", "emit_sentence"}  # the Maryland run reused emit_dog
    assert all(Path(item["uri"]).exists() for item in report["items"])

    done = memodag(home, "gc", "--keep-last", "1", "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not any(Path(item["uri"]).exists() for item in report["items"])
    again = memodag(
        home,
        "job",
        "list-versions",
        "-f",
        job_file,
        "-c",
        str(walkthrough / "california.yaml"),
        "--json",
        cwd=tmp_path,
    )
    assert statuses(again) == {
        "emit_dog.result": "stored",
        "emit_tree.result": "to-be-recomputed",
        "emit_sentence.result": "to-be-recomputed",
    }

    bad = memodag(home, "gc", "--older-than", "yesterday-ish", cwd=tmp_path)
    assert bad.returncode == 2 and "expected an ISO date" in bad.stderr


def test_flagship_example_logs_memoizes_and_reexecutes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    weather = str(REPO / "examples" / "quickstart" / "weather.py")
    first = memodag(home, "job", "execute", "-f", weather, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "14 executed" in first.stdout
    assert "report | report:" in first.stdout and "station_5" in first.stdout  # context.log output
    assert "clean[station_0] | dropped 1 faulty reading(s)" in first.stdout

    second = memodag(home, "job", "execute", "-f", weather, cwd=tmp_path)
    assert "0 executed, 14 memoized" in second.stdout, second.stdout
    forced = memodag(home, "job", "execute", "-f", weather, "--no-memoize", cwd=tmp_path)
    assert "14 executed, 0 memoized" in forced.stdout, forced.stdout

    runs = json.loads(memodag(home, "runs", "list", "--json", cwd=tmp_path).stdout)
    parent = runs[0]["run_id"] if isinstance(runs, list) else runs["runs"][0]["run_id"]
    again = memodag(home, "job", "reexecute", parent[:8], "--steps", "report", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 executed" in again.stdout, again.stdout


LOST_JOB = """
from memodag import MEMOIZED_RUN_TAG, job, op

@op(version="1")
def raw():
    return 20

@op(version="1")
def clean(raw):
    return raw + 1

@op(version="1")
def report(clean):
    return clean * 2

@job(tags={MEMOIZED_RUN_TAG: "true"})
def chain():
    report(clean(raw()))
"""


@pytest.mark.parametrize("lost", ["clean", "report"])
def test_a_lost_output_is_recomputed_as_explain_says(tmp_path: Path, lost: str) -> None:
    """An intermediate whose consumer is stored (clean) and a final output (report): each lost
    one is recomputed alone, and explain says so and why before the run."""
    home = tmp_path / "home"
    (tmp_path / "chain.py").write_text(LOST_JOB)
    assert memodag(home, "job", "execute", "-f", "chain.py", cwd=tmp_path).returncode == 0
    (stored,) = (home / "storage").glob(f"*/{lost}.result.pkl")
    stored.unlink()
    explained = memodag(home, "job", "explain", "-f", "chain.py", "--json", cwd=tmp_path)
    rows = json.loads(explained.stdout)["outputs"]
    assert [r["step"] for r in rows] == [lost]
    assert rows[0]["reasons"] == [
        f"stored at this version by run {stored.parent.name[:8]}, but its data is missing: "
        "recomputed"
    ]
    ran = memodag(home, "job", "execute", "-f", "chain.py", "--json", cwd=tmp_path)
    assert json.loads(ran.stdout)["steps"] == {
        "executed": 1,
        "memoized": 2,
        "failed": 0,
        "skipped": 0,
    }
