"""Exception hierarchy.

Every error the package raises on purpose derives from :class:`OptimizerError`, and the specific ones
also derive from the builtin they resemble, so callers can catch either ``OptimizerError`` or the
familiar builtin (``ValueError``, ``KeyError``, ``FileNotFoundError``...). Messages state the rule and the
actual values.
"""

from __future__ import annotations

from pathlib import Path


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


class PresetError(OptimizerError, ValueError):
    """A preset file is malformed, from an unsupported version, or lacks the requested tier."""
