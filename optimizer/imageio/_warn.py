"""Warnings raised while loading, and the per-thread capture that re-issues Pillow's own warnings.

Pillow warns about files (corrupt EXIF, malformed MPO, decompression bombs) with plain ``UserWarning``\\ s that do
not name the file. Loading collects the warnings its thread raises (:func:`thread_warnings`) and, once the
pixels are loaded, re-issues each one once (:func:`reissue`): Pillow's ``DecompressionBombWarning`` is
dropped (the pixel limit speaks for it), Pillow's other ``UserWarning``\\ s become an :class:`ImageWarning`
naming the source, and the package's own warnings pass as they are.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from PIL import Image as PILImage

__all__ = ["GamutWarning", "IccWarning", "ImageWarning", "PrecisionWarning", "reissue", "thread_warnings", "warn"]

_PACKAGE = __name__.rpartition(".")[0]


class ImageWarning(UserWarning):
    """Something in a file was unusable but the pixels were still loaded (e.g. a broken EXIF block)."""


class IccWarning(ImageWarning):
    """An embedded ICC profile could not be used; the pixels were taken as sRGB."""


class GamutWarning(ImageWarning):
    """Converting a wide-gamut source (Display P3, Adobe RGB) to sRGB clipped colours outside sRGB."""


class PrecisionWarning(ImageWarning):
    """A source was read at lower precision than it stores (16-bit colour PNG without imagecodecs)."""


def warn(message: str, category: type[Warning]) -> None:
    """Warn at the first caller outside the loading package, whatever the depth of the loading code.

    Args:
        message: The warning text (it should name the source).
        category: The warning class.
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(_PACKAGE):
        back = frame.f_back
        if back is None:
            break
        frame, level = back, level + 1
    warnings.warn(message, category, stacklevel=level)


def reissue(caught: list[warnings.WarningMessage], label: str) -> None:
    """Re-issue the warnings collected while loading ``label`` (see the module docstring).

    Args:
        caught: What :func:`thread_warnings` recorded.
        label: The source, named in Pillow's warnings that do not name it.
    """
    seen: set[tuple[type[Warning], str]] = set()
    for record in caught:
        category, message = record.category, str(record.message)
        if issubclass(category, PILImage.DecompressionBombWarning) or (category, message) in seen:
            continue
        seen.add((category, message))
        if issubclass(category, ImageWarning) or not issubclass(category, UserWarning):
            warn(message, category)
        else:
            warn(f"{label}: {message}", ImageWarning)


_capture_lock = threading.Lock()
_capture_users = 0
_capture_context: Any = None
_capture_show: Any = None
_capture_local = threading.local()


def _route_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    records = getattr(_capture_local, "records", None)
    if records is None:
        _capture_show(message, category, filename, lineno, file, line)
    else:
        records.append(warnings.WarningMessage(message, category, filename, lineno, file, line))


@contextmanager
def thread_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning this thread raises inside the block (``catch_warnings(record=True)`` per thread).

    ``warnings.catch_warnings`` changes process-wide state and restores it on exit, so two threads whose
    blocks overlap out of order leave it broken (every later warning in the process swallowed into a dead
    list). Here the first thread in installs one capture (filter ``always``, a ``showwarning`` that routes
    each warning to the list of the thread that raised it, else to the previous ``showwarning``) and the last
    one out removes it, both under a lock, so concurrent loads keep their own warnings and leave the state
    as they found it. While any load runs, other threads' warnings are shown, each time they are raised.

    Yields:
        The list the warnings of this thread are appended to.
    """
    global _capture_users, _capture_context, _capture_show
    with _capture_lock:
        if _capture_users == 0:
            context = warnings.catch_warnings()
            context.__enter__()
            _capture_context, _capture_show = context, warnings.showwarning
            warnings.simplefilter("always")
            warnings.showwarning = _route_warning
        _capture_users += 1
    outer = getattr(_capture_local, "records", None)
    records: list[warnings.WarningMessage] = []
    _capture_local.records = records
    try:
        yield records
    finally:
        _capture_local.records = outer
        with _capture_lock:
            _capture_users -= 1
            if _capture_users == 0:
                # _capture_show stays set: a thread already inside _route_warning may still need it.
                context, _capture_context = _capture_context, None
                context.__exit__(None, None, None)
