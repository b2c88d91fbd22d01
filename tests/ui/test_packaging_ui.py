"""The UI's front end ships prebuilt inside the wheel: a clean clone and the wheel need no npm."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from e2e.test_packaging import wheel  # noqa: F401  (the built wheel, a fixture)
from ui.conftest import REPO

STATIC = REPO / "src" / "memodag" / "ui" / "static"


def test_the_wheel_ships_the_front_end(wheel: zipfile.ZipFile) -> None:  # noqa: F811
    names = set(wheel.namelist())
    for asset in (
        "index.html",
        "app.js",
        "app.css",
        "vendor/dagre.min.js",
        "vendor/dagre.LICENSE",
        "vendor/dagre.min.js.LEGAL.txt",
    ):
        assert f"memodag/ui/static/{asset}" in names, asset
    assert not any("node_modules" in name or "frontend" in name for name in names)


def test_the_vendored_layout_library_is_the_locked_one() -> None:
    """``ui/frontend/package-lock.json`` pins dagre; ``npm ci && npm run build`` copies that very
    file into ``static/vendor`` (so the committed file and the lockfile agree)."""
    lock = json.loads((REPO / "ui" / "frontend" / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/@dagrejs/dagre"]["version"]
    vendored = (STATIC / "vendor" / "dagre.min.js").read_text()
    assert f'"{version}"' in vendored
    built = (
        REPO / "ui" / "frontend" / "node_modules" / "@dagrejs" / "dagre" / "dist" / "dagre.min.js"
    )
    if built.exists():  # after `npm ci`: byte for byte what the build copies
        assert built.read_bytes() == Path(STATIC / "vendor" / "dagre.min.js").read_bytes()
