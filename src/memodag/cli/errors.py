"""How the CLI reports user mistakes: a message on stderr and an exit code, no traceback.

Exit codes: 0 success, 1 a failed run, user code that raised (a step, a ``data_version``
function, in any command), a storage failure or an unexpected error, 2 a usage, config or
definition mistake, 130 canceled (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import IO, Any

import click

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2

DEBUG_ENV = "MEMODAG_DEBUG"
DEBUG_HINT = (
    f"Run `memodag --debug ...` (before the command) or set {DEBUG_ENV}=1 to see the traceback."
)
_DEBUG_META = "memodag.debug"


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """Whether tracebacks are shown: ``--debug``, ``-v`` on run commands, or $MEMODAG_DEBUG=1."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_DEBUG_META):
        return True
    return os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes"}


def enable_debug(ctx: click.Context) -> None:
    """Show tracebacks for the rest of this invocation (``ctx.meta`` is shared by all contexts)."""
    ctx.meta[_DEBUG_META] = True


class CliError(click.ClickException):
    """A mistake the user can fix: printed as ``Error: message`` with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, hint: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance too
        self.hint = hint
        # decided now: by the time click shows the error, the command's context is gone
        self.debug = debug_enabled()

    def show(self, file: IO[Any] | None = None) -> None:
        cause = self.__cause__
        if self.debug and cause is not None:
            traceback.print_exception(cause, file=sys.stderr)
        click.echo(click.style("Error: ", fg="red", bold=True) + self.format_message(), err=True)
        if self.hint and not (self.debug and "--debug" in self.hint):
            click.echo(click.style(self.hint, dim=True), err=True)


def exit_code_for(exc: BaseException) -> int:
    """2 for mistakes in definitions, config or the request (memoization asked of unversioned
    ops included); 1 for anything that went wrong running: user code that raised (a step, or a
    ``data_version`` function, which ``list-versions`` runs too) and storage that failed. So one
    failure gives one exit code whichever command met it."""
    from memodag.errors import (
        ConfigError,
        DataVersionError,
        DefinitionError,
        ExecutionError,
        MemoizationError,
        StepExecutionError,
    )

    if isinstance(exc, StepExecutionError | DataVersionError):
        return EXIT_RUN_FAILED
    if isinstance(exc, ConfigError | DefinitionError | ExecutionError | MemoizationError):
        return EXIT_USAGE
    return EXIT_RUN_FAILED
