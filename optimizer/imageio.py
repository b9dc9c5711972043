"""Image loading at the package boundary.

Everything inside the package works on one pixel contract: :class:`Image`, whose ``rgb`` is a float32
``H x W x 3`` array in ``[0, 1]`` (sRGB, straight, not premultiplied) with an optional float32 ``H x W``
``alpha``. This module turns paths, bytes, PIL images and numpy arrays into that contract and turns every
way an input can be bad into :class:`~optimizer.errors.InvalidImageError`.

What loading does, in order:

* checks the header (format, size, pixel limit, frame count) before decoding any pixels;
* decodes, applies the EXIF orientation, splits off alpha (``LA``, ``RGBA``, ``P`` with transparency);
* converts colour through the embedded ICC profile to sRGB (8-bit sources; CMYK included);
* scales 8-bit, 16-bit (``I;16``, 16-bit PNG) and float sources to ``[0, 1]``.

Alpha: scores are computed on the image composited over a stated background (white by default, see
:meth:`Image.for_scoring`), because that is what a viewer sees on a page; encoders that support alpha (WebP,
AVIF, PNG, JPEG XL) keep it, JPEG composites over the same background.

Animated images (GIF, APNG, animated WebP/AVIF): the first frame is used and ``info.n_frames`` says how many
there were; pass ``animated="error"`` to refuse them instead.
"""

from __future__ import annotations

import io
import threading
from struct import error as struct_error  # raised by some Pillow plugins on garbage headers
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from .errors import InvalidImageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "Image",
    "ImageInfo",
    "ImageSource",
    "SUPPORTED_FORMATS",
    "get_max_pixels",
    "load_image",
    "set_max_pixels",
]

#: Largest accepted image, in pixels (about 100 megapixels: a 12000 x 8000 photo fits, a bomb does not).
DEFAULT_MAX_PIXELS = 100_000_000

#: Formats the loader accepts (Pillow format names, plus JXL through imagecodecs).
SUPPORTED_FORMATS = frozenset(
    {"PNG", "JPEG", "MPO", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM", "TGA", "JXL"}
)

WHITE = (1.0, 1.0, 1.0)

ImageSource = Union[str, Path, bytes, bytearray, memoryview, "PILImage.Image", np.ndarray, "Image"]

_max_pixels = DEFAULT_MAX_PIXELS
_pillow_guard_lock = threading.Lock()
PILImage.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files are errors, never silently grey-filled

_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def set_max_pixels(limit: int) -> None:
    """Set the default pixel limit for every later load, and Pillow's decompression-bomb guard with it."""
    global _max_pixels
    if not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {limit!r}")
    _max_pixels = limit
    PILImage.MAX_IMAGE_PIXELS = limit


def get_max_pixels() -> int:
    """The pixel limit applied when a load does not name its own."""
    return _max_pixels


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


@dataclass(frozen=True, eq=False)
class Image:
    """An image in the package's pixel contract (float32 sRGB in [0, 1], optional alpha)."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    source: str | None = None
    info: ImageInfo = field(default_factory=ImageInfo)

    def __post_init__(self) -> None:
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InvalidImageError(f"rgb must be an H x W x 3 array, got {getattr(rgb, 'shape', type(rgb))}", self.source)
        if rgb.dtype != np.float32:
            raise InvalidImageError(f"rgb must be float32, got {rgb.dtype}", self.source)
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise InvalidImageError(f"image has zero size ({rgb.shape[1]}x{rgb.shape[0]})", self.source)
        if self.alpha is not None and self.alpha.shape != rgb.shape[:2]:
            raise InvalidImageError(f"alpha shape {self.alpha.shape} does not match image {rgb.shape[:2]}", self.source)

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
        """RGB as a viewer sees it: composited over ``background`` when there is alpha."""
        if self.alpha is None:
            return self.rgb
        a = self.alpha[..., None]
        bg = np.asarray(background, dtype=np.float32)
        return (self.rgb * a + bg * (1.0 - a)).astype(np.float32, copy=False)

    def to_tensor(self, device: Any = None, background: tuple[float, float, float] = WHITE) -> torch.Tensor:
        """The scoring pixels as a ``1 x 3 x H x W`` float32 torch tensor."""
        import torch

        arr = np.ascontiguousarray(self.for_scoring(background).transpose(2, 0, 1))
        t = torch.from_numpy(arr).unsqueeze(0)
        return t.to(device) if device is not None else t

    def to_uint8(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> np.ndarray:
        """8-bit ``H x W x 3`` (or ``x 4`` with alpha kept), rounded to nearest."""
        if keep_alpha and self.alpha is not None:
            arr = np.concatenate([self.rgb, self.alpha[..., None]], axis=2)
        else:
            arr = self.for_scoring(background)
        return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)

    def to_pil(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> PILImage.Image:
        """An 8-bit PIL image (``RGBA`` when alpha is kept, else ``RGB``)."""
        arr = self.to_uint8(keep_alpha=keep_alpha, background=background)
        return PILImage.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")

    def with_pixels(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image:
        """A copy with new pixels (same source and info), used by transforms."""
        return replace(self, rgb=rgb, alpha=alpha)

    def __repr__(self) -> str:
        extra = ", alpha" if self.alpha is not None else ""
        return f"Image({self.width}x{self.height}{extra}, source={self.source!r})"


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

    ``max_pixels`` overrides the module-wide limit (:func:`set_max_pixels`); ``name`` labels errors for
    in-memory sources. Raises :class:`InvalidImageError` for anything that is not a usable image.
    """
    limit = _max_pixels if max_pixels is None else max_pixels
    if isinstance(source, Image):
        _check_pixels(source.width, source.height, limit, source.source)
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name, limit)
    if isinstance(source, PILImage.Image):
        label = name or getattr(source, "filename", None) or None
        _check_pixels(source.width, source.height, limit, label)
        return _from_pil(source, label, animated, file_bytes=None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _from_bytes(data, name or "<bytes>", limit, animated)
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
        raise InvalidImageError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
            "(raise it with max_pixels / set_max_pixels if this image is trusted)",
            label,
        )


