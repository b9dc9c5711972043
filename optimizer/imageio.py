"""Image loading at the package boundary.

Everything inside the package works on one pixel contract: :class:`Image`, whose ``rgb`` is a float32
``H x W x 3`` array in ``[0, 1]`` (sRGB, straight, not premultiplied) with an optional float32 ``H x W``
``alpha`` in ``[0, 1]``. :func:`load_image` turns paths, bytes, PIL images and numpy arrays into that
contract, and every way an input can be bad into :class:`~optimizer.errors.InvalidImageError` (also a
``ValueError`` and an ``OptimizerError``) whose message names the source and the reason: empty, truncated or
corrupt files, non-images, unsupported formats (named when Pillow knows them, never decoded), zero size,
sizes over the pixel limit, refused animations, missing paths, directories. Library exceptions never escape
and are not chained.

What loading does, in order:

* reads the header only (format, size, frame count) and enforces the pixel limit *before* any pixel is
  decoded, so a small file that claims a huge size costs nothing. PNG files are also checked end to end
  (every chunk CRC, up to IEND) because Pillow would load a PNG that lost its last bytes or has damaged
  image data;
* decodes the first frame and splits off alpha (``LA``, ``RGBA``, ``PA``, premultiplied ``RGBa``/``La``,
  ``P`` with ``tRNS`` entries, ``L``/``RGB``/``I;16`` with a ``tRNS`` colour key); an alpha channel that is
  opaque everywhere is dropped (``info.had_alpha`` is False);
* converts colour through an embedded ICC profile to sRGB with LittleCMS (``info.icc_converted``). When the
  conversion moves no pixel by more than one 8-bit level (an embedded sRGB profile, or an equivalent one) the
  file's own pixels are kept, so a profile adds no rounding noise; this is decided on the pixels, never on
  the profile's name. A profile LittleCMS cannot read, or one for another colour space, is ignored with an
  :class:`IccWarning` and the pixels are taken as sRGB. CMYK without a profile uses Pillow's naive
  conversion; ``LAB`` images use the CIELAB D50 profile. PNG ``gAMA``/``cHRM`` chunks are not applied;
* applies the EXIF orientation (tag 0x0112, which Pillow also reads from XMP); ``info.exif_transposed``
  says whether pixels were turned. A broken EXIF block costs the orientation (an :class:`ImageWarning`),
  never the pixels;
* scales to float32 in ``[0, 1]``.

Warnings: Pillow's own ``UserWarning`` about a file (corrupt EXIF, malformed MPO...) is re-issued as an
:class:`ImageWarning` that names the source; its ``DecompressionBombWarning`` never escapes.

Pixel limit: :data:`DEFAULT_MAX_PIXELS` (100 megapixels) unless changed with :func:`set_max_pixels` or per
call with ``load_image(..., max_pixels=N)``. Importing this module, and :func:`set_max_pixels`, set Pillow's
own decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) to the same value, so plain Pillow calls
elsewhere in the process are guarded too. A per-call limit above it lifts Pillow's guard for that load only
(under a lock; concurrent loads with the default limit are not held up). An image over the limit is an
:class:`~optimizer.errors.ImageTooLargeError` (an :class:`InvalidImageError`) that gives its size (width x
height when the header was read, the pixel count when Pillow's guard, at twice the limit, fired first) and
the limit.

Bit depth (``info.bit_depth`` is the precision of the loaded pixels, not of the file):

* 8-bit sources (RGB, L, P, CMYK, ...) give multiples of 1/255 (``bit_depth`` 8; bilevel ``1`` gives 1).
* 16-bit greyscale PNG/TIFF (``I;16``) keeps full 16-bit precision, scaled by 1/65535 (``bit_depth`` 16).
* 16-bit colour PNG (RGB, RGBA, grey+alpha) and 16-bit RGB/RGBA TIFF: Pillow reads these at 8 bits, so
  they are decoded with imagecodecs (installed by the ``jxl`` extra) at full precision (``bit_depth`` 16),
  including a PNG ``tRNS`` key and TIFF premultiplied alpha; a non-sRGB ICC profile is then applied by
  LittleCMS at 16 bits into float. Without imagecodecs, for an animated 16-bit PNG or an unusual TIFF
  layout, Pillow's 8-bit reading is used (``bit_depth`` 8) and a :class:`PrecisionWarning` says so. 16-bit
  data with a non-sRGB profile and no imagecodecs is converted at 8 bits (``bit_depth`` 8).
* 32-bit integer images (``I``) must hold values in ``[0, 65535]`` and are read as 16-bit data; float images
  (``F``, float arrays) must hold finite values in ``[0, 1]``. Anything else is refused, never clipped. An ICC
  profile on float pixels is not applied (an :class:`IccWarning` says so).
* numpy arrays: uint8, uint16, bool and float in ``[0, 1]``; ``H x W``, or ``H x W x 1|2|3|4`` where 2 and 4
  channels carry alpha last.

Encoders see 8 bits per channel (:meth:`Image.to_uint8`), whatever was loaded.

Alpha: scores are computed on the image composited over a stated background (opaque white by default, see
:meth:`Image.for_scoring` and :meth:`Image.to_tensor`), because that is what a viewer sees on a page, and it
makes fully transparent pixels (whose colour nobody sees) count for nothing. Encoders that support alpha
(WebP, AVIF, PNG, JPEG XL) keep it as straight alpha next to the colour (:meth:`Image.to_uint8` and
:meth:`Image.to_pil` with ``keep_alpha=True``, the default); JPEG encodes the image composited over the same
background (``keep_alpha=False``).

Animated and multi-image files (GIF, APNG, animated WebP/AVIF/JPEG XL, multi-page TIFF): the first frame is
used, whatever frame a PIL image passed in was on, and ``info.n_frames`` says how many there are;
``animated="error"`` refuses them instead. MPO files (phone JPEGs carrying a depth map or stereo pair) are
still photos: their primary image is used and ``animated="error"`` does not refuse them.

JPEG XL is decoded by imagecodecs (the ``jxl`` extra) after its size has been read from the codestream
header; libjxl applies its orientation, and no ICC conversion is made by this module.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from struct import error as struct_error  # raised by some Pillow plugins on garbage headers
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile, UnidentifiedImageError

from .errors import ImageTooLargeError, InvalidImageError, InvalidParameterError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Image",
    "ImageInfo",
    "ImageSource",
    "IccWarning",
    "ImageWarning",
    "PrecisionWarning",
    "SUPPORTED_FORMATS",
    "WHITE",
    "get_max_pixels",
    "load_image",
    "set_max_pixels",
]

#: Largest accepted image, in pixels (100 megapixels: a 12000 x 8000 photo fits, a bomb does not).
DEFAULT_MAX_PIXELS = 100_000_000

#: Formats the loader accepts: Pillow format names, plus JXL through imagecodecs. Pillow is only asked to
#: parse these (other formats it knows are named in the error, never decoded). MPO is Pillow's name for a
#: JPEG with extra images.
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM", "TGA", "JXL"})

#: The default background for scoring and for encoders without alpha.
WHITE = (1.0, 1.0, 1.0)

ImageSource = Union[str, Path, bytes, bytearray, memoryview, "PILImage.Image", np.ndarray, "Image"]


class ImageWarning(UserWarning):
    """Something in a file was unusable but the pixels were still loaded (e.g. a broken EXIF block)."""


class IccWarning(ImageWarning):
    """An embedded ICC profile could not be used; the pixels were taken as sRGB."""


class PrecisionWarning(ImageWarning):
    """A source was read at lower precision than it stores (16-bit colour PNG without imagecodecs)."""


def _warn(message: str, category: type[Warning]) -> None:
    """Warn at the first caller outside this module, whatever the depth of the loading code."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_max_pixels = DEFAULT_MAX_PIXELS
