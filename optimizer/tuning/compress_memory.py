"""Keeping ``compress`` within a couple of full-size images: pixel layout and freed memory.

Internal to :mod:`optimizer.tuning.compress_image` and :mod:`optimizer.tuning.compress_writer`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

from ..imageio import Image

__all__ = ["channel_first", "return_freed_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def return_freed_memory() -> None:
    """Hand memory freed by an encoder or a decoder back to the system.

    glibc keeps freed heap memory for reuse: after a full-size AVIF encode of a 16 MP photo about 200 MB of
    it stayed in the process, and the next full-size score stacked its own peak on top (measured in
    ``benchmarks/bench_compress_scale.py``). Called after each full-size encode and check only (a few
    milliseconds each), never per proxy probe.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def channel_first(image: Image) -> Image:
    """``image`` with its pixels stored channel by channel (the same values, an ``H x W x 3`` view).

    A scorer turns its images into ``1 x 3 x H x W`` tensors; stored this way, that tensor is a view of the
    image instead of a copy, which saves one full-size float32 image (190 MB at 16 MP) for the reference
    (kept as long as its scorer) and for each candidate checked. Images with alpha are composited for
    scoring anyway, so they are returned as they are.
    """
    import numpy as np

    if image.alpha is not None or image.rgb.transpose(2, 0, 1).flags.c_contiguous:
        return image
    planes = np.ascontiguousarray(image.rgb.transpose(2, 0, 1))
    return image.with_pixels(planes.transpose(1, 2, 0), None)
