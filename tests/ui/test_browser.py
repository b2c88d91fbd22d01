"""The web UI in a real browser (Chromium from the system's packages, driven by Playwright).

Screenshots are taken of each page; with ``MEMODAG_UI_SCREENSHOTS=docs/images`` they are saved
there for docs/ui.md (how the docs' images are made again).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ui.conftest import REPO, run_cli, subprocess_env

pytestmark = pytest.mark.browser

WEATHER = REPO / "examples" / "quickstart" / "weather.py"
MORE_DAYS = REPO / "examples" / "quickstart" / "more_days.yaml"
SCREENSHOTS_ENV = "MEMODAG_UI_SCREENSHOTS"


def _screenshot(page, tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 1000
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(target.read_bytes())


def _node(page, name: str):
    return page.locator(f"g.node[data-node='{name}']")


def _wait_status(page, name: str, status: str) -> None:
    page.wait_for_selector(f"g.node[data-node='{name}'][data-status='{status}']")


def test_runs_page_lists_runs_and_filters_by_status(start_ui, page, tmp_path):
    home = tmp_path / "home"
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    server = start_ui("-f", str(WEATHER), home=home)
    page.goto(server.url)
    rows = page.locator("#runs tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[1:3] == ["weather", "SUCCESS"] and cells[5:9] == ["0", "14", "0", "0"]
    _screenshot(page, tmp_path, "ui-runs.png")
    page.select_option("select[name=status]", "FAILURE")
    page.wait_for_function("location.hash.includes('status=FAILURE')")
    page.wait_for_selector("text=no runs")
    assert page.locator("#runs tbody tr").count() == 0


def test_flagship_run_pages_show_step_colours(start_ui, page, tmp_path):
    home = tmp_path / "home"
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    server = start_ui("-f", str(WEATHER), home=home)
    memoized_run, first_run = (r["run_id"] for r in server.json("/api/runs")["runs"])

    page.goto(f"{server.url}#/run/{first_run}")
    _wait_status(page, "report", "success")
    for name in ("station_readings", "clean", "summarize"):
        assert _node(page, name).get_attribute("data-status") == "success"
    # the mapped node is one node with its piece counts
    assert "6 success" in _node(page, "clean").text_content()
    # laid out by dagre: left to right along the edges
    xs = [_node(page, n).bounding_box()["x"] for n in ("station_readings", "clean", "report")]
    assert xs == sorted(xs) and xs[0] < xs[2]
    _node(page, "clean").click()
    step = page.locator("details.step[data-step='clean[station_2]']")
    step.locator("summary").click()
    assert "station_readings.result/station_2" in step.inner_text()
    _screenshot(page, tmp_path, "ui-run.png")
    # the timeline: one bar per step, by start time
    bars = page.locator("#timeline-svg g.bar")
    bars.first.wait_for()
    assert bars.count() == 14
    assert bars.first.get_attribute("data-step") == "station_readings"
    assert {bars.nth(i).get_attribute("data-status") for i in range(14)} == {"success"}
    # the event stream filters by step and level
    page.select_option("#log-step", "report")
    page.select_option("#log-level", "INFO")
    visible = page.locator("#log tr:not([hidden])")
    assert visible.count() >= 2
    assert set(visible.locator("td:nth-child(2)").all_inner_texts()) == {"report"}
    assert "report:" in page.locator("#log").inner_text()

    page.goto(f"{server.url}#/run/{memoized_run}")
    _wait_status(page, "report", "memoized")
    assert _node(page, "clean").get_attribute("data-status") == "memoized"
    assert page.locator("#run-counts").inner_text().startswith("0 executed · 14 memoized")


LIVE_JOB = """
import pathlib
import time

from memodag import job, op

FLAG = pathlib.Path(__file__).with_name("go")


@op
def first(context):
    return 1


@op
def wait_for_flag(context, x):
    while not FLAG.exists():
        time.sleep(0.05)
    context.log.info("flag seen, going on")
    return x + 1


@op
def last(context, y):
    return y


@job
def live():
    last(wait_for_flag(first()))
