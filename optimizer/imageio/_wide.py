"""16-bit colour PNG and TIFF at full precision.

Pillow reads 16-bit colour PNG (RGB, RGBA, grey+alpha) and 16-bit RGB/RGBA TIFF at 8 bits; these are decoded
with imagecodecs (the ``jxl`` extra) instead, including a PNG ``tRNS`` key and TIFF premultiplied alpha.
Without imagecodecs, for an animated 16-bit PNG or an unusual TIFF layout, Pillow's 8-bit reading is used
and a :class:`PrecisionWarning` says so.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import TiffImagePlugin

from ..errors import InvalidImageError
from . import _optional
from ._probe import PNG_SIGNATURE
from ._warn import PrecisionWarning, warn

__all__ = ["alpha_or_none", "decode_wide"]


def alpha_or_none(alpha: np.ndarray, full: int) -> np.ndarray | None:
    """Alpha as float32 in [0, 1], or None when it is opaque everywhere (``full`` is the opaque value)."""
    if int(alpha.min()) == full:
        return None
    return alpha.astype(np.float32) / np.float32(full)


def _png_ihdr(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR, or (0, -1) when the header is not where it should be."""
    if len(data) < 26 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return 0, -1
    return data[24], data[25]


def _wide_layout(pil: PILImage.Image, data: bytes) -> str | None:
    """How a 16-bit colour file that Pillow reads at 8 bits is laid out; None for every other file.

    ``"png"``; ``"tiff"`` (straight or no alpha), ``"tiff-premultiplied"`` (associated alpha); or
    ``"other"`` for a 16-bit colour TIFF whose layout is left to Pillow.
    """
    if pil.format == "PNG":
        depth, colour_type = _png_ihdr(data)
        return "png" if depth == 16 and colour_type in (2, 4, 6) else None
    if not isinstance(pil, TiffImagePlugin.TiffImageFile):
        return None
    tags = pil.tag_v2
    bits, photometric, samples = tags.get(258, ()), tags.get(262), tags.get(277, 1)
    if not bits or any(b != 16 for b in bits) or (photometric, samples) in ((1, 1), (0, 1)):
        return None  # 8-bit, or 16-bit greyscale (Pillow keeps those at 16 bits)
    extra = tuple(tags.get(338, ()))
    simple = tags.get(259, 1) != 7 and tags.get(284, 1) == 1  # not JPEG-compressed, not planar
    if simple and photometric == 2 and samples in (3, 4) and extra in ((), (2,), (1,)):
        return "tiff-premultiplied" if extra == (1,) else "tiff"
    return "other"


def decode_wide(
    pil: PILImage.Image, data: bytes, n_frames: int, label: str
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A 16-bit colour PNG or TIFF decoded at full precision with imagecodecs; None when it does not apply.

    Returns (uint16 ``H x W x 1|3`` colour, alpha or None). When the file is 16-bit colour but cannot be
    decoded here, Pillow will read it at 8 bits: say so with a :class:`PrecisionWarning`.
    """
    layout = _wide_layout(pil, data)
    if layout is None:
        return None
    codecs = _optional.imagecodecs()
    codec = None if codecs is None else (codecs.PNG if layout == "png" else codecs.TIFF)
    if codec is None or not codec.available:
        reason = "install imagecodecs, the 'jxl' extra, for full precision"
    elif layout == "png" and n_frames > 1:
        reason = "animated PNG frames are decoded by Pillow"
    elif layout == "other":
        reason = "this TIFF layout is decoded by Pillow"
    else:
        reason = None
    if reason is not None:
        warn(f"{label}: 16-bit colour {pil.format} read at 8-bit precision ({reason})", PrecisionWarning)
        return None
    try:
        # png_decode applies tRNS (RGB with a key comes back as RGBA); tiff_decode returns the first page.
        arr = codecs.png_decode(data) if layout == "png" else codecs.tiff_decode(data, index=0)
    except Exception as exc:  # noqa: BLE001 - imagecodecs raises its own error classes
        raise InvalidImageError(
            f"cannot decode 16-bit {pil.format} data (truncated or corrupt): {exc}", label
        ) from None
    if arr.dtype != np.uint16 or arr.shape[:2] != (pil.height, pil.width) or arr.ndim != 3:
        raise InvalidImageError(f"unexpected 16-bit {pil.format} decode: {arr.dtype} {arr.shape}", label)
    if arr.shape[2] == 3:
        return arr, None
    colour, alpha16 = arr[..., :-1], arr[..., -1]
    if layout == "tiff-premultiplied":
        scale = np.divide(65535.0, alpha16, out=np.zeros(alpha16.shape), where=alpha16 > 0)[..., None]
        colour = np.clip(np.rint(colour * scale), 0, 65535).astype(np.uint16)
    return np.ascontiguousarray(colour), alpha_or_none(alpha16, 65535)
