"""File reading and writing shared by presets, reports, encoded outputs and configuration files."""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename, so a reader (or a crash) never
    sees half a file; parent folders are created. Text is written as UTF-8. Returns the path."""
    target = Path(path)
    _write_then(target, data, lambda _: True)
    return target


def write_atomic_checked(path: str | os.PathLike[str], data: bytes, check: Callable[[Path], bool]) -> bool:
    """Like :func:`write_atomic`, but the written file takes its final name only when ``check`` (given the
    temporary file, complete on disk) returns true; otherwise nothing is left on disk. Returns whether the
    file was kept."""
    return _write_then(Path(path), data, check)


def _write_then(target: Path, data: bytes | str, check: Callable[[Path], bool]) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        if not check(Path(tmp)):
            Path(tmp).unlink(missing_ok=True)
            return False
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def read_toml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Parse a UTF-8 TOML file; a missing, unreadable or malformed one is a :class:`ConfigError` that names
    ``what`` and the path (never a raw ``OSError`` or decode error)."""
    file = Path(path)
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {file} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {file} is a folder") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read {what}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