_pillow_guard_lock = threading.Lock()
PILImage.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files are errors, never silently grey-filled

# Order matters for formats without a signature: TGA is tried last.
_PILLOW_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "AVIF", "TIFF", "BMP", "PPM", "TGA")
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx")
_ORIENTATION_TAG = 0x0112


def set_max_pixels(limit: int) -> None:
    """Set the pixel limit for every later load, and Pillow's decompression-bomb guard with it."""
    global _max_pixels
    _validate_limit(limit)
    with _pillow_guard_lock:
        _max_pixels = limit
        PILImage.MAX_IMAGE_PIXELS = limit


def get_max_pixels() -> int:
    """The pixel limit applied when a load does not name its own."""
    return _max_pixels


def _validate_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidParameterError(f"max_pixels must be a positive integer, got {limit!r}")


@dataclass(frozen=True)
class ImageInfo:
    """Where an image came from and what loading did to it."""

    format: str | None = None
    mode: str | None = None
    bit_depth: int = 8
    n_frames: int = 1
    exif_transposed: bool = False
    icc_converted: bool = False
    had_alpha: bool = False
    file_bytes: int | None = None


_KEEP: Any = object()


@dataclass(frozen=True, eq=False)
class Image:
    """An image in the package's pixel contract (float32 sRGB in [0, 1], optional float32 alpha)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    source: str | None = None
    info: ImageInfo = field(default_factory=ImageInfo)

    def __post_init__(self) -> None:
        rgb, alpha = self.rgb, self.alpha
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InvalidImageError(
                f"rgb must be an H x W x 3 array, got {getattr(rgb, 'shape', type(rgb).__name__)}", self.source
            )
        if rgb.dtype != np.float32:
            raise InvalidImageError(f"rgb must be float32, got {rgb.dtype}", self.source)
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise InvalidImageError(f"image has zero size ({rgb.shape[1]}x{rgb.shape[0]})", self.source)
        if alpha is not None:
            if not isinstance(alpha, np.ndarray) or alpha.dtype != np.float32:
                raise InvalidImageError(
                    f"alpha must be a float32 array, got {getattr(alpha, 'dtype', type(alpha).__name__)}",
                    self.source,
                )
            if alpha.shape != rgb.shape[:2]:
                raise InvalidImageError(f"alpha shape {alpha.shape} does not match image {rgb.shape[:2]}", self.source)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return (self.width, self.height)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    def for_scoring(self, background: tuple[float, float, float] = WHITE) -> np.ndarray:
        """RGB as a viewer sees it: straight alpha composited over an opaque ``background`` (RGB in [0, 1])."""
        if self.alpha is None:
            return self.rgb
        bg = _check_background(background)
        a = self.alpha[..., None]
        return (self.rgb * a + bg * (np.float32(1.0) - a)).astype(np.float32, copy=False)

    def to_tensor(self, device: Any = None, background: tuple[float, float, float] = WHITE) -> torch.Tensor:
        """The scoring pixels as a ``1 x 3 x H x W`` float32 torch tensor in [0, 1]."""
        import torch

        arr = np.ascontiguousarray(self.for_scoring(background).transpose(2, 0, 1))
        t = torch.from_numpy(arr).unsqueeze(0)
        return t.to(device) if device is not None else t

    def to_uint8(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> np.ndarray:
        """8-bit ``H x W x 3`` (or ``x 4`` with straight alpha kept), rounded to nearest."""
        if keep_alpha and self.alpha is not None:
            arr = np.concatenate([self.rgb, self.alpha[..., None]], axis=2)
        else:
            arr = self.for_scoring(background)
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)

    def to_pil(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> PILImage.Image:
        """An 8-bit PIL image (``RGBA`` when alpha is kept, else ``RGB`` composited over ``background``)."""
        arr = self.to_uint8(keep_alpha=keep_alpha, background=background)
        return PILImage.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")

    def with_pixels(self, rgb: np.ndarray, alpha: np.ndarray | None = _KEEP) -> Image:
        """A copy with new pixels (same source and info), used by transforms.

        Without ``alpha`` the current alpha is kept (a size change then needs ``alpha=`` resized too, or
        ``alpha=None`` to drop it), so a transform cannot lose transparency by forgetting it.
        """
        if alpha is _KEEP:
            alpha = self.alpha
            if alpha is not None and alpha.shape != np.shape(rgb)[:2]:
                raise InvalidImageError(
                    f"new pixels are {np.shape(rgb)[:2]} but the alpha kept is {alpha.shape}; "
                    "pass alpha= with matching size, or alpha=None to drop it",
                    self.source,
                )
        return replace(self, rgb=rgb, alpha=alpha)

    def __repr__(self) -> str:
        extra = ", alpha" if self.alpha is not None else ""
        return f"Image({self.width}x{self.height}{extra}, source={self.source!r})"


def _check_background(background: Any) -> np.ndarray:
    try:
        bg = np.asarray(background, dtype=np.float32)
    except (TypeError, ValueError):
        bg = np.zeros(0, np.float32)
    if bg.shape != (3,) or not np.all((bg >= 0.0) & (bg <= 1.0)):
        raise InvalidParameterError(f"background must be three values in [0, 1], got {background!r}")
    return bg


# --------------------------------------------------------------------------------------------------
# Loading


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = None,
    animated: Literal["first", "error"] = "first",
    name: str | None = None,
) -> Image:
    """Load ``source`` (path, bytes, PIL image, numpy array or :class:`Image`) into the pixel contract.

    ``max_pixels`` overrides the module-wide limit (:func:`set_max_pixels`) for this call; ``animated``
    says what to do with a file of several frames (``"first"`` frame, or ``"error"``); ``name`` labels
    errors for in-memory sources. Raises :class:`InvalidImageError` for anything that is not a usable image.
    """
    if max_pixels is not None:
        _validate_limit(max_pixels)
    if animated not in ("first", "error"):
        raise InvalidParameterError(f"animated must be 'first' or 'error', got {animated!r}")
    limit = _max_pixels if max_pixels is None else max_pixels
    if isinstance(source, Image):
        _check_pixels(source.width, source.height, limit, source.source)
        return source
    if isinstance(source, np.ndarray):
        image = _from_array(source, name or "<array>", limit)
        return image if name else replace(image, source=None)
    if isinstance(source, PILImage.Image):
        known = name or getattr(source, "filename", None) or None
        label = known or "<PIL image>"
        _check_pixels(source.width, source.height, limit, label)
        with _pillow_guard(limit, label):
            image = _from_pil(source, label, animated, data=None)
        return image if known else replace(image, source=None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), name or "<bytes>", limit, animated)
    if isinstance(source, (str, Path)):
        path = Path(source)
        label = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidImageError("no such file", label) from None
        except IsADirectoryError:
            raise InvalidImageError("is a directory, not an image file", label) from None
        except PermissionError:
            raise InvalidImageError("permission denied", label) from None
        except OSError as exc:
            raise InvalidImageError(f"cannot read file: {exc.strerror or exc}", label) from None
        return _from_bytes(data, label, limit, animated)
    raise InvalidImageError(
        f"cannot load an image from {type(source).__name__}; expected a path, bytes, PIL image or numpy array",
        name,
    )


def _check_pixels(width: int, height: int, limit: int, label: str | None) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has zero size ({width}x{height})", label)
    if width * height > limit:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(raise it with max_pixels= or set_max_pixels() if this image is trusted)",
            label,
        )


@contextmanager
def _pillow_guard(limit: int, label: str) -> Iterator[None]:
    """Run Pillow code under a decompression-bomb guard at least as large as ``limit``.

    Our own check enforces ``limit`` from the header; Pillow's guard (its open, GIF/MPO seek and TIFF tile
    checks) must not refuse what this call allows. Raising it is rare (a per-call limit above the
    module-wide one) and is done under a lock, so concurrent loads never see a guard below their limit.

    Warnings raised meanwhile in this thread are collected (:func:`_thread_warnings`) and re-issued once
    loading succeeded: Pillow's ``DecompressionBombWarning`` is dropped (the limit check speaks for it),
    Pillow's plain ``UserWarning`` (corrupt EXIF, malformed MPO...) becomes an :class:`ImageWarning` naming
    the source, our own pass as they are.
    """
    with _thread_warnings() as caught:
        current = PILImage.MAX_IMAGE_PIXELS
        # Compare with our own setting too: another load may have raised Pillow's guard for a moment.
        if current is None or limit <= min(current, _max_pixels):
            yield
        else:
            with _pillow_guard_lock:
                previous = PILImage.MAX_IMAGE_PIXELS
                PILImage.MAX_IMAGE_PIXELS = limit
                try:
                    yield
                finally:
                    PILImage.MAX_IMAGE_PIXELS = previous
    seen = set()
    for record in caught:
        category, message = record.category, str(record.message)
        if issubclass(category, PILImage.DecompressionBombWarning) or (category, message) in seen:
            continue
        seen.add((category, message))
        if issubclass(category, ImageWarning) or not issubclass(category, UserWarning):
            _warn(message, category)
        else:
            _warn(f"{label}: {message}", ImageWarning)


_capture_lock = threading.Lock()
_capture_users = 0
_capture_context: Any = None
_capture_show: Any = None
_capture_local = threading.local()


def _route_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    records = getattr(_capture_local, "records", None)
    if records is None:
        _capture_show(message, category, filename, lineno, file, line)
    else:
        records.append(warnings.WarningMessage(message, category, filename, lineno, file, line))


@contextmanager
def _thread_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning this thread raises inside the block (``catch_warnings(record=True)`` per thread).

    ``warnings.catch_warnings`` changes process-wide state and restores it on exit, so two threads whose
    blocks overlap out of order leave it broken (every later warning in the process swallowed into a dead
    list). Here the first thread in installs one capture (filter ``always``, a ``showwarning`` that routes
    each warning to the list of the thread that raised it, else to the previous ``showwarning``) and the last
    one out removes it, both under a lock, so concurrent loads keep their own warnings and leave the state
    as they found it. While any load runs, other threads' warnings are shown, each time they are raised.
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


def _from_bytes(data: bytes, label: str, limit: int, animated: str) -> Image:
    if len(data) == 0:
        raise InvalidImageError("file is empty (0 bytes)", label)
    if data.startswith(_JXL_SIGNATURES):
        return _from_jxl(data, label, limit, animated)
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data, label)
    with _pillow_guard(limit, label):
        pil = _open_header(data, label, limit)
        _check_pixels(pil.width, pil.height, limit, label)
        image = _from_pil(pil, label, animated, data=data)
    return replace(image, info=replace(image.info, file_bytes=len(data)))


def _check_png_chunks(data: bytes, label: str) -> None:
    """Walk the chunks to IEND, checking every CRC (a scan: nothing is decompressed or allocated).

    Pillow checks the CRCs of the chunks before the image data, but stops inflating once it has the pixels
    and checks no IDAT CRC: a PNG that lost its end (IEND, the zlib checksum) or has damaged image data
    would otherwise load. libpng and browsers refuse both; so do we, with the chunk and offset in the message.
    """
    pos, end = len(_PNG_SIGNATURE), len(data)
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


def _open_header(data: bytes, label: str, limit: int) -> PILImage.Image:
    """Parse the header with Pillow (no pixels decoded), trying only the supported formats."""
    try:
        return PILImage.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
    except UnidentifiedImageError:
        pass
    except PILImage.DecompressionBombError as exc:
        # Pillow's guard (set to the limit) fires before ours for images over twice the limit.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too large"
        raise ImageTooLargeError(f"image is {size}, over the limit of {limit:,}", label) from None
    except MemoryError:
        raise InvalidImageError("not enough memory to read the image header", label) from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError, struct_error) as exc:
        raise InvalidImageError(f"cannot read image header (corrupt or truncated): {exc}", label) from None
    other = _other_format(data)
    if other is not None:
        raise InvalidImageError(f"unsupported format {other}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}", label)
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise InvalidImageError("HEIC/HEIF is not supported; convert it to PNG, JPEG or AVIF first", label)
    raise InvalidImageError(
        f"not a recognised image, or a corrupt/truncated one ({len(data):,} bytes; first bytes {data[:8]!r})",
        label,
    )


def _other_format(data: bytes) -> str | None:
    """Name the format of a file Pillow recognises but the loader does not accept (header only)."""
    try:
        with PILImage.open(io.BytesIO(data)) as other:
            return str(other.format)
    except Exception:  # noqa: BLE001 - any failure just means "not recognised"
        return None


def _from_pil(pil: PILImage.Image, label: str, animated: str, data: bytes | None) -> Image:
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
        orientation = _orientation(pil, label)
        wide = _decode_wide(pil, data, n_frames, label) if data else None
        if wide is not None:
            colour, alpha = wide
        else:
            pil.load()
            colour, alpha = _split_alpha(pil, label)
        rgb, icc_converted, bit_depth = _to_srgb(colour, icc, label)
    except InvalidImageError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise ImageTooLargeError(f"decompression bomb guard: {exc}", label) from None
    except MemoryError:
        raise InvalidImageError(f"not enough memory to decode a {pil.width}x{pil.height} image", label) from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, KeyError, struct_error) as exc:
        raise InvalidImageError(f"cannot decode image data (truncated or corrupt): {exc}", label) from None
    if src_mode == "1":
        bit_depth = 1
    rgb, alpha = _orient(rgb, orientation), (None if alpha is None else _orient(alpha, orientation))
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidImageError(f"image has zero size ({rgb.shape[1]}x{rgb.shape[0]})", label)
    info = ImageInfo(
        format=fmt,
        mode=src_mode,
        bit_depth=bit_depth,
        n_frames=n_frames,
        exif_transposed=orientation != 1,
        icc_converted=icc_converted,
        had_alpha=alpha is not None,
    )
    return Image(rgb=rgb, alpha=alpha, source=label, info=info)


# -- orientation -----------------------------------------------------------------------------------


def _orientation(pil: PILImage.Image, label: str) -> int:
    """The EXIF orientation 1..8 (1 when absent, invalid or unreadable: broken EXIF never costs the pixels)."""
    try:
        value = int(pil.getexif().get(_ORIENTATION_TAG, 1))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds of errors on malformed EXIF blocks
        problem = str(exc) or type(exc).__name__
        _warn(f"{label}: ignoring a broken EXIF block ({problem}); orientation taken as upright", ImageWarning)
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (``H x W`` or ``H x W x C``) into displayed pixels for an EXIF orientation."""
    if orientation == 2:  # mirrored horizontally
        arr = arr[:, ::-1]
    elif orientation == 3:  # rotated 180
        arr = arr[::-1, ::-1]
    elif orientation == 4:  # mirrored vertically
        arr = arr[::-1]
    elif orientation == 5:  # transposed (mirror along the main diagonal)
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:  # display needs a 90 degree clockwise turn
        arr = np.rot90(arr, -1)
    elif orientation == 7:  # transverse (mirror along the other diagonal)
        arr = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # display needs a 90 degree counter-clockwise turn
        arr = np.rot90(arr, 1)
    else:
        return arr
    return np.ascontiguousarray(arr)


