"""Exception hierarchy.

Every error the package raises on purpose derives from :class:`OptimizerError`, and the specific ones
also derive from the builtin they resemble, so callers can catch either ``OptimizerError`` or the
familiar builtin (``ValueError``, ``KeyError``, ``FileNotFoundError``...). Messages state the rule and the
actual values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class OptimizerError(Exception):
    """Root of every error raised on purpose by this package."""


class InvalidImageError(OptimizerError, ValueError):
    """An input image cannot be used: unreadable, truncated, too large, zero-size, unsupported."""

    def __init__(self, reason: str, source: str | Path | None = None) -> None:
        self.reason = reason
        self.source = str(source) if source is not None else None
        message = f"{self.source}: {reason}" if self.source else reason
        super().__init__(message)


class ImageTooLargeError(InvalidImageError):
    """An image is over the pixel limit (the decompression-bomb guard); found before its pixels are decoded."""


class ResourceLimitError(OptimizerError, MemoryError):
    """Work refused because it would need more memory than the budget allows (estimated before allocating),
    or an allocation failed; the message names the estimate, the budget and how to raise it."""

    def __init__(self, reason: str, source: str | Path | None = None) -> None:
        self.reason = reason
        self.source = str(source) if source is not None else None
        message = f"{self.source}: {reason}" if self.source else reason
        super().__init__(message)


class OutputError(OptimizerError, OSError):
    """A result could not be written: the target is a folder or a device, the disk is full, permission denied.

    Nothing partial is left behind; the message names the path and the reason.
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        message = f"{self.path}: {reason}" if self.path else reason
        super().__init__(message)

    def __str__(self) -> str:  # OSError would otherwise format its own way
        return str(self.args[0])


class InputFileError(OptimizerError, ValueError):
    """An input file other than an image (a monitor state file, a JSON document) is unreadable or malformed;
    the message names the file and the reason."""


class ImageSizeMismatchError(OptimizerError, ValueError):
    """Reference and distorted images differ in size where equal sizes are required."""


class InvalidParameterError(OptimizerError, ValueError):
    """An encoder, transform, metric or study parameter is out of its allowed range or unknown."""


class UnknownNameError(OptimizerError, KeyError):
    """A codec, metric, profile, preset tier or other registry name does not exist."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class CodecUnavailableError(OptimizerError, RuntimeError):
    """A codec's library is not installed (e.g. JPEG XL without the ``jxl`` extra)."""


class EncodeError(OptimizerError, RuntimeError):
    """The encoder library failed on valid parameters."""


class WeightsNotFoundError(OptimizerError, FileNotFoundError):
    """Pretrained network weights are missing and cannot be downloaded."""


class ConfigError(OptimizerError, ValueError):
    """A configuration file or value is malformed: unknown keys, wrong types, bad syntax."""


class StudyError(OptimizerError, RuntimeError):
    """A tuning study cannot be created, resumed or joined as asked."""


class StudyStorageError(StudyError):
    """A study's storage, or what it stores, cannot be read: a corrupt or foreign database file, a journal
    with a malformed line, a folder where the file should be, a stored definition or trial attribute of the
    wrong shape. Bad input (exit 3), not a usage error: the message names the file (or the storage URL,
    password redacted) and the reason.

    Readers of stored records raise it without a ``source``; the code that opened the storage adds it
    (:meth:`at`), so every message names where the study lives.
    """

    def __init__(self, reason: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)

    def at(self, source: str) -> StudyStorageError:
        """This error, naming ``source`` (kept when it already names one)."""
        return self if self.source else type(self)(self.reason, source)


class StorageUnreachableError(StudyStorageError):
    """A database server named by a storage URL cannot be reached (yet): refused, timed out, wrong
    credentials. Workers waiting for their storage retry on it."""


class PresetError(OptimizerError, ValueError):
    """A preset file is malformed, from an unsupported version, or lacks the requested tier."""


class QualityCheckError(OptimizerError):
    """A quality check ran correctly and failed (exit code 1): a target not met, a budget exceeded."""


class NoPresetError(QualityCheckError):
    """A study finished without a trial that meets its target, so there is no preset to export.

    ``result`` holds the study's :class:`~optimizer.tuning.results.TuningResult` for inspection.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result
