"""Keyword arguments renamed for one vocabulary across the CLI and the Python API, still accepted for one
release with a :class:`DeprecationWarning`."""

from __future__ import annotations

import warnings

__all__ = ["renamed"]


def renamed(new_value: int, old_value: int | None, *, old: str, new: str, default: int) -> int:
    """The value of the keyword ``new``, or of its deprecated spelling ``old`` when that was given instead."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old}= is deprecated and will be removed in the next release; use {new}=", DeprecationWarning, 3)
    if new_value != default and new_value != old_value:
        from .errors import InvalidParameterError

        raise InvalidParameterError(f"give {new}= (or the deprecated {old}=), not both")
    return old_value