"""


@pytest.mark.parametrize(
    "execution",
    [
        None,
        "execution: {multiprocess: {config: {max_concurrent: 2}}}",
        "execution: {dask: {config: {n_workers: 1}}}",
    ],
    ids=["in_process", "multiprocess", "dask"],
)
def test_a_live_run_is_followed_to_its_end(start_ui, page, tmp_path, execution):
    home = tmp_path / "home"
    job_file = tmp_path / "live_job.py"
    job_file.write_text(LIVE_JOB)
    config = []
    if execution:
        (tmp_path / "execution.yaml").write_text(execution + "\n")
        config = ["-c", str(tmp_path / "execution.yaml")]
    server = start_ui("-f", str(job_file), home=home)
    run = subprocess.Popen(
        [sys.executable, "-m", "memodag.cli.main", "job", "execute", "-f", str(job_file), *config],
        cwd=tmp_path,
        env=subprocess_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        runs: list = []
        while not runs and time.monotonic() < deadline:
            runs = server.json("/api/runs?status=STARTED")["runs"]
            time.sleep(0.1)
        assert runs, "the run never showed as STARTED"
        page.goto(f"{server.url}#/run/{runs[0]['run_id']}")
        _wait_status(page, "wait_for_flag", "running")
        assert page.locator("#live").inner_text() == "live"
        assert _node(page, "first").get_attribute("data-status") == "success"
        assert _node(page, "last").get_attribute("data-status") == "pending"
        if execution is None:
            _screenshot(page, tmp_path, "ui-live.png")
        (tmp_path / "go").write_text("")
        # no reload: the server-sent events turn the steps green as they finish
        _wait_status(page, "wait_for_flag", "success")
        _wait_status(page, "last", "success")
        page.wait_for_selector("body[data-run-ended='1']")
        assert page.locator("#run-status").inner_text() == "SUCCESS"
        assert page.locator("#live").inner_text() == ""
        assert "flag seen, going on" in page.locator("#log").inner_text()
        assert run.wait(60) == 0
    finally:
        (tmp_path / "go").write_text("")
        if run.poll() is None:
            run.kill()


def test_job_view_marks_to_be_recomputed_after_a_config_change(start_ui, page, tmp_path):
    home = tmp_path / "home"
    run_cli("job", "execute", "-f", str(WEATHER), home=home, cwd=tmp_path)
    stored = start_ui("-f", str(WEATHER), home=home)
    page.goto(f"{stored.url}#/job/weather")
    _wait_status(page, "report", "stored")
    assert _node(page, "clean").get_attribute("data-status") == "stored"

    changed = start_ui("-f", str(WEATHER), "-c", str(MORE_DAYS), home=home)
    page.goto(f"{changed.url}#/jobs")
    page.click("#jobs a")
    for name in ("station_readings", "clean", "summarize", "report"):
        _wait_status(page, name, "to-be-recomputed")
    _node(page, "station_readings").click()
    why = page.locator("#outputs tr[data-output='station_readings.result']").inner_text()
    assert "config field 'days' changed (30 -> 60)" in why
    _screenshot(page, tmp_path, "ui-job.png")


HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'

HOSTILE_JOB = f"""
from memodag import Field, job, op

HOSTILE = {HOSTILE!r}


@op(config_schema={{"note": Field(str, default_value=HOSTILE)}})
def careless(context):
    context.log.warning("logged: " + HOSTILE)
    raise ValueError("failed: " + HOSTILE)


@job
def hostile():
    careless()
"""


def test_user_strings_are_shown_as_text_never_as_markup(start_ui, page, tmp_path):
    """A log line, an error and a config value (shown in a table cell) carrying markup are
    shown as text. (Op, job and output names cannot carry markup: memodag refuses any name that
    is not an identifier, before the UI could see it.)"""
    home = tmp_path / "home"
    job_file = tmp_path / "hostile_job.py"
    job_file.write_text(HOSTILE_JOB)
    config = tmp_path / "hostile.yaml"
    config.write_text(
        textwrap.dedent(
            """
            ops:
              careless:
                config:
                  note: "<img src=x onerror=window.pwned=3><script>window.pwned=4</script>"
            """
        )
    )
    run_cli(
        "job",
        "execute",
        "-f",
        str(job_file),
        "-c",
        str(config),
        home=home,
        cwd=tmp_path,
        check=False,
    )
    server = start_ui("-f", str(job_file), home=home)
    run_id = server.json("/api/runs")["runs"][0]["run_id"]
    page.goto(f"{server.url}#/run/{run_id}")
    _wait_status(page, "careless", "failed")
    _node(page, "careless").click()
    page.locator("#run-config summary").click()
    page.wait_for_selector("#log tr[data-kind='LOG']")
    assert "window.pwned=1</script>" in page.locator("details.step pre.error").inner_text()
    assert "logged: <script>" in page.locator("#log").inner_text()
    assert "<img src=x onerror=window.pwned=3>" in page.locator("#run-config").inner_text()
    # nothing was parsed as markup: no injected element exists, nothing ran
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.pwned === undefined")
    _screenshot(page, tmp_path, "ui-escaped.png")


def test_stages_are_drawn_as_groups(start_ui, page, tmp_path):
    warehouse = REPO / "examples" / "warehouse" / "warehouse.py"
    server = start_ui("-f", str(warehouse), home=tmp_path / "home", cwd=tmp_path)
    page.goto(f"{server.url}#/job/warehouse")
    _wait_status(page, "orders", "to-be-recomputed")
    for stage, node in (("raw", "orders"), ("model", "by_customer")):
        box = page.locator(f"g.group[data-stage='{stage}'] rect").bounding_box()
        inner = _node(page, node).bounding_box()
        assert box["x"] <= inner["x"] and inner["x"] + inner["width"] <= box["x"] + box["width"]
        assert box["y"] <= inner["y"] and inner["y"] + inner["height"] <= box["y"] + box["height"]
