"""The Starlette app of ``memodag ui``: the JSON API, server-sent events, the static front end.

Read-only: every route is a GET. Instance and job work runs on one worker thread owned by the
app (``UiService`` is not shared across threads); the event loop only awaits it. No route opens
a path the client gives: static files come from the package's ``static`` folder only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from memodag.errors import MemodagError
from memodag.ui.service import MAX_LINES, MAX_STEPS, NotFound, UiService

STATIC_DIR = Path(__file__).parent / "static"
#: how often a live run's event log is read, in seconds
POLL_SECONDS = 0.25
T = TypeVar("T")

# no inline script or style, nothing from elsewhere: injected markup could not run anyway
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(service: UiService) -> Starlette:
    """The app serving ``service``; closing the app closes the service's instance."""
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memodag-ui")

    async def call(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    async def answer(fn: Callable[..., Any], *args: Any) -> Response:
        try:
            return JSONResponse(await call(fn, *args))
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except MemodagError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def runs(request: Request) -> Response:
        q = request.query_params
        return await answer(
            service.runs_page,
            q.get("job") or None,
            q.get("status") or None,
            _int(q.get("offset"), 0),
            _int(q.get("limit"), 50),
        )

    async def run(request: Request) -> Response:
        return await answer(service.run_detail, request.path_params["run_id"])

    async def run_events(request: Request) -> Response:
        q = request.query_params
        return await answer(
            service.run_events,
            request.path_params["run_id"],
            _int(q.get("start"), 0),
            _int(q.get("limit"), MAX_LINES),
        )

    async def run_timeline(request: Request) -> Response:
        return await answer(service.run_timeline, request.path_params["run_id"])

    async def run_steps(request: Request) -> Response:
        q = request.query_params
        return await answer(
            service.run_steps,
            request.path_params["run_id"],
            q.get("node") or "",
            _int(q.get("limit"), MAX_STEPS),
        )

    async def stream(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            await call(service.run_status, run_id)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        start = _int(request.query_params.get("start"), 0)
        return StreamingResponse(
            _follow(request, call, service, run_id, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def jobs(request: Request) -> Response:
        return await answer(service.job_names)

    async def job(request: Request) -> Response:
        return await answer(service.job_view, request.path_params["name"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await call(service.close)
        worker.shutdown(wait=False)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", runs),
            Route("/api/runs/{run_id}", run),
            Route("/api/runs/{run_id}/events", run_events),
            Route("/api/runs/{run_id}/steps", run_steps),
            Route("/api/runs/{run_id}/timeline", run_timeline),
            Route("/api/runs/{run_id}/stream", stream),
            Route("/api/jobs", jobs),
            Route("/api/jobs/{name:path}", job),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(_SecurityHeaders)],
        lifespan=lifespan,
    )


async def _follow(
    request: Request,
    call: Callable[..., Any],
    service: UiService,
    run_id: str,
    start: int,
) -> AsyncIterator[str]:
    """Server-sent events for a run: one ``update`` (new log lines, every step's state) each
    time its log grows, then ``end`` once the run has ended and its log is all sent."""
    sent, first = start, True
    while not await request.is_disconnected():
        update = await call(service.run_events, run_id, sent)
        if update["lines"] or first:
            first = False
            sent = update["next"]
            yield f"event: update\ndata: {json.dumps(update)}\n\n"
        if update["status"] != "STARTED":
            yield f"event: end\ndata: {json.dumps({'status': update['status']})}\n\n"
            return
        await asyncio.sleep(POLL_SECONDS)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def serve(service: UiService, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until interrupted; ``on_ready(url)`` once the socket listens."""
    import uvicorn

    app = create_app(service)
    # an open live view (server-sent events) never ends by itself: Ctrl-C must not wait for it
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        if server.started:
            shown = f"[{host}]" if ":" in host else host
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            on_ready(f"http://{shown}:{bound}/")

    server.startup = startup  # type: ignore[method-assign]
    server.run()
