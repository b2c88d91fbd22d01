"""A script that starts a multiprocess run without ``if __name__ == "__main__":`` gets one clear
message, and worker processes (which import the script again) never start or record runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from memodag import Instance, RunStatus

PIPELINE = textwrap.dedent(
    """
    import sys

    from memodag import Instance, job, multiprocess_executor, op


    @op
    def one():
        return 1


    @op
    def two(x):
        return x + 1


    executor = multiprocess_executor.configured({"max_concurrent": 2, "start_method": sys.argv[2]})


    @job(executor_def=executor)
    def pipeline():
        two(one())


    instance = Instance.from_url(f"sqlite:///{sys.argv[1]}/instance.db")
    """
)


def _run(tmp_path, start: str, start_method: str = "forkserver") -> subprocess.CompletedProcess:
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE + start)
    command = [sys.executable, str(script), str(tmp_path), start_method]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def _runs(tmp_path):
    with Instance.from_url(f"sqlite:///{tmp_path}/instance.db") as instance:
        return instance.get_runs()


def test_a_run_started_at_import_is_refused_with_one_message_and_no_run(tmp_path):
    done = _run(tmp_path, "result = pipeline.execute_in_process(instance=instance)\n")

    assert done.returncode == 1
    line = len(PIPELINE.splitlines()) + 1
    assert (
        f"ExecutionError: {tmp_path / 'pipeline.py'}, line {line}, starts a multiprocess run "
        "when the script is imported; worker processes import the script too, so each would "
        'start it again. Put the code that starts the run under `if __name__ == "__main__":`'
    ) in done.stderr
    assert done.stderr.count("Traceback") == 1
    assert "bootstrapping phase" not in done.stderr
    assert _runs(tmp_path) == []


def test_the_same_run_under_the_main_guard_runs(tmp_path):
    start = 'if __name__ == "__main__":\n    print(pipeline.execute_in_process(instance=instance).output_for_node("two"))\n'
    done = _run(tmp_path, start)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2"]
    (run,) = _runs(tmp_path)
    assert run.status is RunStatus.SUCCESS


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_importing_the_script_never_start_or_record_a_run(tmp_path, start_method):
    # a guard that also lets the workers through (they import the script as __mp_main__)
    start = 'if __name__ in ("__main__", "__mp_main__"):\n    pipeline.execute_in_process(instance=instance)\n'
    done = _run(tmp_path, start, start_method)

    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1, done.stderr
    assert "bootstrapping phase" not in done.stderr
    assert (
        "it had run no step yet: if the run was started from a script, is the code that starts "
        'it under `if __name__ == "__main__":`?'
    ) in done.stderr
    (run,) = _runs(tmp_path)  # the driver's own run, and no run from any worker
    assert run.status is RunStatus.FAILURE
