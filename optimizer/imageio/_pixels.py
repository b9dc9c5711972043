"""Decoded Pillow images to colour and alpha planes: palette, premultiplied and keyed transparency, 16- and
32-bit greyscale, float images. An alpha channel that is opaque everywhere is dropped."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from ..errors import InvalidImageError
from ._arrays import check_unit_range
from ._colour import Colour
from ._wide import alpha_or_none

__all__ = ["split_alpha"]


def split_alpha(pil: PILImage.Image, label: str) -> tuple[Colour, np.ndarray | None]:
    """Separate colour and alpha; an alpha channel that is fully opaque is dropped."""
    mode = pil.mode
    if mode.startswith("I;16") or mode == "I":
        return _wide_grey(pil, label)
    if mode == "F":
        arr = np.asarray(pil, dtype=np.float32)
        check_unit_range(arr, label, "floating-point image")
        return arr[..., None], None
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in pil.info
        pil = pil.convert("RGBA" if has_alpha else "RGB")
        mode = pil.mode
    elif mode in ("RGBa", "La"):
        pil = pil.convert("RGBA" if mode == "RGBa" else "LA")
        mode = pil.mode
    elif mode in ("L", "RGB", "1") and "transparency" in pil.info:
        pil = pil.convert("RGBA" if mode == "RGB" else "LA")
        mode = pil.mode
    if mode in ("RGBA", "LA"):
        alpha = alpha_or_none(np.asarray(pil.getchannel("A")), 255)
        return pil.convert("RGB" if mode == "RGBA" else "L"), alpha
    if mode in ("L", "RGB", "CMYK", "LAB"):
        return pil, None
    return pil.convert("RGB"), None  # 1, RGBX, YCbCr, HSV...


def _wide_grey(pil: PILImage.Image, label: str) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit (``I;16*``) or 32-bit (``I``) greyscale as uint16, with its ``tRNS`` key as alpha."""
    arr = np.asarray(pil)
    if pil.mode == "I":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InvalidImageError(
                f"32-bit integer image holds values in [{lo}, {hi}]; only [0, 65535] (16-bit data) is accepted",
                label,
            )
    arr = arr.astype(np.uint16)
    alpha = None
    key = pil.info.get("transparency")
    if isinstance(key, int):
        alpha = alpha_or_none(np.where(arr == key, 0, 65535).astype(np.uint16), 65535)
    return arr[..., None], alpha
