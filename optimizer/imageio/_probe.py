"""Format probing: which format a file is, its header (size, mode, frames) read without decoding pixels, and
integrity checks that need no decoding.

Headers are read through Pillow's format plugins directly, trying only the supported formats, rather than
through ``PIL.Image.open``: ``Image.open`` applies Pillow's process-wide decompression-bomb guard, and the
pixel limit that counts is the caller's (:mod:`.limits`), checked right after. Other formats Pillow knows
are named in the error, never decoded.
"""

from __future__ import annotations

import io
import zlib
from struct import error as struct_error  # raised by some Pillow plugins on garbage headers

from PIL import Image as PILImage
from PIL import ImageFile

from ..errors import ImageTooLargeError, InvalidImageError, ResourceLimitError

__all__ = [
    "PNG_SIGNATURE",
    "SUPPORTED_FORMATS",
    "check_png_chunks",
    "open_header",
    "pillow_guard_error",
]

#: Formats the loader accepts: Pillow format names, plus JXL through imagecodecs. MPO is Pillow's name for a
#: JPEG with extra images (a phone photo with a depth map).
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM", "TGA", "JXL"})

#: How every PNG file starts.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Order matters for formats without a signature: TGA is tried last.
_PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "AVIF", "TIFF", "BMP", "PPM", "TGA")
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
# What Pillow's plugins raise on a header they cannot parse ("not this format, or a broken one").
_HEADER_ERRORS = (SyntaxError, IndexError, TypeError, struct_error)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError)


def check_png_chunks(data: bytes, label: str) -> None:
    """Walk the chunks to IEND, checking every CRC (a scan: nothing is decompressed or allocated).

    Pillow checks the CRCs of the chunks before the image data, but stops inflating once it has the pixels
    and checks no IDAT CRC: a PNG that lost its end (IEND, the zlib checksum) or has damaged image data
    would otherwise load. libpng and browsers refuse both; so do we, with the chunk and offset in the message.

    Args:
        data: The whole file (starting with :data:`PNG_SIGNATURE`).
        label: The source named in errors.
    """
    pos, end = len(PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > end:
            raise InvalidImageError(f"truncated PNG: data ends at byte {end:,} before the IEND chunk", label)
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        stop = pos + 8 + length
        if stop + 4 > end:
            raise InvalidImageError(
                f"truncated PNG: chunk {kind!r} at byte {pos:,} needs {length:,} bytes, the file ends first", label
            )
        if zlib.crc32(data[pos + 4 : stop]) != int.from_bytes(data[stop : stop + 4], "big"):
            raise InvalidImageError(f"corrupt PNG: CRC mismatch in chunk {kind!r} at byte {pos:,}", label)
        if kind == b"IEND":
            return
        pos = stop + 4


def open_header(data: bytes, label: str) -> ImageFile.ImageFile:
    """Parse the header of a supported format with Pillow (no pixels decoded).

    Args:
        data: The whole file.
        label: The source named in errors.

    Returns:
        The opened (not loaded) Pillow image.

    Raises:
        InvalidImageError: for an unsupported format (named when Pillow knows it), a HEIC file, or a header
            that cannot be read.
    """
    PILImage.init()  # registers every plugin once; later calls return at once
    prefix = data[:16]
    failure: tuple[str, BaseException] | None = None
    for fmt in _PILLOW_FORMATS:
        entry = PILImage.OPEN.get(fmt)
        if entry is None:  # a format this Pillow build lacks (AVIF without libavif)
            continue
        factory, accept = entry
        verdict = accept(prefix) if accept is not None else True
        if not verdict or isinstance(verdict, str):  # a string is Pillow's "maybe, but unsupported" note
            continue
        try:
            return factory(io.BytesIO(data), "")
        except PILImage.DecompressionBombError as exc:
            raise pillow_guard_error(exc, label) from None
        except MemoryError:
            raise ResourceLimitError("not enough memory to read the image header", label) from None
        except _HEADER_ERRORS as exc:
            if accept is not None and failure is None:  # its signature matched: the header is broken
                failure = (fmt, exc)
        except _READ_ERRORS as exc:
            raise InvalidImageError(f"cannot read {fmt} header (corrupt or truncated): {exc}", label) from None
    if failure is not None:
        failed, error = failure
        raise InvalidImageError(f"cannot read {failed} header (corrupt or truncated): {error}", label)
    other = _other_format(data)
    if other is not None:
        raise InvalidImageError(f"unsupported format {other}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}", label)
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise InvalidImageError("HEIC/HEIF is not supported; convert it to PNG, JPEG or AVIF first", label)
    raise InvalidImageError(
        f"not a recognised image, or a corrupt/truncated one ({len(data):,} bytes; first bytes {data[:8]!r})",
        label,
    )


def pillow_guard_error(exc: BaseException, label: str) -> ImageTooLargeError:
    """The error for Pillow's own decompression-bomb guard firing (GIF/MPO frames, TIFF tiles).

    Args:
        exc: Pillow's ``DecompressionBombError``.
        label: The source named in the error.

    Returns:
        An :class:`ImageTooLargeError` that says how to raise Pillow's guard, which this package never changes.
    """
    guard = PILImage.MAX_IMAGE_PIXELS
    return ImageTooLargeError(
        f"over Pillow's own decompression-bomb guard ({exc}); this package never changes it: an application "
        f"that trusts this image raises PIL.Image.MAX_IMAGE_PIXELS (now {guard}) itself",
        label,
    )


def _other_format(data: bytes) -> str | None:
    """Name the format of a file Pillow recognises but the loader does not accept (header only)."""
    try:
        with PILImage.open(io.BytesIO(data)) as other:
            return str(other.format)
    except Exception:  # noqa: BLE001 - any failure just means "not recognised"
        return None
