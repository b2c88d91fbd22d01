"""Finding the job a command acts on: ``-f FILE`` / ``-m MODULE``, ``-j JOB``, ``-c CONFIG.yaml``.

``job_options`` is the one decorator every job command shares (execute, reexecute, list, and
the versioning commands); it hands the command a ``JobSpec``, which ``load`` turns into a
``LoadedJob``. Runs launched from the CLI record their ``CodeLocation`` in tags, so a later
command (``reexecute``) finds the job again from the run id alone.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from memodag.cli.errors import DEBUG_HINT, CliError

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition

TAG_CODE_FILE = "memodag/code_file"
TAG_CODE_MODULE = "memodag/code_module"
TAG_WORKING_DIR = "memodag/working_dir"
TAG_JOB = "memodag/job"
CODE_LOCATION_TAGS = (TAG_CODE_FILE, TAG_CODE_MODULE, TAG_WORKING_DIR, TAG_JOB)


@dataclass(frozen=True)
class CodeLocation:
    """Where job definitions live: a Python file (absolute path) or an importable module.

    ``working_dir`` is put on ``sys.path`` before importing a module, as ``python -m`` would.
    """

    file: str | None = None
    module: str | None = None
    working_dir: str | None = None

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"module {self.module}"

    def to_tags(self, job_name: str) -> dict[str, str]:
        tags = {TAG_JOB: job_name}
        if self.file:
            tags[TAG_CODE_FILE] = self.file
        if self.module:
            tags[TAG_CODE_MODULE] = self.module
        if self.working_dir:
            tags[TAG_WORKING_DIR] = self.working_dir
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> CodeLocation | None:
        """The location a CLI-launched run recorded, or None for runs launched from Python."""
        file, module = tags.get(TAG_CODE_FILE), tags.get(TAG_CODE_MODULE)
        if not file and not module:
            return None
        return cls(file or None, module or None, tags.get(TAG_WORKING_DIR) or None)

    def load(self) -> ModuleType:
        """Import the file or module (user code runs here). Errors become ``CliError``s."""
        return _load_file(Path(self.file)) if self.file else _load_module(self.module or "", self)


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for on the command line, not loaded yet."""

    file: str | None = None
    module: str | None = None
    job_name: str | None = None
    config_files: tuple[str, ...] = ()

    @property
    def has_location(self) -> bool:
        return bool(self.file or self.module)

    def location(self) -> CodeLocation:
        if self.file and self.module:
            raise click.UsageError("give either -f/--file or -m/--module, not both")
        if self.file:
            return CodeLocation(file=str(Path(self.file).expanduser().resolve()))
        if self.module:
            return CodeLocation(module=self.module, working_dir=os.getcwd())
        raise click.UsageError("say where the job is defined: -f FILE.py or -m MODULE")

    def load(
        self, fallback: CodeLocation | None = None, fallback_job: str | None = None
    ) -> LoadedJob:
        """Import the code and pick the job; ``fallback`` is used when no -f/-m was given."""
        location = self.location() if self.has_location or fallback is None else fallback
        jobs = find_jobs(location.load())
        return LoadedJob(location, pick_job(jobs, self.job_name or fallback_job, location))

    def run_config(self) -> dict[str, Any]:
        """The -c files deep-merged in order (later files win); {} when none were given."""
        if not self.config_files:
            return {}
        from memodag.plan.run_config import load_run_config_files

        return load_run_config_files(self.config_files)


@dataclass(frozen=True)
class LoadedJob:
    location: CodeLocation
    job: JobDefinition

    @property
    def tags(self) -> dict[str, str]:
        """The tags that let a later command find this job again."""
        return self.location.to_tags(self.job.name)


