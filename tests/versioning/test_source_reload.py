"""A long-lived process (a notebook with autoreload) that edits a module and reloads it at once:
the next run and the next version computed see the edit, however soon after it they come."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from memodag import Instance, SourceHashVersionStrategy, job, op
from memodag.versioning.strategy import OpVersionContext


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> Any:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _edit_and_reload(tmp_path: Path, module: Any, body: str) -> None:
    # the same size as before: only the mtime tells the edit (seen in the same second)
    (tmp_path / f"{module.__name__}.py").write_text(body)
    importlib.reload(module)


def test_a_run_right_after_an_edit_and_reload_recomputes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: Instance
) -> None:
    helpers = _module(tmp_path, monkeypatch, "reload_helpers_a", "def quad(x):\n    return 4 * x\n")

    @op
    def quadded():
        return helpers.quad(5)

    @job(version_strategy=SourceHashVersionStrategy())
    def pipeline():
        quadded()

    first = pipeline.execute_in_process(instance=instance)
    assert first.output_for_node("quadded") == 20
    _edit_and_reload(tmp_path, helpers, "def quad(x):\n    return 5 * x\n")
    second = pipeline.execute_in_process(instance=instance)
    assert second.executed_step_keys == ["quadded"]
    assert second.output_for_node("quadded") == 25


def test_a_reloaded_op_is_versioned_by_its_new_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "from memodag import op\n\n\n@op\ndef scaled():\n    return {} * 10\n"
    module = _module(tmp_path, monkeypatch, "reload_ops_b", body.format(4))
    strategy = SourceHashVersionStrategy()
    before = strategy.get_op_version(OpVersionContext(module.scaled, None))
    _edit_and_reload(tmp_path, module, body.format(5))
    # a new code object: its file is stat'ed again, not trusted for another second
    after = SourceHashVersionStrategy().get_op_version(OpVersionContext(module.scaled, None))
    assert before != after
