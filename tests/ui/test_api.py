"""``memodag ui``'s JSON API, against a real server in a subprocess and a real SQLite instance."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from ui.conftest import REPO, run_cli, subprocess_env

WEATHER = REPO / "examples" / "quickstart" / "weather.py"
MORE_DAYS = REPO / "examples" / "quickstart" / "more_days.yaml"


def _two_weather_runs(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    return home


def test_ui_prints_its_url_on_loopback_and_serves_the_front_end(start_ui, tmp_path):
    server = start_ui(home=tmp_path / "home")
    assert server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(server.url, timeout=30) as response:
        page = response.read().decode()
        policy = response.headers["Content-Security-Policy"]
    assert "/static/app.js" in page and "/static/vendor/dagre.min.js" in page
    assert "script-src 'self'" in policy
    with urllib.request.urlopen(server.url + "static/vendor/dagre.min.js", timeout=30) as response:
        assert b"var dagre=" in response.read(400)


def test_binding_beyond_loopback_warns(start_ui, tmp_path):
    server = start_ui("--host", "0.0.0.0", home=tmp_path / "home")
    assert any("Warning: listening on 0.0.0.0" in line for line in server.first_lines)


def test_runs_list_counts_filters_and_pages(start_ui, tmp_path):
    home = _two_weather_runs(tmp_path)
    server = start_ui(home=home)
    page = server.json("/api/runs")
    newest, first = page["runs"]
    assert newest["counts"] == {"executed": 0, "memoized": 14, "failed": 0, "skipped": 0}
    assert first["counts"] == {"executed": 14, "memoized": 0, "failed": 0, "skipped": 0}
    assert newest["job_name"] == "weather" and newest["status"] == "SUCCESS"
    assert newest["duration"] > 0 and not page["has_more"]
    assert server.json("/api/runs?status=FAILURE")["runs"] == []
    assert server.json("/api/runs?job=other")["runs"] == []
    assert len(server.json("/api/runs?job=weather&status=SUCCESS")["runs"]) == 2
    one = server.json("/api/runs?limit=1")
    assert [r["run_id"] for r in one["runs"]] == [newest["run_id"]] and one["has_more"]
    older = server.json("/api/runs?limit=1&offset=1")
    assert [r["run_id"] for r in older["runs"]] == [first["run_id"]] and not older["has_more"]
    status, body = server.get("/api/runs?status=BOGUS")
    assert status == 404 and "BOGUS" in body["error"]


def test_run_page_data_graph_steps_addresses(start_ui, tmp_path):
    home = _two_weather_runs(tmp_path)
    server = start_ui("-f", str(WEATHER), home=home)
    first = server.json("/api/runs")["runs"][1]
    detail = server.json(f"/api/runs/{first['run_id'][:8]}")  # a unique prefix finds it
    assert detail["graph_from"] == "job"
    assert [n["id"] for n in detail["graph"]["nodes"]] == [
        "station_readings",
        "clean",
        "summarize",
        "report",
    ]
    assert {(e["source"], e["target"]) for e in detail["graph"]["edges"]} == {
        ("station_readings", "clean"),
        ("clean", "summarize"),
        ("summarize", "report"),
    }
    # a mapped node is one node with its piece counts by status
    assert detail["nodes"]["clean"] == {
        "node": "clean",
        "status": "success",
        "counts": {"success": 6},
        "steps": 6,
    }
    assert "steps" not in detail  # a node's steps come on demand (a fan-out may have 10,000)
    clean = server.json(f"/api/runs/{first['run_id']}/steps?node=clean")
    assert clean["total"] == 6 and len(clean["steps"]) == 6
    assert server.json(f"/api/runs/{first['run_id']}/steps?node=clean&limit=2")["total"] == 6
    assert len(server.json(f"/api/runs/{first['run_id']}/steps?node=clean&limit=2")["steps"]) == 2
    step = next(s for s in clean["steps"] if s["step_key"] == "clean[station_1]")
    assert step["inputs"][0]["address"]["step_key"] == "station_readings"
    assert step["inputs"][0]["address"]["mapping_key"] == "station_1"
    assert step["outputs"][0]["address"]["uri"].endswith(".pkl")
    assert len(step["outputs"][0]["address"]["version"]) >= 16
    assert step["duration"] is not None and step["attempts"] == 1
    events = server.json(f"/api/runs/{first['run_id']}/events")
    assert events["first"] == 0 and len(events["lines"]) == events["next"]
    tail = server.json(f"/api/runs/{first['run_id']}/events?limit=5")
    assert tail["first"] == events["next"] - 5 and tail["lines"] == events["lines"][-5:]
    logs = [line for line in events["lines"] if line["kind"] == "LOG"]
    assert any("report:" in line["message"] for line in logs)
    memoized = server.json("/api/runs")["runs"][0]
    assert server.json(f"/api/runs/{memoized['run_id']}")["nodes"]["clean"]["status"] == "memoized"


@pytest.mark.postgres
def test_ui_on_a_postgresql_instance(start_ui, postgres_url, tmp_path):
    home = tmp_path / "home"
    for _ in range(2):
        run_cli(
            "job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path, instance_url=postgres_url
        )
    server = start_ui(
        "-f", str(WEATHER), "-c", str(MORE_DAYS), home=home, instance_url=postgres_url
    )
    runs = server.json("/api/runs")["runs"]
    assert [r["counts"]["memoized"] for r in runs] == [14, 0]
    detail = server.json(f"/api/runs/{runs[1]['run_id']}")
    assert detail["nodes"]["summarize"]["counts"] == {"success": 6}
    view = server.json("/api/jobs/weather")
    assert view["nodes"]["station_readings"]["status"] == "to-be-recomputed"
    assert not (home / "instance.db").exists()


def test_run_of_a_job_not_given_gets_its_graph_from_events(start_ui, tmp_path):
    home = tmp_path / "home"
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    server = start_ui(home=home)
    run_id = server.json("/api/runs")["runs"][0]["run_id"]
    detail = server.json(f"/api/runs/{run_id}")
    assert detail["graph_from"] == "events"
    assert ("summarize", "report") in {(e["source"], e["target"]) for e in detail["graph"]["edges"]}


def test_job_view_marks_what_a_config_change_recomputes_and_why(start_ui, tmp_path):
    home = _two_weather_runs(tmp_path)
    same = start_ui("-f", str(WEATHER), home=home).json("/api/jobs/weather")
    assert same["counts"] == {"stored": 14}
    assert same["nodes"]["clean"]["counts"] == {"stored": 6}
    changed = start_ui("-f", str(WEATHER), "-c", str(MORE_DAYS), home=home).json(
        "/api/jobs/weather"
    )
    readings = changed["nodes"]["station_readings"]
    assert readings["status"] == "to-be-recomputed"
    assert readings["outputs"][0]["reasons"] == ["config field 'days' changed (30 -> 60)"]
    assert changed["nodes"]["report"]["status"] == "to-be-recomputed"


def test_unknown_run_job_and_paths_are_404(start_ui, tmp_path):
    server = start_ui("-f", str(WEATHER), home=_two_weather_runs(tmp_path))
    assert server.get("/api/runs/nope")[0] == 404
    assert server.get("/api/jobs/nope")[0] == 404
    # static files come from the package's folder only, whatever the client asks for
    for path in ("/static/../service.py", "/static/%2e%2e/service.py", "/static/..%2fservice.py"):
        status, body = server.get(path)
        assert status == 404 and "UiService" not in str(body)


def test_config_without_a_job_is_a_usage_error(ui_installed, tmp_path):
    result = run_cli("ui", "-c", str(MORE_DAYS), home=tmp_path / "home", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "-c CONFIG needs the job" in result.stderr


def test_import_memodag_imports_no_ui_dependency(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        import memodag, memodag.ui, memodag.ui.service
        loaded = [m for m in ("starlette", "uvicorn", "memodag.ui.server") if m in sys.modules]
        assert not loaded, loaded
        """
    )
    subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(tmp_path / "home"), check=True, timeout=60
    )


