"""Loading: any source (path, bytes, PIL image, numpy array) into the pixel contract, every bad input an
:class:`~optimizer.errors.InvalidImageError`.

Order of work for a file: refuse what is not a regular file (a FIFO, ``/dev/zero``, a folder) without
reading it; read it (its size counted against the memory budget); read the header only; enforce the pixel
limit and the memory budget from it; check integrity where the format allows it without decoding (every
PNG chunk CRC); decode the first frame (JPEG strictly: :mod:`._jpeg`; 16-bit colour at full precision:
:mod:`._wide`); split alpha; convert colour to sRGB and apply the EXIF orientation (:mod:`._colour`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from struct import error as struct_error
from typing import Literal

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile

from .._files import describe_os_error, open_regular
from ..errors import InvalidImageError, InvalidParameterError, ResourceLimitError
from ._arrays import from_array
from ._colour import Colour, orient, orientation, to_srgb
from ._jpeg import decode_jpeg
from ._jxl import JXL_SIGNATURES, from_jxl
from ._pixels import split_alpha
from ._probe import PNG_SIGNATURE, check_png_chunks, open_header, pillow_guard_error
from ._warn import ImageWarning, reissue, thread_warnings, warn
from ._wide import decode_wide
from .image import COLOR_MODES, ColorMode, Image, ImageInfo, ImageSource
from .limits import (
    check_memory,
    check_pixels,
    decode_memory,
    get_max_pixels,
    max_memory_budget,
    validate_max_pixels,
)
from .metadata import capture_metadata

__all__ = ["load_image"]

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError, struct_error)
_truncated_warned = False


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    max_memory: int | None = None,
    animated: Literal["first", "error"] = "first",
    name: str | None = None,
    color: ColorMode = "srgb",
) -> Image:
    """Load ``source`` into the pixel contract (see :mod:`optimizer.imageio`).

    Args:
        source: A path, bytes, a PIL image, a numpy array or an :class:`Image` (returned as is once checked).
        max_pixels: Pixel limit for this call (default: the process default, :func:`get_max_pixels`).
        max_memory: Memory budget in bytes for this call (default: ``OPTIMIZER_MAX_MEMORY`` or a share of
            the machine's memory; ``0`` for none).
        animated: What to do with a file of several frames: use the ``"first"``, or refuse it (``"error"``).
        name: Label for errors about in-memory sources.
        color: ``"srgb"`` converts an embedded ICC profile's colours to sRGB (a :class:`GamutWarning` says
            when colours outside sRGB were clipped); ``"keep"`` leaves RGB pixels in their profile and names
            it in ``image.profile`` (scoring still compares in sRGB, encoders embed the profile).

    Returns:
        The loaded :class:`Image`.

    Raises:
        InvalidImageError: for anything that is not a usable image (:class:`ImageTooLargeError` over the
            pixel limit).
        ResourceLimitError: when decoding would need more memory than the budget.
    """
    limit = get_max_pixels() if max_pixels is None else validate_max_pixels(max_pixels)
    max_memory_budget(max_memory)  # validates an explicit budget before any work
    if animated not in ("first", "error"):
        raise InvalidParameterError(f"animated must be 'first' or 'error', got {animated!r}")
    if color not in COLOR_MODES:
        raise InvalidParameterError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    keep = color == "keep"
    if isinstance(source, Image):
        check_pixels(source.width, source.height, limit, source.source)
        return source
    if isinstance(source, np.ndarray):
        image = from_array(source, name or "<array>", limit)
        return image if name else replace(image, source=None)
    if isinstance(source, PILImage.Image):
        known = name or getattr(source, "filename", None) or None
        label = known or "<PIL image>"
        check_pixels(source.width, source.height, limit, label)
        with thread_warnings() as caught:
            image = _from_pil(source, label, animated, data=None, keep=keep)
        reissue(caught, label)
        return image if known else replace(image, source=None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), name or "<bytes>", limit, animated, max_memory, keep)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _from_bytes(_read_file(path, max_memory), str(path), limit, animated, max_memory, keep)
    raise InvalidImageError(
        f"cannot load an image from {type(source).__name__}; expected a path, bytes, PIL image or numpy array",
        name,
    )


def _read_file(path: Path, max_memory: int | None) -> bytes:
    """The bytes of a regular file; anything else (FIFO, device, folder, missing) is an InvalidImageError."""
    label = str(path)
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            check_memory(size, f"reading a {size:,}-byte file", label, max_memory=max_memory)
            return handle.read()
    except FileNotFoundError:
        raise InvalidImageError("no such file", label) from None
    except IsADirectoryError:
        raise InvalidImageError("is a directory, not an image file", label) from None
    except OSError as exc:
        raise InvalidImageError(f"cannot read file: {describe_os_error(exc)}", label) from None


def _from_bytes(data: bytes, label: str, limit: int, animated: str, max_memory: int | None, keep: bool) -> Image:
    if len(data) == 0:
        raise InvalidImageError("file is empty (0 bytes)", label)
    if data.startswith(JXL_SIGNATURES):
        return from_jxl(data, label, limit, animated, max_memory)
    if data.startswith(PNG_SIGNATURE):
        check_png_chunks(data, label)
    _warn_if_truncation_allowed()
    with thread_warnings() as caught:
        pil = open_header(data, label)
        check_pixels(pil.width, pil.height, limit, label)
        check_memory(
            decode_memory(pil.width, pil.height, len(data)),
            f"decoding a {pil.width}x{pil.height} image",
            label,
            max_memory=max_memory,
        )
        image = _from_pil(pil, label, animated, data=data, keep=keep)
    reissue(caught, label)
    return replace(image, info=replace(image.info, file_bytes=len(data)))


def _from_pil(pil: PILImage.Image, label: str, animated: str, data: bytes | None, keep: bool = False) -> Image:
    """Decode the first frame of an opened PIL image (header already checked) into the contract."""
    try:
        n_frames = int(getattr(pil, "n_frames", 1) or 1)
        if n_frames > 1 and animated == "error" and pil.format != "MPO":
            raise InvalidImageError(
                f"animated image with {n_frames} frames; only still images are accepted (animated='error')",
                label,
            )
        if n_frames > 1:
            pil.seek(0)
        fmt, src_mode = pil.format, pil.mode
        icc = pil.info.get("icc_profile") or None
        turn = orientation(pil, label)
        wide = decode_wide(pil, data, n_frames, label) if data else None
        colour: Colour
        alpha: np.ndarray | None
        if wide is not None:
            colour, alpha = wide
        else:
            pixels = pil
            if data is not None and fmt in ("JPEG", "MPO") and isinstance(pil, ImageFile.ImageFile):
                pixels = decode_jpeg(pil, data, label)
            else:
                pil.load()
            colour, alpha = split_alpha(pixels, label)
        rgb, icc_converted, bit_depth, profile = to_srgb(colour, icc, label, keep=keep)
        metadata = capture_metadata(pil, icc)
    except InvalidImageError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise pillow_guard_error(exc, label) from None
    except MemoryError:
        raise ResourceLimitError(f"not enough memory to decode a {pil.width}x{pil.height} image", label) from None
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(f"cannot decode image data (truncated or corrupt): {exc}", label) from None
    if src_mode == "1":
        bit_depth = 1
    rgb, alpha = orient(rgb, turn), (None if alpha is None else orient(alpha, turn))
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImageError(f"image has zero size ({rgb.shape[1]}x{rgb.shape[0]})", label)
    info = ImageInfo(
        format=fmt,
        mode=src_mode,
        bit_depth=bit_depth,
        n_frames=n_frames,
        exif_transposed=turn != 1,
        icc_converted=icc_converted,
        had_alpha=alpha is not None,
    )
    return Image(rgb=rgb, alpha=alpha, source=label, info=info, metadata=metadata, profile=profile)


def _warn_if_truncation_allowed() -> None:
    """Say once when an application has let Pillow fill truncated files (the loader never changes the flag)."""
    global _truncated_warned
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _truncated_warned:
        _truncated_warned = True
        warn(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process: truncated GIF, BMP, TIFF, WebP and "
            "other files decoded by Pillow may load with their missing part filled (PNG and JPEG are still "
            "checked)",
            ImageWarning,
        )
