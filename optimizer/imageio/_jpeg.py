"""JPEG pixels, decoded strictly.

Pillow's JPEG decoder silences libjpeg's warnings, and libjpeg recovers from damaged data by filling what
is missing with grey: a JPEG cut in half with an end marker appended, or whose header claims 9000 x 9000
over 20 kB of data, would load as a grey image. Here libjpeg-turbo runs in strict mode (through
``simplejpeg``), where "premature end of data segment", "premature end of JPEG file" and "corrupt JPEG
data" are errors. Baseline and progressive, greyscale and YCbCr files are decoded this way (the pixels are
identical to Pillow's: same library, same settings); CMYK and YCCK files are checked the same way at 1/8
scale, then decoded by Pillow, which knows Adobe's inverted CMYK.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile

from ..errors import InvalidImageError

__all__ = ["decode_jpeg"]


def decode_jpeg(pil: ImageFile.ImageFile, data: bytes, label: str) -> PILImage.Image:
    """The pixels of the (first) JPEG image in ``data``, decoded strictly.

    Args:
        pil: The opened header (mode and size as Pillow reads them).
        data: The whole file (for MPO, the primary image comes first).
        label: The source named in errors.

    Returns:
        A loaded Pillow image in ``pil``'s mode.

    Raises:
        InvalidImageError: for truncated or corrupt data.
    """
    import simplejpeg  # type: ignore[import-untyped]

    try:
        if pil.mode in ("RGB", "L"):
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB" if pil.mode == "RGB" else "GRAY", strict=True)
        else:
            simplejpeg.decode_jpeg(data, colorspace="CMYK", min_height=1, min_width=1, min_factor=8, strict=True)
            pil.load()
            return pil
    except ValueError as exc:
        raise InvalidImageError(f"corrupt or truncated JPEG: {exc}", label) from None
    if arr.shape[:2] != (pil.height, pil.width):
        raise InvalidImageError(
            f"JPEG decodes to {arr.shape[1]}x{arr.shape[0]} but its header says {pil.width}x{pil.height}", label
        )
    plane = np.ascontiguousarray(arr[..., 0]) if pil.mode == "L" else arr
    return PILImage.fromarray(plane, pil.mode)
