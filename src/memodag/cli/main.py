"""The ``memodag`` command: the root group, global flags, and how exceptions become exit codes.

Command groups live in ``memodag.cli.commands`` and are imported only when invoked, so
``memodag --help`` imports click and nothing of the engine. Exit codes: 0 success, 1 a failed run
or an unexpected error, 2 a usage, definition or config mistake (see ``memodag.cli.errors``).
"""

from __future__ import annotations

from typing import Any

import click

from memodag import __version__
from memodag.cli.errors import DEBUG_ENV, DEBUG_HINT, CliError, enable_debug, exit_code_for
from memodag.cli.lazy import LazyGroup

# One line per command group; add "gc": "memodag.cli.commands.gc:gc" and it appears in --help.
COMMAND_GROUPS = {
    "job": "memodag.cli.commands.job:job",
    "runs": "memodag.cli.commands.runs:runs",
    "gc": "memodag.cli.commands.gc:gc",
    "verify": "memodag.cli.commands.verify:verify",
    "tables": "memodag.cli.commands.tables:tables",
    "ui": "memodag.cli.commands.ui:ui",
}


class RootGroup(LazyGroup):
    """Turns exceptions escaping a command into a one-line error and an exit code.

    memodag's own errors (``MemodagError``) carry messages written for users, so they are shown
    as they are; anything else is unexpected and points at ``--debug`` for the traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:
            from memodag.errors import MemodagError

            if isinstance(exc, MemodagError):
                raise CliError(str(exc), exit_code_for(exc)) from exc
            raise CliError(f"{type(exc).__name__}: {exc}", 1, DEBUG_HINT) from exc


@click.group(
    cls=RootGroup,
    lazy_subcommands=COMMAND_GROUPS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(version=__version__, prog_name="memodag")
@click.option(
    "--debug",
    is_flag=True,
    help=f"Show full tracebacks for errors (or set {DEBUG_ENV}=1).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """memodag: data pipelines that never recompute what has not changed.

    Runs and their events are kept in the instance: a SQLite file under $MEMODAG_HOME (default:
    the nearest .memodag folder here or above, else ./.memodag), or the database named by
    $MEMODAG_INSTANCE_URL.

    \b
    Exit codes, the same in every command:
      0    success
      1    a run failed, user code raised (an op, a data_version function), storage failed
      2    a mistake in the command, the run config or the job definition
      130  canceled (Ctrl-C, SIGTERM)
    """
    if debug:
        enable_debug(ctx)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``memodag`` script."""
    cli.main(args=argv, prog_name="memodag")


if __name__ == "__main__":
    main()
