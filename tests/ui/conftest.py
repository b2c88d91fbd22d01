"""The web UI's fixtures: ``memodag ui`` in a subprocess, and a real Chromium driven by Playwright.

Without Starlette/uvicorn (``memodag[ui]``), Playwright or the system's Chromium the tests are
skipped (a user without the UI extra), unless ``MEMODAG_TEST_BROWSER=1``: then they fail, as CI
sets it because they are there (the ``MEMODAG_TEST_POSTGRES_URL`` pattern).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSER_ENV = "MEMODAG_TEST_BROWSER"
CHROMIUM = os.environ.get("MEMODAG_TEST_CHROMIUM", "/usr/bin/chromium")
SRC = Path(__file__).resolve().parents[2] / "src"
REPO = SRC.parent


def _missing(what: str) -> None:
    if os.environ.get(BROWSER_ENV) == "1":
        pytest.fail(f"{BROWSER_ENV}=1 but {what}")
    pytest.skip(f"{what} (set {BROWSER_ENV}=1 to make this a failure)")


@pytest.fixture(scope="session")
def ui_installed() -> None:
    """The ``ui`` extra is installed (else skip, or fail under ``MEMODAG_TEST_BROWSER=1``)."""
    absent = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if absent:
        _missing(f"{', '.join(absent)} not installed (pip install 'memodag[ui]')")


def subprocess_env(home: Path, instance_url: str | None = None) -> dict[str, str]:
    """The environment of a ``memodag`` subprocess: this worktree's code first, ``home`` as the
    instance (or the database ``instance_url``)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "250"}
    env.pop("MEMODAG_INSTANCE_URL", None)
    env["MEMODAG_HOME"] = str(home)
    if instance_url:
        env["MEMODAG_INSTANCE_URL"] = instance_url
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class UiServer:
    """A running ``memodag ui``: its URL, what it printed, and JSON GETs against it."""

    def __init__(self, process: subprocess.Popen[str], url: str, first_lines: list[str]) -> None:
        self.process = process
        self.url = url
        self.first_lines = first_lines

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (status, body)
        return body


@pytest.fixture
def start_ui(ui_installed: None, tmp_path: Path) -> Iterator[Callable[..., UiServer]]:
    """``start_ui(*args, home=...)`` starts ``memodag ui --port 0 ARGS`` and waits for its URL."""
    started: list[subprocess.Popen[str]] = []

    def start(
        *args: str, home: Path, cwd: Path | None = None, instance_url: str | None = None
    ) -> UiServer:
        process = subprocess.Popen(
            [sys.executable, "-m", "memodag.cli.main", "ui", "--port", "0", *args],
            cwd=cwd or tmp_path,
            env=subprocess_env(home, instance_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        lines: list[str] = []
        found: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if "memodag ui: http" in line and not found:
                    found.append(line.split("memodag ui: ", 1)[1].split()[0])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for _ in range(600):
            if found or process.poll() is not None:
                break
            reader.join(0.1)
        assert found, f"memodag ui printed no URL:\n{''.join(lines)}"
        return UiServer(process, found[0], lines)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_cli(
    *args: str, home: Path, cwd: Path, check: bool = True, instance_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``memodag ARGS`` with this worktree's code, the instance at ``home`` (or
    ``instance_url``)."""
    result = subprocess.run(
        [sys.executable, "-m", "memodag.cli.main", *args],
        cwd=cwd,
        env=subprocess_env(home, instance_url),
        capture_output=True,
        text=True,
        timeout=180,
    )
    if check:
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Chromium from the system's packages, headless, driven by Playwright."""
    if importlib.util.find_spec("playwright") is None:
        _missing("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=["--no-sandbox"],
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any, ui_installed: None) -> Iterator[Any]:
    """A fresh browser page; JavaScript errors on it fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.set_default_timeout(20_000)
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