def _from_bytes(data: bytes, label: str, limit: int, animated: str) -> Image:
    if len(data) == 0:
        raise InvalidImageError("file is empty (0 bytes)", label)
    if data.startswith(_JXL_SIGNATURES):
        return _from_jxl(data, label, limit)
    with _pillow_guard_lock:
        previous = PILImage.MAX_IMAGE_PIXELS
        # Our own check below enforces `limit`; Pillow's guard must not be stricter for a raised limit.
        PILImage.MAX_IMAGE_PIXELS = max(limit, previous or 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
                pil = PILImage.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"not a recognised image ({len(data):,} bytes; first bytes {data[:8]!r})", label
            ) from None
        except PILImage.DecompressionBombError as exc:
            raise InvalidImageError(f"decompression bomb guard: {exc}", label) from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
            raise InvalidImageError(f"cannot read image header: {exc}", label) from None
        finally:
            PILImage.MAX_IMAGE_PIXELS = previous
    fmt = pil.format
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidImageError(
            f"unsupported format {fmt}; supported: {', '.join(sorted(SUPPORTED_FORMATS))}", label
        )
    _check_pixels(pil.width, pil.height, limit, label)
    return _from_pil(pil, label, animated, file_bytes=len(data))


def _from_pil(pil: PILImage.Image, label: str | None, animated: str, file_bytes: int | None) -> Image:
    n_frames = int(getattr(pil, "n_frames", 1) or 1)
    if n_frames > 1 and animated == "error":
        raise InvalidImageError(f"animated image with {n_frames} frames; only still images are accepted", label)
    try:
        if n_frames > 1:
            pil.seek(0)
        pil.load()
        fmt, src_mode = pil.format, pil.mode
        icc = pil.info.get("icc_profile")
        transposed = _had_orientation(pil)
        pil = ImageOps.exif_transpose(pil)
    except InvalidImageError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise InvalidImageError(f"decompression bomb guard: {exc}", label) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error, MemoryError) as exc:
        raise InvalidImageError(f"cannot decode image data (truncated or corrupt): {exc}", label) from None
    if pil.width == 0 or pil.height == 0:
        raise InvalidImageError(f"image has zero size ({pil.width}x{pil.height})", label)

    colour, alpha = _split_alpha(pil)
    bit_depth = 16 if colour.mode.startswith("I;16") or colour.mode == "I" else 8
    icc_converted = False
    if icc and bit_depth == 8 and colour.mode in ("RGB", "L", "CMYK"):
        colour, icc_converted = _to_srgb(colour, icc, label)
    rgb = _colour_to_float(colour, label)
    info = ImageInfo(
        format=fmt,
        mode=src_mode,
        bit_depth=bit_depth,
        n_frames=n_frames,
        exif_transposed=bool(transposed),
        icc_converted=icc_converted,
        had_alpha=alpha is not None,
        file_bytes=file_bytes,
    )
    return Image(rgb=rgb, alpha=alpha, source=label, info=info)


