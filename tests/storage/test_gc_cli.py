"""``memodag gc`` end to end: outputs of a custom io manager are listed and kept without the
job, deleted through it with ``-f job.py``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import textwrap
from pathlib import Path

from cli_process import run_memodag

JOB = textwrap.dedent(
    """
    import json, sqlite3
    from memodag import IOManager, MEMOIZED_RUN_TAG, io_manager, job, op

    class KeyValue(IOManager):
        uses_instance_index = True

        def __init__(self, path):
            self.db = sqlite3.connect(path)
            self.db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")

        def handle_output(self, context, obj):
            key = f"{context.run_id}/{context.step_key}"
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(obj)))
            return f"kv://{key}"

        def load_input(self, context):
            key = context.address.uri.removeprefix("kv://")
            return json.loads(self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()[0])

        def delete(self, address):
            with self.db:
                self.db.execute("DELETE FROM kv WHERE key = ?", (address.uri.removeprefix("kv://"),))

    @io_manager(config_schema={"path": str})
    def kv(context):
        return KeyValue(context.resource_config["path"])

    @op(version="1", config_schema={"n": int})
    def make(context):
        return context.op_config["n"]

    @job(resource_defs={"io_manager": kv}, tags={MEMOIZED_RUN_TAG: "true"})
    def stored_in_kv():
        make()
    """
)


def memodag(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_memodag(*args, cwd=cwd, home=home, check=False)


def test_gc_deletes_a_custom_io_managers_outputs_given_the_job_file(tmp_path):
    home, job_file, database = tmp_path / "home", tmp_path / "kv_job.py", tmp_path / "kv.db"
    job_file.write_text(JOB)
    for n in (1, 2):
        config = tmp_path / f"n{n}.yaml"
        config.write_text(
            json.dumps(
                {
                    "ops": {"make": {"config": {"n": n}}},
                    "resources": {"io_manager": {"config": {"path": str(database)}}},
                }
            )
        )
        run = memodag(home, "job", "execute", "-f", str(job_file), "-c", str(config), cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr

    def rows() -> int:
        with sqlite3.connect(database) as db:
            return db.execute("SELECT count(*) FROM kv").fetchone()[0]

    blind = memodag(home, "gc", "--keep-last", "1", "--yes", cwd=tmp_path)
    assert blind.returncode == 0, blind.stderr
    assert "1 of them because gc cannot delete them" in blind.stdout
    assert "memodag gc -f FILE.py" in blind.stdout
    assert rows() == 2

    dry = memodag(home, "gc", "-f", str(job_file), "--keep-last", "1", "--json", cwd=tmp_path)
    report = json.loads(dry.stdout)
    assert [(i["step_key"], i["io_manager"]) for i in report["items"]] == [("make", "io_manager")]
    assert report["unavailable"] == [] and rows() == 2

    done = memodag(home, "gc", "-f", str(job_file), "--keep-last", "1", "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 output(s) deleted" in done.stdout
    assert rows() == 1
