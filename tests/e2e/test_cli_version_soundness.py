"""Edits that once served stale values from memoized runs, each seen as a user sees it: a project
on disk, edited between runs of ``memodag job execute`` (each a fresh process). After the edit
the steps that run must be those the edit concerns, and the values served those of a cold run."""

from __future__ import annotations

import json
import os
import py_compile
import textwrap
from pathlib import Path

import pytest

from cli_process import run_memodag

PRELUDE = """
import json
import os
import py_compile

from memodag import Out, SourceHashVersionStrategy, job, op


def ran(name):
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(name + "\\n")


@op
def report(v):
    ran("report")
    with open(os.environ["RESULT"], "w") as f:
        json.dump(v, f)
    return v
"""


class Project:
    """A project directory with its own instance, cache directory and extra ``sys.path``."""

    def __init__(self, tmp_path: Path, files: dict[str, str], site: Path | None = None) -> None:
        self.root = tmp_path / "project"
        self.tmp = tmp_path
        self.site = site
        for name, text in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            text = textwrap.dedent(text)
            path.write_text(PRELUDE + text if name == "job.py" else text)

    def run(self, home: str = "home") -> tuple[set[str], object]:
        """Steps executed and the value ``report`` last received (in any run)."""
        side_effects, result = self.tmp / "ran.txt", self.tmp / "result.json"
        side_effects.unlink(missing_ok=True)
        env = {
            "SIDE_EFFECTS": str(side_effects),
            "RESULT": str(result),
            "MEMODAG_CACHE_DIR": str(self.tmp / f"cache-{home}"),
        }
        if self.site is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.site), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        run_memodag("job", "execute", "-f", "job.py", cwd=self.root, home=self.tmp / home, env=env)
        executed = set(side_effects.read_text().split()) if side_effects.exists() else set()
        return executed, json.loads(result.read_text())

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.root / name
        text = path.read_text()
        assert old in text, f"edit target {old!r} not in {name}"
        path.write_text(text.replace(old, new))

    def check_edit(self, name: str, old: str, new: str, must_run: set[str]) -> None:
        """Cold run, edit, memoized run: exactly ``must_run`` runs and serves the cold value."""
        self.check_edit_of(self.root / name, old, new, must_run)

    def check_edit_of(self, path: Path, old: str, new: str, must_run: set[str]) -> None:
        """``check_edit`` of any file (one outside the project too)."""
        first, _ = self.run()
        assert "report" in first
        text = path.read_text()
        assert old in text, f"edit target {old!r} not in {path}"
        path.write_text(text.replace(old, new))
        executed, served = self.run()
        _, fresh = self.run("cold-home")
        assert served == fresh
        assert executed == must_run


def test_swapping_the_order_of_declared_outputs_reruns_the_op(tmp_path: Path) -> None:
    # a tuple return fills outputs in declaration order: ``a`` now holds what ``b`` held
    job = """
    @op(out={"a": Out(), "b": Out()})
    def two():
        ran("two")
        return 1, 2


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        a, b = two()
        report(a)
    """
    project = Project(tmp_path, {"job.py": job})
    project.check_edit(
        "job.py", '{"a": Out(), "b": Out()}', '{"b": Out(), "a": Out()}', {"two", "report"}
    )
    # and ``--why`` says so, against the outputs stored before the swap
    project.edit("job.py", '{"b": Out(), "a": Out()}', '{"b": Out(), "a": Out(is_required=False)}')
    listed = run_memodag(
        "job",
        "list-versions",
        "-f",
        "job.py",
        "--why",
        "--json",
        cwd=project.root,
        home=tmp_path / "home",
        env={"MEMODAG_CACHE_DIR": str(tmp_path / "c")},
    )
    rows = {o["step_output"]: o for o in json.loads(listed.stdout)["outputs"]}
    assert rows["two.a"]["reasons"] == [
        "declared outputs of op 'two' changed (b:single,a:single -> b:single,a:single?)"
    ]


def test_an_op_edit_counts_beside_a_broken_installed_distribution(tmp_path: Path) -> None:
    # a dist-info whose METADATA has a name and no version once made every op reaching an
    # installed package count "by name only": edits to it were never seen
    site = tmp_path / "site"
    (site / "brokenpkg").mkdir(parents=True)
    (site / "brokenpkg" / "__init__.py").write_text("VALUE = 1\n")
    info = site / "brokenpkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\n")
    (info / "top_level.txt").write_text("brokenpkg\n")
    job = """
    import brokenpkg


    @op
    def one():
        ran("one")
        return [brokenpkg.VALUE, 1]


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(one())
    """
    project = Project(tmp_path, {"job.py": job}, site=site)
    project.check_edit("job.py", "[brokenpkg.VALUE, 1]", "[brokenpkg.VALUE, 41]", {"one", "report"})