# -- alpha and sample formats ------------------------------------------------------------------------

# A decoded colour plane: either a PIL image in an 8-bit mode LittleCMS understands (L, RGB, CMYK, LAB), or
# an H x W x 1|3 numpy array of uint16 (16-bit data) or float32 in [0, 1].
_Colour = PILImage.Image | np.ndarray


def _split_alpha(pil: PILImage.Image, label: str) -> tuple[_Colour, np.ndarray | None]:
    """Separate colour and alpha; an alpha channel that is fully opaque is dropped."""
    mode = pil.mode
    if mode.startswith("I;16") or mode == "I":
        return _wide_grey(pil, label)
    if mode == "F":
        arr = np.asarray(pil, dtype=np.float32)
        _check_unit_range(arr, label, "floating-point image")
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
        alpha = _alpha_or_none(np.asarray(pil.getchannel("A")), 255)
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
        alpha = _alpha_or_none(np.where(arr == key, 0, 65535).astype(np.uint16), 65535)
    return arr[..., None], alpha


def _alpha_or_none(alpha: np.ndarray, full: int) -> np.ndarray | None:
    if int(alpha.min()) == full:
        return None
    return alpha.astype(np.float32) / np.float32(full)


def _check_unit_range(arr: np.ndarray, label: str, what: str) -> None:
    if not np.isfinite(arr).all():
        raise InvalidImageError(f"{what} contains NaN or infinity", label)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidImageError(
            f"{what} must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}] (scale it, or pass 8-bit data as uint8)",
            label,
        )


