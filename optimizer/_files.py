"""Reading and writing files safely: every module that takes a path from a user goes through here.

Reading (:func:`open_regular`, :func:`read_regular`, :func:`read_toml`, :func:`read_json`): only regular files
are read. A FIFO, a device (``/dev/zero``), a socket or a folder is refused at once, never waited on or read
forever; the check is made on the opened descriptor (opened without blocking), so a file swapped between a
check and the open cannot slip through. JSON nested deeper than :data:`MAX_JSON_DEPTH` is refused with a
clear error rather than a ``RecursionError``.

Writing (:func:`write_atomic`): see its docstring for permissions, symlinks and failures.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import ConfigError, OptimizerError, OutputError

__all__ = [
    "MAX_JSON_DEPTH",
    "NotRegularFileError",
    "commit_staged",
    "describe_os_error",
    "discard_staged",
    "file_kind",
    "open_regular",
    "parse_json",
    "read_json",
    "read_regular",
    "read_toml",
    "source_times",
    "stage_file",
    "write_atomic",
    "write_atomic_checked",
]

#: Deepest nesting of arrays and objects accepted in a JSON file (the package's own files use fewer than 10).
MAX_JSON_DEPTH = 64

_KINDS = (
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


class NotRegularFileError(OSError):
    """A path names something other than a regular file (a FIFO, a device, a socket, a folder)."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words.

    Args:
        mode: ``os.stat_result.st_mode``.

    Returns:
        ``"regular file"``, ``"folder"``, ``"FIFO (named pipe)"``, ``"character device"``...
    """
    for test, name in _KINDS:
        if test(mode):
            return name
    return "regular file" if stat.S_ISREG(mode) else "special file"


def describe_os_error(exc: OSError) -> str:
    """A short reason for an ``OSError`` met while opening, reading or writing a path (for one-line errors).

    Args:
        exc: The error.

    Returns:
        ``"no such file"``, ``"permission denied"``, ``"is a folder"``, ``"no space left on device"``...
    """
    if isinstance(exc, NotRegularFileError):
        return str(exc.strerror or exc)
    reasons = {
        errno.ENOENT: "no such file",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EISDIR: "is a folder",
        errno.ENOTDIR: "a parent of the path is not a folder",
        errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EFBIG: "file too large (a file size limit was reached)",
        errno.ENAMETOOLONG: "file name too long",
    }
    if exc.errno in reasons:
        return reasons[exc.errno]
    return str(exc.strerror or exc).lower()


# --------------------------------------------------------------------------------------------------
# Reading


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a regular file for binary reading, refusing anything else without blocking.

    Args:
        path: The file (symlinks are followed).

    Returns:
        An open binary file object (use it in a ``with`` block).

    Raises:
        OSError: ``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, :class:`NotRegularFileError`
            (a FIFO, device or socket), or the system's error; :func:`describe_os_error` words it.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", os.fspath(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(errno.EINVAL, f"is a {file_kind(mode)}, not a regular file", os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a regular file (see :func:`open_regular` for what is refused).

    Args:
        path: The file.

    Returns:
        Its bytes.
    """
    with open_regular(path) as handle:
        return handle.read()


