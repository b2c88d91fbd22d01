"""Source-hash versions seen as a user sees them: a project on disk, edited between memoized
runs of ``memodag job execute`` (each a fresh process). After every edit the steps that run must
be exactly those the edit concerns, and the values served must be those of a cold run."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from cli_process import run_memodag

HELPERS = """
def quad(x):
    return 4 * x
"""

SHAPES = """
import functools


@functools.singledispatch
def describe(value):
    return "thing"


@describe.register
def _(value: int):
    return "int"
"""

JOB = """
import json
import os

import shapes
from memodag import SourceHashVersionStrategy, job, op


def ran(name):
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(name + "\\n")


@op
def numbers():
    ran("numbers")
    return [1, 2, 3]


@op
def quadded(xs):
    ran("quadded")
    from helpers import quad

    return [quad(x) for x in xs]


@op
def described(xs):
    ran("described")
    return [shapes.describe(x) for x in xs] + [shapes.describe("s")]


@op
def summed(xs):
    ran("summed")
    total = 0
    for x in xs:
        total += x
    return total


@op
def report(q, d, s):
    ran("report")
    result = {"q": q, "d": d, "s": s}
    with open(os.environ["RESULT"], "w") as f:
        json.dump(result, f)
    return result


@job(version_strategy=SourceHashVersionStrategy())
def pipeline():
    xs = numbers()
    report(quadded(xs), described(xs), summed(xs))
"""

# (what, file, old, new, the steps that must run after it)
EDITS = [
    ("helper imported inside an op body", "helpers.py", "4 * x", "5 * x", {"quadded", "report"}),
    (
        "singledispatch registered implementation",
        "shapes.py",
        'return "int"',
        'return "integer"',
        {"described", "report"},
    ),
    (
        "local variable renamed",
        "job.py",
        "    total = 0\n    for x in xs:\n        total += x\n    return total",
        "    acc = 0\n    for item in xs:\n        acc += item\n    return acc",
        set(),
    ),
    ("op body really edited", "job.py", "total += x", "total += 2 * x", {"summed", "report"}),
]


def _run(project: Path, home: Path, out: Path, *args: str) -> tuple[set[str], dict[str, object]]:
    """Steps executed and the report a memoized run serves (the last one ``report`` wrote)."""
    side_effects, result = out / "ran.txt", out / "result.json"
    side_effects.unlink(missing_ok=True)
    env = {"SIDE_EFFECTS": str(side_effects), "RESULT": str(result)}
    run_memodag("job", "execute", *(args or ("-f", "job.py")), cwd=project, home=home, env=env)
    executed = set(side_effects.read_text().split()) if side_effects.exists() else set()
    return executed, json.loads(result.read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name, text in {"helpers.py": HELPERS, "shapes.py": SHAPES, "job.py": JOB}.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize("edit", EDITS, ids=[e[0] for e in EDITS])
def test_an_edit_reruns_exactly_what_it_concerns_and_serves_cold_values(
    edit: tuple[str, str, str, str, set[str]], project: Path, tmp_path: Path
) -> None:
    what, file, old, new, must_run = edit
    home, warm, cold = tmp_path / "home", tmp_path / "warm", tmp_path / "cold"
    warm.mkdir()
    cold.mkdir()
    executed, _ = _run(project, home, warm)
    assert executed == {"numbers", "quadded", "described", "summed", "report"}
    path = project / file
    text = path.read_text()
    assert old in text, f"{what}: edit target not found"
    path.write_text(text.replace(old, new))
    executed, served = _run(project, home, warm)
    _, fresh = _run(project, tmp_path / "cold-home", cold)
    assert executed == must_run
    assert served == fresh


def test_a_module_run_by_file_by_name_or_renamed_has_one_version(
    project: Path, tmp_path: Path
) -> None:
    """Versions name project code without its module, whose name depends on how it is loaded."""
    package = project / "pipe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (project / "job.py").rename(package / "job.py")
    home, out = tmp_path / "home", tmp_path / "out"
    out.mkdir()
    first, _ = _run(project, home, out, "-f", "pipe/job.py")
    assert len(first) == 5
    by_name, _ = _run(project, home, out, "-m", "pipe.job")
    assert by_name == set()
    (package / "job.py").rename(package / "daily.py")  # a renamed file holds the same code
    renamed, _ = _run(project, home, out, "-f", "pipe/daily.py")
    assert renamed == set()
