"""The Typer application, global options and the error-to-exit-code mapping."""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, NoReturn

import typer

from .. import __version__
from ..errors import (
    CodecUnavailableError,
    ImageSizeMismatchError,
    InputFileError,
    InvalidImageError,
    OptimizerError,
    OutputError,
    PresetError,
    QualityCheckError,
    ResourceLimitError,
    StudyStorageError,
    WeightsNotFoundError,
)
from ._output import err_console

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_DEPENDENCY = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="optimizer",
    help="Find the smallest image encodings that still look right.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"optimizer {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """Find the smallest image encodings that still look right."""
    _state["debug"] = debug


def debug_enabled() -> bool:
    return _state["debug"]


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception."""
    bad_input = (InvalidImageError, ImageSizeMismatchError, PresetError, InputFileError, OutputError)
    if isinstance(exc, (*bad_input, ResourceLimitError, StudyStorageError)):
        return EXIT_INPUT
    if isinstance(exc, (CodecUnavailableError, WeightsNotFoundError)):
        return EXIT_DEPENDENCY
    if isinstance(exc, QualityCheckError):
        return EXIT_CHECK_FAILED
    if isinstance(exc, OptimizerError):  # InvalidParameterError, ConfigError, UnknownNameError, StudyError...
        return EXIT_USAGE
    if isinstance(exc, FileNotFoundError):
        return EXIT_INPUT
    if isinstance(exc, ImportError):  # a missing or broken third-party package; one of ours failing is a bug
        internal = (exc.name or "").split(".")[0] == "optimizer"
        return EXIT_INTERNAL if internal else EXIT_DEPENDENCY
    return EXIT_INTERNAL


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one error line (plain text, never wrapped) and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {_escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def fail_batch(problems: Sequence[tuple[str, str]], total: int, noun: str) -> NoReturn:
    """The end of a batch in which some inputs could not be processed (the rule every batch command follows:
    everything else was processed and reported first): one error line naming the first such file and the
    reason, and how many there were, then exit 3.

    Args:
        problems: ``(path, reason)`` of every input that could not be processed (at least one).
        total: How many inputs the batch had.
        noun: What the inputs are called, plural (``pairs``, ``images``).
    """
    path, reason = problems[0]
    where = reason if reason.startswith(path) else f"{path}: {reason}"
    more = " (the first of them; all are listed above)" if len(problems) > 1 else ""
    fail(f"{len(problems)} of {total} {noun} could not be processed: {where}{more}", EXIT_INPUT)


@contextlib.contextmanager
def stop_on_interrupt(stop: threading.Event, what: str) -> Iterator[None]:
    """The first Ctrl-C sets ``stop`` (the work then stops after the ``what`` in progress, keeping what
    finished); a second one stops at once (``KeyboardInterrupt``). Only in the main thread, where signal
    handlers can be set; elsewhere Ctrl-C keeps its usual meaning."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err_console.print(f"stopping after the {what} in progress (Ctrl-C again to stop at once)", highlight=False)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``optimizer`` console script and ``python -m optimizer``."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result) if isinstance(result, int) else EXIT_OK
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:  # click's own usage errors in non-standalone mode end up here
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    except _interruptions():
        err_console.print("interrupted; finished work has been kept", highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except _usage_exceptions() as exc:  # bad option, missing argument, unknown command, bad value
        return _report_usage_error(exc)
    except Exception as exc:  # noqa: BLE001 - the one place where every error becomes an exit code
        code = exit_code_for(exc)
        if debug:
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        if code == EXIT_INTERNAL:
            message = f"{type(exc).__name__}: {message} (re-run with --debug for the traceback)"
        err_console.print(f"[bold red]error:[/] {_escape(message)}", highlight=False, soft_wrap=True)
        return code


def _click_modules() -> list[Any]:
    """The click implementations the installed Typer may raise from: its bundled copy (``typer._click``,
    Typer 0.22 and later) and the real click (earlier Typers, and Typer's own callbacks)."""
    modules = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    return modules


def _usage_exceptions() -> tuple[type[BaseException], ...]:
    return tuple(module.ClickException for module in _click_modules())


def _interruptions() -> tuple[type[BaseException], ...]:
    """Ctrl-C, and click's Abort (which it raises for Ctrl-C at a prompt)."""
    aborts = [module.Abort for module in _click_modules() if hasattr(module, "Abort")]
    return (KeyboardInterrupt, typer.Abort, *aborts)


def _report_usage_error(exc: BaseException) -> int:
    """Print a click usage error (with the usage line and a hint, as click does) and map it: usage errors
    exit 2; a file option that cannot be opened is bad input (3)."""
    show = getattr(exc, "show", None)
    if callable(show):
        show()
    else:  # pragma: no cover - every click exception has show()
        err_console.print(f"error: {_escape(str(exc))}", highlight=False, soft_wrap=True)
    usage = [module.UsageError for module in _click_modules()]
    return EXIT_USAGE if isinstance(exc, tuple(usage)) else EXIT_INPUT


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