def read_toml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Parse a UTF-8 TOML file.

    Args:
        path: The file.
        what: What the file is, for messages (``"monitor config"``).

    Returns:
        The parsed table.

    Raises:
        ConfigError: naming ``what`` and the path, for a missing, unreadable, non-regular or malformed file
            (never a raw ``OSError``, decode error or ``RecursionError``).
    """
    file = Path(path)
    try:
        text = read_regular(file).decode("utf-8")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{what} {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read {what}: {describe_os_error(exc)}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file}: not valid TOML: nested too deeply") from None


ErrorFactory = Callable[[str], OptimizerError]


def parse_json(text: str | bytes, source: str, *, error: ErrorFactory = ConfigError) -> Any:
    """Parse JSON text, turning every way it can be bad into one error.

    Args:
        text: The JSON (bytes are decoded as UTF-8).
        source: What the text is, named in messages (a path, ``"state.jsonl:12"``).
        error: Builds the exception from a one-line message (default :class:`ConfigError`).

    Returns:
        The parsed value (non-finite numbers written as ``NaN``/``Infinity`` literals are refused).

    Raises:
        OptimizerError: from ``error``, for invalid UTF-8, invalid JSON or nesting deeper than
            :data:`MAX_JSON_DEPTH`.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply (over {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:  # json.JSONDecodeError, and the non-finite literals
        raise error(f"{source}: not valid JSON: {exc}") from None
    if _depth_over(value, MAX_JSON_DEPTH):
        raise error(f"{source}: JSON nested too deeply (over {MAX_JSON_DEPTH} levels)")
    return value


def read_json(path: str | os.PathLike[str], what: str = "JSON file", *, error: ErrorFactory = ConfigError) -> Any:
    """Read and parse a JSON file (see :func:`parse_json`).

    Args:
        path: The file.
        what: What the file is, for messages.
        error: Builds the exception from a one-line message (default :class:`ConfigError`).

    Returns:
        The parsed value.
    """
    file = Path(path)
    try:
        data = read_regular(file)
    except OSError as exc:
        raise error(f"{file}: cannot read {what}: {describe_os_error(exc)}") from None
    return parse_json(data, str(file), error=error)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON (non-finite numbers are written as strings: "inf", "nan")')


def _depth_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (iterative: no recursion limit to hit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# --------------------------------------------------------------------------------------------------
# Writing


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, times_ns: tuple[int, int] | None = None) -> Path:
    """Write a whole file at once: a reader (or a crash) sees the old content or the new, never half of it.

    The data goes to a temporary file next to the target, which then replaces the target by a rename.

    * **Parents** are created as needed. Text is written as UTF-8.
    * **Permissions**: a new file gets ``0666`` less the umask, as with any other tool; replacing an existing
      file keeps its permission bits (its owner and group become the writer's, as with any rename).
    * **Symlinks** are written through: the file the link points to is replaced and the link stays (a
      dangling link creates its target); a symlink loop is an error.
    * **Refused targets**: a folder, a device (``/dev/full``, ``/dev/null``), a FIFO or a socket is never
      replaced by a file: :class:`~optimizer.errors.OutputError`.
    * **Failures**: a full disk, a quota, a read-only file system, a file size limit or any other ``OSError``
      is an :class:`~optimizer.errors.OutputError` naming the path; the temporary file is removed and the
      target keeps its previous content.
    * **Times**: ``times_ns`` (access, modification) in nanoseconds is set on the complete file before it
      takes its name (``--preserve-times``: :func:`source_times`).

    Args:
        path: The file to write.
        data: Bytes, or text (written as UTF-8).
        times_ns: Access and modification times to give the file (default: now).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    _write_then(target, data, lambda _: True, times_ns)
    return target


def write_atomic_checked(
    path: str | os.PathLike[str],
    data: bytes,
    check: Callable[[Path], bool],
    *,
    times_ns: tuple[int, int] | None = None,
) -> bool:
    """Like :func:`write_atomic`, but the written file takes its final name only when ``check`` (given the
    temporary file, complete on disk) returns true; otherwise nothing is left on disk.

    Args:
        path: The file to write.
        data: The bytes.
        check: Called with the complete temporary file; its answer decides whether the file is kept.
        times_ns: Access and modification times to give the file (default: now).

    Returns:
        Whether the file was kept.
    """
    return _write_then(Path(path), data, check, times_ns)


def source_times(path: str | os.PathLike[str]) -> tuple[int, int]:
    """A file's access and modification times in nanoseconds (what ``--preserve-times`` copies).

    Args:
        path: The file (symlinks followed).

    Returns:
        ``(st_atime_ns, st_mtime_ns)``.
    """
    info = os.stat(path)
    return info.st_atime_ns, info.st_mtime_ns


def stage_file(path: str | os.PathLike[str], data: bytes, times_ns: tuple[int, int] | None = None) -> Path:
    """Write ``data`` to a temporary file next to ``path`` (as :func:`write_atomic` would), without renaming it.

    The caller reads the staged file back (to check it), then gives it its final name with
    :func:`commit_staged` or removes it with :func:`discard_staged`. ``path`` is refused as by
    :func:`write_atomic` (a folder, a device, a FIFO); a staged file never replaces anything by itself.

    Args:
        path: The file the data is meant for.
        data: The bytes.
        times_ns: ``(atime_ns, mtime_ns)`` to give the file (``--preserve-times``), or None.

    Returns:
        The temporary file (a hidden name in ``path``'s folder).
    """
    return _stage(Path(path), bytes(data), times_ns)


def commit_staged(staged: Path, path: str | os.PathLike[str]) -> None:
    """Give a file from :func:`stage_file` its final name ``path`` (an atomic rename).

    Args:
        staged: The temporary file.
        path: The final name (written through a symlink, as :func:`write_atomic` does).
    """
    target = Path(path)
    try:
        os.replace(staged, Path(os.path.realpath(target)))
    except OSError as exc:
        discard_staged(staged)
        raise OutputError(f"cannot write: {describe_os_error(exc)}", target) from None


def discard_staged(staged: Path) -> None:
    """Remove a file from :func:`stage_file` (nothing happens when it is gone already).

    Args:
        staged: The temporary file.
    """
    staged.unlink(missing_ok=True)


def _write_then(
    target: Path, data: bytes | str, check: Callable[[Path], bool], times_ns: tuple[int, int] | None = None
) -> bool:
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    tmp = _stage(target, payload, times_ns)
    try:
        if not check(tmp):
            tmp.unlink(missing_ok=True)
            return False
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit_staged(tmp, target)
    return True


def _stage(target: Path, payload: bytes, times_ns: tuple[int, int] | None = None) -> Path:
    final = Path(os.path.realpath(target))
    try:
        existing: os.stat_result | None = os.stat(final)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise OutputError(f"cannot write: {describe_os_error(exc)}", target) from None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise OutputError(f"is a {file_kind(existing.st_mode)}; refusing to replace it with a file", target)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {final.parent}: {describe_os_error(exc)}", target) from None
    tmp = final.parent / f".{final.name[:120]}.{secrets.token_hex(4)}.tmp"
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        if existing is not None:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode) & 0o777)
        _write_all(fd, payload)
        if times_ns is not None:
            os.utime(fd if os.utime in os.supports_fd else tmp, ns=times_ns)
        os.close(fd)
        fd = -1
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write: {describe_os_error(exc)}", target) from None
        raise
    return tmp


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