# -- 16-bit colour PNG and TIFF ---------------------------------------------------------------------


def _png_ihdr(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) from a PNG's IHDR, or (0, -1) when the header is not where it should be."""
    if len(data) < 26 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return 0, -1
    return data[24], data[25]


def _imagecodecs() -> Any:
    """imagecodecs when installed (the ``jxl`` extra), else None."""
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs


def _wide_layout(pil: PILImage.Image, data: bytes) -> str | None:
    """How a 16-bit colour file that Pillow reads at 8 bits is laid out; None for every other file.

    ``"png"``; ``"tiff"`` (straight or no alpha), ``"tiff-premultiplied"`` (associated alpha); or
    ``"other"`` for a 16-bit colour TIFF whose layout is left to Pillow.
    """
    if pil.format == "PNG":
        depth, colour_type = _png_ihdr(data)
        return "png" if depth == 16 and colour_type in (2, 4, 6) else None
    if pil.format != "TIFF":
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


def _decode_wide(
    pil: PILImage.Image, data: bytes, n_frames: int, label: str
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A 16-bit colour PNG or TIFF decoded at full precision with imagecodecs; None when it does not apply.

    Returns (uint16 ``H x W x 1|3`` colour, alpha or None). When the file is 16-bit colour but cannot be
    decoded here, Pillow will read it at 8 bits: say so with a :class:`PrecisionWarning`.
    """
    layout = _wide_layout(pil, data)
    if layout is None:
        return None
    codecs = _imagecodecs()
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
        _warn(f"{label}: 16-bit colour {pil.format} read at 8-bit precision ({reason})", PrecisionWarning)
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
    return np.ascontiguousarray(colour), _alpha_or_none(alpha16, 65535)


# -- colour management ------------------------------------------------------------------------------


def _to_srgb(colour: _Colour, icc: bytes | None, label: str) -> tuple[np.ndarray, bool, int]:
    """Float32 sRGB ``H x W x 3`` from decoded colour: (pixels, ICC applied, bit depth of the result)."""
    profile = _open_profile(icc, label) if icc else None
    if isinstance(colour, np.ndarray):
        if colour.dtype != np.uint16:
            if profile is not None:
                _warn(f"{label}: ICC profile not applied to floating-point pixels; taken as sRGB", IccWarning)
            return _grey_to_rgb(colour.astype(np.float32, copy=False)), False, 32
        rgb = _grey_to_rgb(colour.astype(np.float32) / np.float32(65535.0))
        if profile is None:
            return rgb, False, 16
        if _cms16_available():
            converted = _cms16(colour, icc, label)
            return (rgb, False, 16) if converted is None else _changed(rgb, converted, 16)
        colour = _quantise8(colour)  # no 16-bit LittleCMS here: convert at 8 bits with Pillow
    if colour.mode == "LAB":
        srgb = ImageCms.profileToProfile(
            colour, ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
        return _rgb8_to_float(srgb), False, 8
    rgb = _rgb8_to_float(colour if colour.mode == "RGB" else colour.convert("RGB"))
    if profile is None:
        return rgb, False, 8
    converted8 = _cms8(colour, profile, label)
    return (rgb, False, 8) if converted8 is None else _changed(rgb, _rgb8_to_float(converted8), 8)


def _changed(original: np.ndarray, converted: np.ndarray, depth: int) -> tuple[np.ndarray, bool, int]:
    """Keep the file's own pixels when the profile moved none of them by more than one 8-bit level.

    That is what an embedded sRGB profile (or an equivalent one) does: applying it would only add LittleCMS
    rounding noise. Decided on the pixels, not the profile's name ("Linear sRGB" is not sRGB).
    """
    if float(np.abs(converted - original).max()) <= 1.0 / 255.0 + 1e-6:
        return original, False, depth
    return converted, True, depth


def _open_profile(icc: bytes, label: str) -> ImageCms.ImageCmsProfile | None:
    """The embedded profile, or None (with a warning) when LittleCMS cannot read it."""
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        _icc_warning(label, exc)
        return None


def _cms8(colour: PILImage.Image, profile: ImageCms.ImageCmsProfile, label: str) -> PILImage.Image | None:
    """8-bit L, RGB or CMYK through LittleCMS to sRGB; None (with a warning) when the profile does not fit."""
    if colour.mode not in ("L", "RGB", "CMYK"):
        colour = colour.convert("RGB")
    srgb = ImageCms.createProfile("sRGB")
    try:
        if colour.mode == "L":
            # LittleCMS's optimised grey -> RGB transform is off by up to 8 levels in the shadows; an exact
            # (unoptimised) transform of the 256 possible values, applied as a table, is exact and fast.
            ramp = PILImage.fromarray(np.arange(256, dtype=np.uint8)[None, :], "L")
            flags = ImageCms.Flags.NOOPTIMIZE
            table = ImageCms.profileToProfile(ramp, profile, srgb, outputMode="RGB", flags=flags)
            return PILImage.fromarray(np.asarray(table)[0][np.asarray(colour)], "RGB")
        return ImageCms.profileToProfile(colour, profile, srgb, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        _icc_warning(label, exc)
        return None


def _cms16_available() -> bool:
    codecs = _imagecodecs()
    return codecs is not None and bool(codecs.CMS.available)


def _cms16(colour: np.ndarray, icc: bytes | None, label: str) -> np.ndarray | None:
    """16-bit grey or RGB through LittleCMS (imagecodecs) to float32 sRGB; None (warned) when it fails."""
    codecs = _imagecodecs()
    space = "gray" if colour.shape[2] == 1 else "rgb"
    data = colour[..., 0] if space == "gray" else colour
    try:
        out = codecs.cms_transform(
            np.ascontiguousarray(data),
            icc,
            codecs.cms_profile("srgb"),
            colorspace=space,
            outcolorspace="rgb",
            outdtype=np.float32,
        )
    except Exception as exc:  # noqa: BLE001 - imagecodecs raises its own error classes
        _icc_warning(label, exc)
        return None
    return np.clip(np.asarray(out, dtype=np.float32).reshape(colour.shape[:2] + (3,)), 0.0, 1.0)


def _icc_warning(label: str, exc: BaseException) -> None:
    _warn(f"{label}: ignoring unusable ICC profile ({exc}); pixels treated as sRGB", IccWarning)


def _quantise8(arr16: np.ndarray) -> PILImage.Image:
    arr8 = ((arr16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return PILImage.fromarray(arr8[..., 0], "L") if arr8.shape[2] == 1 else PILImage.fromarray(arr8, "RGB")


def _grey_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _rgb8_to_float(colour: PILImage.Image) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32) / np.float32(255.0)


# -- JPEG XL -----------------------------------------------------------------------------------------

_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def _jxl_codestream(data: bytes) -> bytes | None:
    """The start of the codestream: the file itself, or the first ``jxlc``/``jxlp`` box of a container."""
    if data.startswith(b"\xff\x0a"):
        return data
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > len(data):
                return None
            size, head = int.from_bytes(data[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = len(data) - pos
        if size < head:
            return None
        if kind == b"jxlc":
            return data[pos + head : pos + size]
        if kind == b"jxlp":
            return data[pos + head + 4 : pos + size]  # skips the part's index
        pos += size
    return None


def _jxl_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG XL SizeHeader, read before any pixel is decoded."""
    stream = _jxl_codestream(data)
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


def _from_jxl(data: bytes, label: str, limit: int, animated: str) -> Image:
    size = _jxl_size(data)
    if size is None:
        raise InvalidImageError("cannot read the JPEG XL size header (corrupt or truncated)", label)
    _check_pixels(size[0], size[1], limit, label)
    codecs = _imagecodecs()
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
    image = _from_array(arr, label, limit)
    return replace(image, info=replace(image.info, format="JXL", n_frames=n_frames, file_bytes=len(data)))


# -- numpy arrays ------------------------------------------------------------------------------------


def _from_array(arr: np.ndarray, label: str, limit: int) -> Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InvalidImageError(f"array must be H x W, or H x W x 1, 2, 3 or 4 channels, got shape {arr.shape}", label)
    height, width, channels = arr.shape
    _check_pixels(width, height, limit, label)
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
        _check_unit_range(scaled, label, "float array")
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
    rgb = _grey_to_rgb(scaled)
    info = ImageInfo(format=None, mode=f"array[{arr.dtype}]x{channels}", bit_depth=depth, had_alpha=alpha is not None)
    return Image(rgb=rgb, alpha=alpha, source=label, info=info)