def _installed(site: Path, name: str, body: str, direct_url: str | None) -> None:
    """A distribution ``name`` 1.0 of one module, installed into ``site`` (``direct_url.json``
    as PEP 610 writes it, if given)."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(textwrap.dedent(body))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(f"{name}\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(direct_url)


def test_an_edit_to_a_library_installed_editable_reruns_its_users(tmp_path: Path) -> None:
    # ``pip install -e``: the library's source is the user's to edit, its version never changes
    site = tmp_path / "site"
    editable = '{"url": "file:///src/mylib", "dir_info": {"editable": true}}'
    _installed(site, "mylib", "def scale(x):\n    return 2 * x\n", editable)
    job = """
    import mylib


    @op
    def one():
        ran("one")
        return mylib.scale(21)


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(one())
    """
    project = Project(tmp_path, {"job.py": job}, site=site)
    project.check_edit_of(site / "mylib" / "__init__.py", "2 * x", "3 * x", {"one", "report"})


def test_an_op_reaching_what_cannot_be_hashed_fails_naming_it(tmp_path: Path) -> None:
    # it once counted "by name only", so every later edit of the op served stale outputs
    job = """
    class Odd(list):
        def __iter__(self):
            raise RuntimeError("no iterating me")


    ODD = Odd([1])


    @op
    def one():
        ran("one")
        return len(ODD)


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(one())
    """
    project = Project(tmp_path, {"job.py": job})
    env = {"MEMODAG_CACHE_DIR": str(tmp_path / "cache")}
    result = run_memodag(
        "job",
        "execute",
        "-f",
        "job.py",
        cwd=project.root,
        home=tmp_path / "h",
        env=env,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot version op 'one'" in output
    assert "constant job:ODD" in output and "no iterating me" in output
    assert "@op(version=...)" in output


def test_reordering_a_module_constant_mapping_reruns_its_users(tmp_path: Path) -> None:
    # a mapping's order is data: the op returns its keys in order
    job = """
    WEIGHTS = {"a": 1, "b": 2}


    @op
    def used():
        ran("used")
        return list(WEIGHTS)


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(used())
    """
    project = Project(tmp_path, {"job.py": job})
    project.check_edit("job.py", '{"a": 1, "b": 2}', '{"b": 2, "a": 1}', {"used", "report"})


LOCALS_JOBS = {
    "locals()": "return dict(locals())",
    "vars()": "return dict(vars())",
    "eval": 'return eval("spread")',
    "a frame": "return dict(sys._getframe().f_locals)",
    "inspect": "return dict(inspect.currentframe().f_locals)",
}


@pytest.mark.parametrize("body", LOCALS_JOBS.values(), ids=list(LOCALS_JOBS))
def test_swapping_local_names_the_op_reads_by_name_reruns_it(tmp_path: Path, body: str) -> None:
    # elsewhere a pure rename is no change; a function that sees its local names as data
    # computes something else after one
    job = f"""
    import inspect
    import sys


    @op
    def stats():
        ran("stats")
        mean = 2
        spread = 3
        {body}


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(stats())
    """
    project = Project(tmp_path, {"job.py": job})
    project.check_edit(
        "job.py",
        "mean = 2\n    spread = 3",
        "spread = 2\n    mean = 3",
        {"stats", "report"},
    )


def test_editing_a_slots_dataclass_constant_reruns_its_users(tmp_path: Path) -> None:
    helpers = """
    from dataclasses import dataclass


    @dataclass(frozen=True, slots=True)
    class Settings:
        x: int
        y: int


    ORIGIN = Settings(1, 2)
    """
    job = """
    from helpers import ORIGIN


    @op
    def used():
        ran("used")
        return [ORIGIN.x, ORIGIN.y]


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(used())
    """
    project = Project(tmp_path, {"job.py": job, "helpers.py": helpers})
    project.check_edit("helpers.py", "Settings(1, 2)", "Settings(1, 3)", {"used", "report"})


def test_an_index_name_set_on_a_frame_passes_early_cutoff(tmp_path: Path) -> None:
    # equal values, another index name: ``reset_index`` gives other columns downstream
    job = """
    import pandas as pd


    @op
    def frame():
        ran("frame")
        df = pd.DataFrame({"x": [1, 2]})
        return df


    @op
    def columns(df):
        ran("columns")
        return list(df.reset_index().columns)


    @job(version_strategy=SourceHashVersionStrategy(), early_cutoff=True)
    def pipeline():
        report(columns(frame()))
    """
    project = Project(tmp_path, {"job.py": job})
    project.check_edit(
        "job.py",
        "    return df\n",
        '    df.index.name = "id"\n    return df\n',
        {"frame", "columns", "report"},
    )


def test_a_project_module_without_source_counts_by_its_compiled_file(tmp_path: Path) -> None:
    # a module shipped compiled (here a sourceless .pyc) and used bare once counted by its name
    job = """
    import helpers


    @op
    def one():
        ran("one")
        return getattr(helpers, "quad")(5)


    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        report(one())
    """
    project = Project(tmp_path, {"job.py": job})

    def compiled(body: str) -> None:
        source = tmp_path / "helpers.py"
        source.write_text(body)
        py_compile.compile(str(source), cfile=str(project.root / "helpers.pyc"), doraise=True)

    compiled("def quad(x):\n    return 4 * x\n")
    first, _ = project.run()
    assert first == {"one", "report"}
    compiled("def quad(x):\n    return 5 * x\n")
    executed, served = project.run()
    assert served == 25
    assert executed == {"one", "report"}
