"""``memodag verify`` end to end: it finds outputs that are gone or altered, exits 1 until
``--repair`` drops their index entries, and a memoized run then recomputes them."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

from cli_process import run_memodag

JOB = textwrap.dedent(
    """
    from memodag import MEMOIZED_RUN_TAG, job, op

    @op(version="1")
    def first():
        return 20

    @op(version="1")
    def second(first):
        return first + 1

    @op(version="1")
    def third(second):
        return second * 2

    @job(tags={MEMOIZED_RUN_TAG: "true"})
    def chain():
        third(second(first()))
    """
)


def _stored(home: Path, step: str) -> Path:
    (path,) = (home / "storage").glob(f"*/{step}.result.pkl")
    return path


def test_verify_reports_and_repairs_lost_and_altered_outputs(tmp_path):
    home, job_file = tmp_path / "home", tmp_path / "chain.py"
    job_file.write_text(JOB)
    run_memodag("job", "execute", "-f", str(job_file), cwd=tmp_path, home=home)

    clean = run_memodag("verify", cwd=tmp_path, home=home)
    assert "3 output(s) checked: 3 ok, 0 bad" in clean.stdout

    _stored(home, "first").unlink()
    altered = _stored(home, "second")
    assert len(pickle.dumps(99, protocol=5)) == altered.stat().st_size
    altered.write_bytes(pickle.dumps(99, protocol=5))  # same size: only the hash tells

    found = run_memodag("verify", "--json", cwd=tmp_path, home=home, check=False)
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)
    assert report["bad"] == 2 and not report["repaired"]
    reasons = {i["step_key"]: i["reason"] for i in report["items"]}
    assert reasons == {"first": "missing", "second": "content hash differs from the one recorded"}
    # a quick check compares sizes only: the same-size replacement passes it
    quick = run_memodag("verify", "--quick", "--json", cwd=tmp_path, home=home, check=False)
    assert json.loads(quick.stdout)["bad"] == 1

    table = run_memodag("verify", cwd=tmp_path, home=home, check=False)
    assert table.returncode == 1
    assert "--repair" in table.stdout and str(altered) in table.stdout.replace("\n", "")

    before = run_memodag("job", "explain", "-f", str(job_file), cwd=tmp_path, home=home).stdout
    assert "first.result" in before and "but its data is missing: recomputed" in before

    repaired = run_memodag("verify", "--repair", cwd=tmp_path, home=home)
    assert "2 index entries marked lost" in repaired.stdout
    # explain says what happened to them, not "never stored"
    explained = run_memodag(
        "job", "explain", "-f", str(job_file), "--json", cwd=tmp_path, home=home
    ).stdout
    why = {o["step"]: o["reasons"] for o in json.loads(explained)["outputs"]}
    assert why["first"][0].startswith("stored at this version by run ")
    assert "then found missing by memodag verify --repair" in why["first"][0]
    assert (
        "then found content hash differs from the one recorded by memodag verify"
        in (why["second"][0])
    )
    assert (
        "1 output(s) checked: 1 ok, 0 bad" in run_memodag("verify", cwd=tmp_path, home=home).stdout
    )

    rerun = run_memodag("job", "execute", "-f", str(job_file), "--json", cwd=tmp_path, home=home)
    assert rerun.returncode == 0
    assert run_memodag("verify", cwd=tmp_path, home=home).returncode == 0
    assert pickle.loads(_newest(home, "third").read_bytes()) == 42


def _newest(home: Path, step: str) -> Path:
    return max((home / "storage").glob(f"*/{step}.result.pkl"), key=lambda p: p.stat().st_mtime)
