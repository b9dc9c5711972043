"""numpy arrays as input: uint8, uint16, bool and float in ``[0, 1]``; ``H x W``, or ``H x W x 1|2|3|4`` where 2
and 4 channels carry alpha last."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidImageError
from ._colour import grey_to_rgb
from .image import Image, ImageInfo
from .limits import check_pixels

__all__ = ["check_unit_range", "from_array"]


def check_unit_range(arr: np.ndarray, label: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise InvalidImageError(f"{what} contains NaN or infinity", label)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidImageError(
            f"{what} must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}] (scale it, or pass 8-bit data as uint8)",
            label,
        )


def from_array(arr: np.ndarray, label: str, limit: int) -> Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InvalidImageError(f"array must be H x W, or H x W x 1, 2, 3 or 4 channels, got shape {arr.shape}", label)
    height, width, channels = arr.shape
    check_pixels(width, height, limit, label)
    if arr.dtype == np.uint8:
        scaled = arr.astype(np.float32) / np.float32(255.0)
        depth = 8
    elif arr.dtype == np.uint16:
        scaled = arr.astype(np.float32) / np.float32(65535.0)
        depth = 16
    elif arr.dtype == np.bool_:
        scaled = arr.astype(np.float32)
        depth = 1
    elif np.issubdtype(arr.dtype, np.floating):
        scaled = arr.astype(np.float32)
        check_unit_range(scaled, label, "float array")
        depth = 32
    else:
        raise InvalidImageError(
            f"unsupported array dtype {arr.dtype}; use uint8, uint16, bool or float in [0, 1]", label
        )
    alpha: np.ndarray | None = None
    if channels in (2, 4):
        alpha = np.ascontiguousarray(scaled[..., -1])
        scaled = scaled[..., :-1]
        if float(alpha.min()) >= 1.0:
            alpha = None
    rgb = grey_to_rgb(scaled)
    info = ImageInfo(format=None, mode=f"array[{arr.dtype}]x{channels}", bit_depth=depth, had_alpha=alpha is not None)
    return Image(rgb=rgb, alpha=alpha, source=label, info=info)
