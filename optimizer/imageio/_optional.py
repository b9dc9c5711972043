"""Optional libraries, looked up at call time (tests replace :func:`imagecodecs` to run without it)."""

from __future__ import annotations

from typing import Any

__all__ = ["imagecodecs"]


def imagecodecs() -> Any:
    """The imagecodecs module when installed (the ``jxl`` extra), else None.

    Returns:
        The module, or None.
    """
    try:
        import imagecodecs as module
    except ImportError:
        return None
    return module
