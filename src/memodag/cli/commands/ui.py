"""``memodag ui``: the web UI on this instance (``memodag.ui``), read-only, on 127.0.0.1 by default.

Starlette and uvicorn are imported only here, when the command runs (``pip install
"memodag[ui]"``); a missing one is a usage error naming the extra.
"""

from __future__ import annotations

import os

import click

from memodag.cli.loading import JobSpec

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("ui")
@click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(dir_okay=False),
    metavar="FILE.py",
    help="Python file whose jobs get a job page and their full graph on run pages.",
)
@click.option("-m", "--module", "module", metavar="MODULE", help="The same, from a module.")
@click.option("-j", "--job", "job_name", metavar="JOB", help="Only this job of the file or module.")
@click.option(
    "-c",
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="CONFIG.yaml",
    help="Run config YAML for the job pages; repeat to deep-merge several (later files win).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback lets other machines read your runs.",
)
@click.option(
    "--port", default=3000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any)."
)
def ui(
    file: str | None,
    module: str | None,
    job_name: str | None,
    config_files: tuple[str, ...],
    host: str,
    port: int,
) -> None:
    """Start the web UI: runs (live while they execute), each run's graph coloured by outcome,
    and for the jobs of -f FILE / -m MODULE what a memoized run would recompute (with -c CONFIG
    files, re-read on each page load), and why.

    \b
    Example:
      memodag ui -f pipeline.py -c prod.yaml        # then open http://127.0.0.1:3000/
    """
    from memodag.cli.errors import CliError

    spec = JobSpec(file, module, job_name, tuple(config_files))
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CliError(
            f"`memodag ui` needs Starlette and uvicorn: {exc}",
            hint='install the extra: pip install "memodag[ui]"',
        ) from None
    jobs = {}
    if spec.has_location:
        from memodag.cli.loading import find_jobs, pick_job

        location = spec.location()
        found = find_jobs(location.load())
        jobs = {spec.job_name: pick_job(found, spec.job_name, location)} if spec.job_name else found
    if spec.config_files and not jobs:
        raise click.UsageError("-c CONFIG needs the job it configures: add -f FILE or -m MODULE")
    if spec.config_files:
        spec.run_config()  # a broken config file fails now, not on the first job page

    from memodag.storage.instance import URL_ENV, Instance, find_home
    from memodag.ui.server import serve
    from memodag.ui.service import UiService

    if host not in _LOOPBACK:
        click.echo(
            f"Warning: listening on {host}: anyone who can reach this machine can read your "
            "runs, configs (passwords masked) and logs. Use --host 127.0.0.1 to keep it local.",
            err=True,
        )

    def exists() -> bool:
        return bool(os.environ.get(URL_ENV)) or find_home().is_dir()

    def open_instance() -> Instance | None:
        # the UI only reads: it never leaves a stray .memodag behind (later runs below it
        # would find and use it); until a first run makes the instance, it shows no runs.
        # Opened on the server's one worker thread (SQLite connections stay on theirs).
        return Instance.get() if exists() else None

    if not exists():
        click.echo(f"No instance yet at {find_home()}: runs show up once a first run makes it.")
    else:
        where = f"${URL_ENV}" if os.environ.get(URL_ENV) else str(find_home())
        click.echo(f"Instance: {where}")
    service = UiService(open_instance, jobs, spec.config_files)

    def ready(url: str) -> None:
        shown = ", ".join(jobs) or "none (-f FILE or -m MODULE adds the job pages)"
        click.echo(f"memodag ui: {url}  (jobs: {shown}; Ctrl-C stops it)", err=False)

    serve(service, host, port, ready)