def job_options(
    *,
    job: bool = True,
    config: bool = True,
    required: bool = True,
    default_location: str = "default: where the run's job was loaded from",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add -f/-m (and -j, -c) to a command and pass them as one ``spec: JobSpec`` argument.

    ``required=False`` is for commands that can do without the code, or find it elsewhere (a
    run's tags: ``spec.load(fallback=...)``); ``default_location`` says, in -f/-m's help, what
    the command does without them.
    """
    where = "" if required else f" ({default_location})"

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            spec = JobSpec(
                kwargs.pop("file", None),
                kwargs.pop("module", None),
                kwargs.pop("job_name", None),
                tuple(kwargs.pop("config_files", ()) or ()),
            )
            if required and not spec.has_location:
                raise click.UsageError("say where the job is defined: -f FILE.py or -m MODULE")
            return fn(*args, spec=spec, **kwargs)

        # keeps the command's name, docstring and the options declared below this decorator
        functools.update_wrapper(wrapper, fn)
        params: list[Callable[[Any], Any]] = []
        if config:
            params.append(
                click.option(
                    "-c",
                    "--config",
                    "config_files",
                    multiple=True,
                    type=click.Path(dir_okay=False),
                    metavar="CONFIG.yaml",
                    help="Run config YAML file; repeat to deep-merge several (later files win).",
                )
            )
        if job:
            params.append(
                click.option(
                    "-j",
                    "--job",
                    "job_name",
                    metavar="JOB",
                    help="The job to use; optional when the code defines exactly one.",
                )
            )
        params += [
            click.option(
                "-m",
                "--module",
                "module",
                metavar="MODULE",
                help="Python module defining the job, imported by name" + where + ".",
            ),
            click.option(
                "-f",
                "--file",
                "file",
                type=click.Path(dir_okay=False),
                metavar="FILE.py",
                help="Python file defining the job" + where + ".",
            ),
        ]
        for param in params:
            wrapper = param(wrapper)
        return wrapper

    return decorate


def find_jobs(module: ModuleType) -> dict[str, JobDefinition]:
    """Every ``JobDefinition`` a module holds at top level, by job name, in definition order."""
    from memodag.definitions.job import JobDefinition

    jobs: dict[str, JobDefinition] = {}
    for value in list(vars(module).values()):
        if isinstance(value, JobDefinition) and all(value is not j for j in jobs.values()):
            jobs.setdefault(value.name, value)
    return jobs


def pick_job(
    jobs: Mapping[str, JobDefinition], name: str | None, location: CodeLocation
) -> JobDefinition:
    """The job named ``name`` (or the only one), else a ``CliError`` that lists the choices."""
    listing = ", ".join(jobs) or "none"
    if name is not None:
        if name in jobs:
            return jobs[name]
        raise CliError(
            f"{location.describe()} has no job named '{name}'; jobs found: {listing}",
            hint="`memodag job list -f FILE` or `-m MODULE` lists them.",
        )
    if not jobs:
        raise CliError(
            f"{location.describe()} defines no job (no module-level JobDefinition, e.g. from @job)"
        )
    if len(jobs) > 1:
        raise CliError(
            f"{location.describe()} defines {len(jobs)} jobs: {listing}; choose one with -j JOB"
        )
    return next(iter(jobs.values()))


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> dict; a value may contain '='."""
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="'--tag'")
        tags[key.strip()] = value
    return tags


# -- importing user code ------------------------------------------------------------------


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise CliError(f"job file {path} not found")
    name = _module_name_for(path)
    directory = str(path.parent)
    # The file's folder becomes importable so the file can import its neighbours, but last on
    # the path: a neighbour must never shadow an installed package (a `yaml.py` beside the job).
    if directory not in sys.path:
        sys.path.append(directory)
    from memodag.engine.execute import runs_refused_while_importing

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"{path} cannot be imported as Python code (expected a .py file)")
    module = importlib.util.module_from_spec(spec)
    # Registered before running so pickling (worker processes) and dataclasses find the module.
    sys.modules[name] = module
    try:
        with runs_refused_while_importing(f"job file {path}"):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _load_error(f"file {path}", exc) from exc
    return module


def _module_name_for(path: Path) -> str:
    """The file's stem when importing it by that name would find this very file; else a name
    that cannot clash (a file called ``yaml.py`` must not replace the real ``yaml``)."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        if found is None or (found.origin and Path(found.origin).resolve() == path):
            return stem
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() else "_" for c in stem)
    return f"memodag_job_file_{safe}_{digest}"


def _load_module(name: str, location: CodeLocation) -> ModuleType:
    from memodag.engine.execute import runs_refused_while_importing

    directory = location.working_dir or os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        with runs_refused_while_importing(f"module {name}"):
            return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"no module named '{name}' (searched {directory} and $PYTHONPATH)",
                hint="Give a file instead with -f PATH.py, or add its folder to PYTHONPATH.",
            ) from exc
        raise _load_error(f"module {name}", exc) from exc
    except Exception as exc:
        raise _load_error(f"module {name}", exc) from exc


def _load_error(what: str, exc: BaseException) -> CliError:
    """The error and the innermost line of user code that raised it, without import machinery."""
    from memodag.errors import MemodagError

    if isinstance(exc, MemodagError):
        return CliError(f"could not load {what}:\n{exc}")
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith("<frozen")
    ]
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"\n  at {exc.filename}:{exc.lineno}"
    elif frames:
        last = frames[-1]
        where = f"\n  at {last.filename}:{last.lineno}" + (f": {last.line}" if last.line else "")
    summary = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return CliError(
        f"could not load {what}: {summary}{where}",
        hint=DEBUG_HINT,
    )
