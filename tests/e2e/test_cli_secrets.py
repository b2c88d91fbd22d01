"""End to end: config read from environment variables and passwords in URLs never stored or
shown by the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from cli_process import run_memodag

SECRET = "s3cr3t-pw"

JOB = """
from memodag import job, op, resource

@resource(config_schema={"url": str}, version="1")
def database(init_context):
    return init_context.resource_config["url"]

@op(required_resource_keys={"db"}, version="1")
def connect(context):
    with open("seen.txt", "a") as f:
        f.write(context.resources.db + "\\n")
    return len(context.resources.db)

@job(resource_defs={"db": database})
def warehouse():
    connect()
"""


def _everything_shown(tmp_path: Path, home: Path, run_id: str) -> str:
    shown = [
        run_memodag("runs", "show", run_id, cwd=tmp_path, home=home).stdout,
        run_memodag("runs", "show", run_id, "--json", cwd=tmp_path, home=home).stdout,
        run_memodag("runs", "list", "--json", cwd=tmp_path, home=home).stdout,
        run_memodag(
            "job", "explain", "-f", "jobs.py", "-c", "literal.yaml", cwd=tmp_path, home=home
        ).stdout,
    ]
    return "\n".join(shown)


def test_env_config_and_masked_passwords_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOB))
    url = f"postgresql://app:{SECRET}@db.example:5432/prod"
    (tmp_path / "literal.yaml").write_text(f"resources:\n  db:\n    config:\n      url: {url}\n")
    (tmp_path / "from_env.yaml").write_text(
        "resources:\n  db:\n    config:\n      url: {env: TEST_WAREHOUSE_URL}\n"
    )

    # a literal URL: the op gets it whole; nothing the CLI prints or stores has the password
    literal = run_memodag(
        "job", "execute", "-f", "jobs.py", "-c", "literal.yaml", "--json", cwd=tmp_path, home=home
    )
    assert SECRET not in literal.stdout + literal.stderr
    run_id = json.loads(literal.stdout)["run_id"]
    assert (tmp_path / "seen.txt").read_text() == url + "\n"
    shown = _everything_shown(tmp_path, home, run_id)
    assert SECRET not in shown
    assert "postgresql://app:***@db.example:5432/prod" in shown
    assert SECRET.encode() not in (home / "instance.db").read_bytes()

    # its stored config cannot be reused: re-executing says so and how to fix it
    again = run_memodag("job", "reexecute", run_id, cwd=tmp_path, home=home, check=False)
    assert again.returncode != 0
    assert "resources.db.config.url" in again.stderr and "{env: VARIABLE}" in again.stderr

    # an environment variable: stored and shown as the reference, read when the run starts
    env = {"TEST_WAREHOUSE_URL": f"postgresql://app:{SECRET}@db.example:5432/other"}
    from_env = run_memodag(
        "job", "execute", "-f", "jobs.py", "-c", "from_env.yaml", "--json",
        cwd=tmp_path, home=home, env=env,
    )  # fmt: skip
    env_run = json.loads(from_env.stdout)["run_id"]
    shown = run_memodag("runs", "show", env_run, "--json", cwd=tmp_path, home=home).stdout
    config = json.loads(shown)["run"]["run_config"]
    assert config["resources"]["db"]["config"]["url"] == {"env": "TEST_WAREHOUSE_URL"}
    assert SECRET not in from_env.stdout + from_env.stderr + shown
    # ...so a re-execution reads the variable again
    run_memodag("job", "reexecute", env_run, cwd=tmp_path, home=home, env=env)
    assert (tmp_path / "seen.txt").read_text().splitlines()[-2:] == [env["TEST_WAREHOUSE_URL"]] * 2

    # unset: an error naming the variable and the field, before the op runs
    unset = run_memodag(
        "job", "execute", "-f", "jobs.py", "-c", "from_env.yaml", cwd=tmp_path, home=home,
        check=False,
    )  # fmt: skip
    assert unset.returncode != 0
    assert "resources.db.config.url: environment variable TEST_WAREHOUSE_URL is not set" in (
        unset.stdout + unset.stderr
    )
    assert len((tmp_path / "seen.txt").read_text().splitlines()) == 3