def _had_orientation(pil: PILImage.Image) -> bool:
    try:
        return int(pil.getexif().get(0x0112, 1)) not in (0, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not a reason to refuse the pixels
        return False


def _split_alpha(pil: PILImage.Image) -> tuple[PILImage.Image, np.ndarray | None]:
    """Separate colour and alpha; an alpha channel that is fully opaque is dropped."""
    mode = pil.mode
    if mode == "P":
        if "transparency" in pil.info:
            pil = pil.convert("RGBA")
            mode = "RGBA"
        else:
            return pil.convert("RGB"), None
    if mode in ("PA",):
        pil = pil.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBa", "La"):
        pil = pil.convert("RGBA" if mode == "RGBa" else "LA")
        mode = pil.mode
    if mode in ("L", "RGB", "1") and "transparency" in pil.info:
        pil = pil.convert("RGBA" if mode == "RGB" else "LA")
        mode = pil.mode
    if mode in ("RGBA", "LA"):
        alpha8 = np.asarray(pil.getchannel("A"))
        colour = pil.convert("RGB" if mode == "RGBA" else "L")
        if alpha8.min() == 255:
            return colour, None
        return colour, (alpha8.astype(np.float32) / 255.0)
    return pil, None


def _to_srgb(colour: PILImage.Image, icc: bytes, label: str | None) -> tuple[PILImage.Image, bool]:
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(colour, src, dst, outputMode="RGB")
        return (out if out is not None else colour), True
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        warnings.warn(f"{label}: ignoring unusable ICC profile ({exc}); pixels treated as sRGB", stacklevel=3)
        return colour, False


def _colour_to_float(colour: PILImage.Image, label: str | None) -> np.ndarray:
    mode = colour.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(colour).astype(np.float32) / 65535.0
        arr = np.clip(arr, 0.0, 1.0)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(colour).astype(np.float32)
        if not np.isfinite(arr).all():
            raise InvalidImageError("floating-point image contains NaN or infinity", label)
        arr = np.clip(arr, 0.0, 1.0)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode != "RGB":
        colour = colour.convert("RGB")
    return np.asarray(colour, dtype=np.float32) / np.float32(255.0)


def _from_jxl(data: bytes, label: str, limit: int) -> Image:
    try:
        import imagecodecs
    except ImportError:
        raise InvalidImageError("JPEG XL input needs the 'jxl' extra (pip install 'optimizer[jxl]')", label) from None
    try:
        arr = imagecodecs.jpegxl_decode(data)
    except Exception as exc:  # noqa: BLE001 - imagecodecs raises its own error classes per codec
        raise InvalidImageError(f"cannot decode JPEG XL data: {exc}", label) from None
    image = _from_array(arr, label, limit)
    return replace(image, info=replace(image.info, format="JXL", file_bytes=len(data)))


def _from_array(arr: np.ndarray, label: str | None, limit: int) -> Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InvalidImageError(
            f"array must be H x W, H x W x 1, 2, 3 or 4 channels, got shape {arr.shape}", label
        )
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
        if not np.isfinite(scaled).all():
            raise InvalidImageError("array contains NaN or infinity", label)
        lo, hi = float(scaled.min()), float(scaled.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidImageError(
                f"float arrays must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                "(divide 8-bit data by 255 or pass it as uint8)",
                label,
            )
        depth = 32
    else:
        raise InvalidImageError(f"unsupported array dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]", label)
    alpha: np.ndarray | None = None
    if channels in (2, 4):
        alpha = np.ascontiguousarray(scaled[..., -1])
        scaled = scaled[..., :-1]
        if float(alpha.min()) >= 1.0:
            alpha = None
    if scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    rgb = np.ascontiguousarray(scaled, dtype=np.float32)
    info = ImageInfo(format=None, mode=f"array[{arr.dtype}]x{channels}", bit_depth=depth, had_alpha=alpha is not None)
    return Image(rgb=rgb, alpha=alpha, source=label, info=info)
