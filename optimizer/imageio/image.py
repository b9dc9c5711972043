"""The :class:`Image` type: the package's one pixel contract, and what loading recorded about its source.

``rgb`` is a float32 ``H x W x 3`` array in ``[0, 1]`` (sRGB, straight, not premultiplied) with an optional
float32 ``H x W`` ``alpha`` in ``[0, 1]``. Scores are computed on the image composited over a stated
background (opaque white by default: :meth:`Image.for_scoring`); encoders see 8 bits per channel
(:meth:`Image.to_uint8`).

Beside the pixels: ``metadata`` (the source file's EXIF, ICC and XMP, :mod:`optimizer.imageio.metadata`)
and ``profile``, the ICC profile ``rgb`` is in when it is not sRGB (loaded with ``color="keep"``). Such an
image is converted to sRGB for scoring (:meth:`Image.for_scoring`), so a kept profile never changes what
the metrics compare, and encoders embed the profile with the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from PIL import Image as PILImage

from ..errors import InvalidImageError, InvalidParameterError
from .metadata import Metadata

if TYPE_CHECKING:
    import torch

__all__ = ["COLOR_MODES", "WHITE", "ColorMode", "Image", "ImageInfo", "ImageSource"]

#: The default background for scoring and for encoders without alpha.
WHITE = (1.0, 1.0, 1.0)

ColorMode = Literal["srgb", "keep"]
#: What loading does with an embedded RGB profile: convert the colours to sRGB, or keep them in it.
COLOR_MODES: tuple[ColorMode, ...] = ("srgb", "keep")


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
    """An image in the package's pixel contract (float32 in [0, 1], optional float32 alpha).

    ``rgb`` is sRGB unless ``profile`` names the ICC profile it is in; ``metadata`` is what the source file
    carried besides pixels.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    source: str | None = None
    info: ImageInfo = field(default_factory=ImageInfo)
    metadata: Metadata = field(default_factory=Metadata)
    profile: bytes | None = None

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
        if not isinstance(self.metadata, Metadata):
            raise InvalidImageError(f"metadata must be a Metadata, got {type(self.metadata).__name__}", self.source)
        if self.profile is not None and (not isinstance(self.profile, bytes) or not self.profile):
            raise InvalidImageError("profile must be the bytes of an ICC profile, or None for sRGB", self.source)

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return (self.width, self.height)

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def has_alpha(self) -> bool:
        """Whether the image carries an alpha channel (one that is not opaque everywhere)."""
        return self.alpha is not None

    def to_srgb(self) -> Image:
        """This image with its pixels in sRGB (itself when they are): a kept profile converted by LittleCMS
        exactly as loading with ``color="srgb"`` converts it.

        Returns:
            An image whose ``profile`` is None (``metadata`` kept, ``info.icc_converted`` set).
        """
        if self.profile is None:
            return self
        from ._colour import profile_to_srgb

        rgb = profile_to_srgb(self.rgb, self.profile, self.info.bit_depth, self.source or "<image>")
        return replace(self, rgb=rgb, profile=None, info=replace(self.info, icc_converted=True))

    def for_scoring(self, background: tuple[float, float, float] = WHITE) -> np.ndarray:
        """RGB as a viewer sees it: in sRGB, straight alpha composited over an opaque background.

        Args:
            background: RGB in [0, 1] (white by default).

        Returns:
            Float32 ``H x W x 3`` in [0, 1]; ``rgb`` itself when it is sRGB and there is no alpha.
        """
        rgb = self.to_srgb().rgb
        if self.alpha is None:
            return rgb
        bg = _check_background(background)
        a = self.alpha[..., None]
        composited: np.ndarray = (rgb * a + bg * (np.float32(1.0) - a)).astype(np.float32, copy=False)
        return composited

    def to_tensor(self, device: Any = None, background: tuple[float, float, float] = WHITE) -> torch.Tensor:
        """The scoring pixels as a torch tensor.

        Args:
            device: Torch device to move it to (left on the CPU when None).
            background: Background for alpha, RGB in [0, 1].

        Returns:
            A ``1 x 3 x H x W`` float32 tensor in [0, 1].
        """
        import torch

        arr = np.ascontiguousarray(self.for_scoring(background).transpose(2, 0, 1))
        t = torch.from_numpy(arr).unsqueeze(0)
        return t.to(device) if device is not None else t

    def to_uint8(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> np.ndarray:
        """8-bit pixels, rounded to nearest (what encoders see), in the image's own colour space (``profile``).

        Args:
            keep_alpha: Keep straight alpha as a fourth channel (else composite over ``background``).
            background: Background for alpha, RGB in [0, 1].

        Returns:
            ``H x W x 3`` uint8, or ``H x W x 4`` with alpha kept.
        """
        if keep_alpha and self.alpha is not None:
            arr = np.concatenate([self.rgb, self.alpha[..., None]], axis=2)
        elif self.alpha is None:
            arr = self.rgb
        else:
            bg = _check_background(background)
            a = self.alpha[..., None]
            arr = self.rgb * a + bg * (np.float32(1.0) - a)
        return _to_uint8(arr)

    def to_pil(self, *, keep_alpha: bool = True, background: tuple[float, float, float] = WHITE) -> PILImage.Image:
        """An 8-bit PIL image.

        Args:
            keep_alpha: ``RGBA`` with the alpha kept, else ``RGB`` composited over ``background``.
            background: Background for alpha, RGB in [0, 1].

        Returns:
            The PIL image.
        """
        arr = self.to_uint8(keep_alpha=keep_alpha, background=background)
        return PILImage.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")

    def with_pixels(self, rgb: np.ndarray, alpha: np.ndarray | None = _KEEP) -> Image:
        """A copy with new pixels (same source, info, metadata and profile), used by transforms.

        Without ``alpha`` the current alpha is kept (a size change then needs ``alpha=`` resized too, or
        ``alpha=None`` to drop it), so a transform cannot lose transparency by forgetting it.

        Args:
            rgb: New float32 ``H x W x 3`` pixels.
            alpha: New alpha, None to drop it, or omitted to keep the current one.

        Returns:
            The new image.
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


ImageSource = Union[str, Path, bytes, bytearray, memoryview, "PILImage.Image", np.ndarray, Image]


#: Samples converted to 8 bits at a time: the float temporaries stay at 16 MB whatever the image size (a
#: whole-image ``clip(rint(x * 255))`` holds two float32 copies of a 16 MP photo, 380 MB, next to an encoder).
_CHUNK_SAMPLES = 1 << 22


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """``clip(rint(arr * 255), 0, 255)`` as uint8, a band of rows at a time (identical values)."""
    out = np.empty(arr.shape, dtype=np.uint8)
    rows = max(1, _CHUNK_SAMPLES // max(1, int(np.prod(arr.shape[1:]))))
    for top in range(0, arr.shape[0], rows):
        band = np.multiply(arr[top : top + rows], np.float32(255.0), dtype=np.float32)
        np.rint(band, out=band)
        np.clip(band, 0, 255, out=band)
        out[top : top + rows] = band
    return out
