"""Where the default instance lives: ``$MEMODAG_HOME``, else the nearest ``.memodag`` upward from
the current directory (as git finds a repository), else a new ``./.memodag``."""

from __future__ import annotations

from pathlib import Path

import pytest

from memodag import Instance, job, op
from memodag.storage.instance import find_home


@op
def answer():
    return 42


@job
def small():
    answer()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MEMODAG_HOME")
    if find_home(tmp_path).is_dir():
        pytest.skip(f"a .memodag above the test folder ({find_home(tmp_path)}) would be found")
    root = tmp_path / "project"
    (root / "pipe" / "deep").mkdir(parents=True)
    return root


def test_runs_from_a_subfolder_land_in_the_projects_instance(project, monkeypatch):
    monkeypatch.chdir(project)
    first = small.execute_in_process()  # creates project/.memodag
    monkeypatch.chdir(project / "pipe" / "deep")

    second = small.execute_in_process()

    instance = Instance.get()
    assert instance.home == project / ".memodag"
    assert {r.run_id for r in instance.get_runs()} == {first.run_id, second.run_id}
    assert instance.storage_dir == project / ".memodag" / "storage"
    assert not (project / "pipe" / "deep" / ".memodag").exists()


def test_without_any_memodag_folder_the_home_is_a_new_one_in_the_current_directory(
    project, monkeypatch
):
    monkeypatch.chdir(project / "pipe")

    assert find_home() == project / "pipe" / ".memodag"
    assert not find_home().exists()  # finding never creates

    small.execute_in_process()
    assert (project / "pipe" / ".memodag" / "instance.db").is_file()


def test_memodag_home_wins_over_the_folder_search(project, monkeypatch, tmp_path):
    (project / ".memodag").mkdir()
    monkeypatch.chdir(project / "pipe")
    monkeypatch.setenv("MEMODAG_HOME", str(tmp_path / "team"))

    assert find_home() == tmp_path / "team"
    assert Instance.get().home == tmp_path / "team"


def test_a_relative_storage_dir_stores_outputs_that_load_from_any_directory(tmp_path, monkeypatch):

    @op
    def answer():
        return 42

    @job
    def one():
        answer()

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    with Instance.from_url(
        "sqlite:///.memodag/instance.db", storage_dir=".memodag/storage"
    ) as inst:
        result = one.execute_in_process(instance=inst)
        monkeypatch.chdir(tmp_path)  # a later command, from another folder
        assert result.output_for_node("answer") == 42
