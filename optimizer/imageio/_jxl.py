"""JPEG XL input: the size is read from the codestream header (bare or in a container) before anything is
decoded, then imagecodecs (the ``jxl`` extra) decodes it. libjxl applies the orientation; no ICC conversion
is made here. EXIF and XMP are read from the container's ``Exif`` and ``xml `` boxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from ..errors import InvalidImageError
from . import _optional
from ._arrays import from_array
from .image import Image
from .limits import check_memory, check_pixels, decode_memory
from .metadata import Metadata, exif_tiff

__all__ = ["JXL_SIGNATURES", "from_jxl", "jxl_boxes", "jxl_metadata", "jxl_size"]

#: How a JPEG XL file starts: a bare codestream, or the ISO BMFF container.
JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")

_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def jxl_boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The ``(type, payload)`` of each box of a JPEG XL container, in order, up to the first that does not fit.

    Args:
        data: The whole file (a bare codestream has no boxes).

    Yields:
        Box type (4 bytes) and payload.
    """
    if data.startswith(b"\xff\x0a"):
        return
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > len(data):
                return
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = len(data) - pos
        if size < head:
            return
        yield kind, data[pos + head : pos + size]
        pos += size


def _codestream(data: bytes) -> bytes | None:
    """The start of the codestream: the file itself, or the first ``jxlc``/``jxlp`` box of a container."""
    if data.startswith(b"\xff\x0a"):
        return data
    for kind, payload in jxl_boxes(data):
        if kind == b"jxlc":
            return payload
        if kind == b"jxlp":
            return payload[4:]  # skips the part's index
    return None


def jxl_metadata(data: bytes) -> Metadata:
    """EXIF and XMP from a container's ``Exif`` and ``xml `` boxes (JPEG XL keeps ICC in the codestream,
    which imagecodecs does not expose).

    Args:
        data: The whole file.

    Returns:
        The :class:`Metadata` (empty for a bare codestream).
    """
    exif = xmp = None
    for kind, payload in jxl_boxes(data):
        if kind == b"Exif" and exif is None and len(payload) >= 4:
            offset = int.from_bytes(payload[:4], "big")  # where the TIFF header starts after this field
            exif = exif_tiff(payload[4 + offset :])
        elif kind == b"xml " and xmp is None:
            xmp = bytes(payload)
    return Metadata(exif=exif, xmp=xmp)


def jxl_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG XL SizeHeader, read before any pixel is decoded.

    Args:
        data: The whole file (bare codestream or container).

    Returns:
        The size, or None when no codestream header can be found.
    """
    stream = _codestream(data)
    if stream is None or len(stream) < 3 or not stream.startswith(b"\xff\x0a"):
        return None
    bits = int.from_bytes(stream[2:14], "little")  # the SizeHeader fits in 12 bytes
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        value = (bits >> pos) & ((1 << n) - 1)
        pos += n
        return value

    def dimension(small: bool) -> int:
        if small:
            return (read(5) + 1) * 8
        return read((9, 13, 18, 30)[read(2)]) + 1

    small = bool(read(1))
    height = dimension(small)
    ratio = read(3)
    if ratio == 0:
        width = dimension(small)
    else:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    return width, height


def from_jxl(data: bytes, label: str, limit: int, animated: str, max_memory: int | None = None) -> Image:
    """Decode a JPEG XL file after checking its size against the pixel limit and the memory budget.

    Args:
        data: The whole file.
        label: The source named in errors.
        limit: The pixel limit.
        animated: ``"first"`` or ``"error"``.
        max_memory: Explicit memory budget, or None for the default.

    Returns:
        The first frame, in the pixel contract.
    """
    size = jxl_size(data)
    if size is None:
        raise InvalidImageError("cannot read the JPEG XL size header (corrupt or truncated)", label)
    check_pixels(size[0], size[1], limit, label)
    check_memory(decode_memory(*size, len(data)), f"decoding a {size[0]}x{size[1]} image", label, max_memory=max_memory)
    codecs = _optional.imagecodecs()
    if codecs is None or not codecs.JPEGXL.available:
        raise InvalidImageError("JPEG XL input needs the 'jxl' extra (pip install 'optimizer[jxl]')", label)
    try:
        arr = codecs.jpegxl_decode(data)
    except Exception as exc:  # noqa: BLE001 - imagecodecs raises its own error classes per codec
        raise InvalidImageError(f"cannot decode JPEG XL data (truncated or corrupt): {exc}", label) from None
    n_frames = 1
    if arr.ndim == 4:
        n_frames = arr.shape[0]
        if n_frames > 1 and animated == "error":
            raise InvalidImageError(
                f"animated image with {n_frames} frames; only still images are accepted (animated='error')",
                label,
            )
        arr = arr[0]
    image = from_array(arr, label, limit)
    info = replace(image.info, format="JXL", n_frames=n_frames, file_bytes=len(data))
    return replace(image, info=info, metadata=jxl_metadata(data))
