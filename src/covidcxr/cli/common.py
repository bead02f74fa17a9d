"""What every command shares: the one error line and exit codes, progress bars (plain lines
off a terminal), and the listing of skipped files."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from covidcxr.wording import plural


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


#: Exit status of the commands that read inputs (predict, segment predict, explain); README,
#: "Exit codes". Usage errors (a bad flag, a missing model, an output refused) exit 2.
EXIT_SOME_FAILED = 1
EXIT_NONE_READ = 3


def list_skipped(failures: list[tuple[Path, str]]) -> None:
    """The files a batch command could not use, with their reasons, on stderr."""
    if failures:
        from covidcxr.io import escape_path

        typer.echo(f"{plural(len(failures), 'file')} skipped:", err=True)
        for path, reason in failures:
            typer.echo(f"  {escape_path(path)}: {reason}", err=True)


def finish(done: int, failures: list[tuple[Path, str]]) -> None:
    """List the skipped files, then exit 0 when nothing failed, :data:`EXIT_SOME_FAILED` when
    some inputs failed and :data:`EXIT_NONE_READ` when none could be used, so scripts notice."""
    list_skipped(failures)
    if done == 0:
        typer.echo("error: no input could be read (see the files skipped above)", err=True)
        raise typer.Exit(EXIT_NONE_READ)
    if failures:
        raise typer.Exit(EXIT_SOME_FAILED)


def evaluation_folder(model: Path) -> Path:
    """Where ``evaluate`` writes without ``--out``: inside a model or run folder of the user's,
    ``./NAME-evaluation`` for a pretrained model (the package is never written into)."""
    from covidcxr import zoo

    if zoo.is_pretrained(zoo.resolve(model)):
        return Path(f"{model}-evaluation")
    return model / "evaluation"


@contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar with ETA on stderr; yields the ``progress(done, total)`` callback. When
    stderr is not a terminal (a log file, a pipe), plain lines at every tenth instead."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        yield progress_lines(description)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


#: Fewer items than this get no progress lines in a log file.
MIN_PROGRESS_LINES = 20


def progress_lines(description: str) -> Callable[[int, int], None]:
    """``progress(done, total)`` that writes ``description: done/total`` to stderr when a
    further tenth of the work is done: a log file gets about ten lines, no control characters."""
    shown = {"tenth": -1}

    def update(done: int, total: int) -> None:
        if 0 < total < MIN_PROGRESS_LINES:  # a handful of files: the results say enough
            return
        tenth = 10 * done // total if total else 0
        if tenth > shown["tenth"] and (done or not total):
            shown["tenth"] = tenth
            typer.echo(f"{description}: {done:,}/{total:,}", err=True)

    return update


class ProgressBars:
    """Hands out progress callbacks for library functions; each new bar replaces the last."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._context = None

    def __call__(self, description: str) -> Callable[[int, int], None] | None:
        self.close()
        if self.quiet:
            return None
        self._context = progress_bar(description, quiet=False)
        return self._context.__enter__()

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
