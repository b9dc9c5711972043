"""JSON-lines files (the alert log, the watcher's state): appended line by line, read back line by line.

A line cut short by a crash (a torn write) is expected at the end of such a file: readers skip it and
writers first terminate it, so the next append starts a line of its own.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import describe_os_error, open_regular, parse_json
from ..errors import InputFileError, OutputError

__all__ = ["JsonLines", "append_line", "end_torn_line", "open_append", "read_json_lines"]


@dataclass
class JsonLines:
    """What a JSON-lines file held: its objects (with line numbers), the lines that were not objects (with
    the reason), and whether the last line was torn (cut short, without its newline)."""

    entries: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    bad: list[tuple[int, str]] = field(default_factory=list)
    torn: bool = False


def open_append(path: Path, what: str) -> int:
    """Open ``path`` for appending (created if missing) without ever blocking; returns the descriptor.

    A folder, or a FIFO nobody reads, is refused at once (an :class:`OutputError` naming ``what``).

    Args:
        path: The file.
        what: What it is, for messages (``"alerts file"``).

    Returns:
        An open descriptor, in blocking mode, that the caller closes.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        reason = "a FIFO with no reader" if exc.errno == errno.ENXIO else describe_os_error(exc)
        raise OutputError(f"cannot write the {what}: {reason}", path) from None
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def append_line(path: Path, line: str, what: str) -> None:
    """Append one line (a newline is added) in a single write.

    Args:
        path: The file.
        line: The text, without its newline.
        what: What the file is, for messages.

    Raises:
        OutputError: naming the file and the reason (full disk, permission...).
    """
    payload = (line + "\n").encode("utf-8")
    fd = open_append(path, what)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise OutputError(f"cannot write the {what}: {describe_os_error(exc)}", path) from None
    finally:
        os.close(fd)


def end_torn_line(path: Path, what: str) -> None:
    """Terminate a last line cut short by a crash (regular files only; a missing file is left missing).

    Args:
        path: The file.
        what: What the file is, for messages.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot open the {what}: {describe_os_error(exc)}", path) from None
    if not stat.S_ISREG(mode):
        return
    try:
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    except OSError as exc:
        raise OutputError(f"cannot write the {what}: {describe_os_error(exc)}", path) from None


def read_json_lines(path: Path, what: str) -> JsonLines:
    """Read every line of a JSON-lines file; lines that are not JSON objects are listed, never raised.

    Args:
        path: The file (a missing file reads as empty).
        what: What the file is, for messages.

    Returns:
        The objects, the bad lines (line number, reason) and whether the last line was torn.

    Raises:
        InputFileError: when the path cannot be read at all (a folder, a FIFO, permission denied).
    """
    try:
        with open_regular(path) as handle:
            data = handle.read()
    except FileNotFoundError:
        return JsonLines()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the {what}: {describe_os_error(exc)}") from None
    out = JsonLines()
    lines = data.split(b"\n")
    last = len(lines) if lines[-1] else len(lines) - 1  # the number of the last line that holds anything
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = parse_json(raw, f"{path}:{number}", error=InputFileError)
        except InputFileError as exc:
            if number == last and not data.endswith(b"\n") and raw.lstrip().startswith(b"{"):
                out.torn = True
                continue
            out.bad.append((number, str(exc).removeprefix(f"{path}:{number}: ")))
            continue
        if not isinstance(value, dict):
            out.bad.append((number, f"expected a JSON object, got {type(value).__name__}"))
            continue
        out.entries.append((number, value))
    return out