def test_without_the_ui_extra_the_command_names_it(tmp_path):
    """No Starlette (here: its import blocked): a usage error naming the extra, nothing served."""
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("starlette", "uvicorn"):
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Block())
        from memodag.cli.main import main
        main(["ui", "--port", "0"])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert 'pip install "memodag[ui]"' in result.stderr


def test_before_any_run_the_ui_creates_no_instance_and_shows_the_first_run(start_ui, tmp_path):
    home = tmp_path / "home"
    server = start_ui("-f", str(WEATHER), home=home)
    assert any("No instance yet" in line for line in server.first_lines)
    assert server.json("/api/runs")["runs"] == []
    assert server.json("/api/jobs/weather")["counts"] == {"to-be-recomputed": 4}
    assert server.get("/api/runs/abc")[0] == 404
    assert not home.exists()
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    assert [r["counts"]["executed"] for r in server.json("/api/runs")["runs"]] == [14]


WAITING_JOB = """
import pathlib
import time

from memodag import job, op


@op
def wait_for_flag(context):
    while not pathlib.Path(__file__).with_name("go").exists():
        time.sleep(0.05)
    return 1


@job
def waiting():
    wait_for_flag()
"""


def test_ctrl_c_stops_the_ui_while_a_live_view_is_open(start_ui, tmp_path):
    import signal
    import time

    home = tmp_path / "home"
    (tmp_path / "waiting.py").write_text(WAITING_JOB)
    run = subprocess.Popen(
        [sys.executable, "-m", "memodag.cli.main", "job", "execute", "-f", "waiting.py"],
        cwd=tmp_path,
        env=subprocess_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server = start_ui(home=home)
        started: list = []
        deadline = time.monotonic() + 60
        while not started and time.monotonic() < deadline:
            started = server.json("/api/runs?status=STARTED")["runs"]
            time.sleep(0.1)
        assert started
        stream = urllib.request.urlopen(
            f"{server.url}api/runs/{started[0]['run_id']}/stream", timeout=30
        )
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline() == b"event: update\n"
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(15) == 130  # stopped promptly, as the CLI reports Ctrl-C
        stream.close()
    finally:
        (tmp_path / "go").write_text("")
        run.wait(60)
