"""Pixel transforms applied before encoding: resize, then sharpen.

Everything runs on float32 data (Pillow's ``F`` mode per channel for resampling), so a transform never
adds an 8-bit rounding step of its own; the only quantisation is the encoder's.

* **Resize** to a width, a height (aspect kept), both (exact size) or a scale factor, with Pillow's
  filters. ``linear_light=True`` resamples in linear-light sRGB, which keeps fine high-contrast detail
  from darkening the way gamma-space averaging does. With alpha, colour is resampled premultiplied so
  that the colour of transparent pixels cannot bleed into visible ones. Upscaling is allowed (a target
  larger than the source); the tool does not refuse it, it is the caller's choice.
* **Sharpen** is an unsharp mask: ``out = x + amount * (x - blur(x))`` where ``|x - blur(x)| >=
  threshold``; ``radius`` is the Gaussian sigma in pixels and ``threshold`` is in [0, 1] pixel units.
  With alpha the blur is alpha-weighted, so transparent pixels do not take part. ``amount=0`` returns the
  input unchanged.

:class:`Transform` bundles both for the tuning layer and presets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .codecs.base import Param
from .errors import InvalidParameterError
from .imageio import Image
from .imageio.limits import get_max_pixels

__all__ = [
    "RESIZE_FILTERS",
    "TRANSFORM_PARAMS",
    "Transform",
    "linear_to_srgb",
    "resize",
    "sharpen",
    "srgb_to_linear",
    "target_size",
]

_FILTERS = {
    "lanczos": PILImage.Resampling.LANCZOS,
    "bicubic": PILImage.Resampling.BICUBIC,
    "bilinear": PILImage.Resampling.BILINEAR,
    "box": PILImage.Resampling.BOX,
    "hamming": PILImage.Resampling.HAMMING,
    "nearest": PILImage.Resampling.NEAREST,
}
#: Resampling filters accepted by :func:`resize`, sharpest-support first.
RESIZE_FILTERS: tuple[str, ...] = tuple(_FILTERS)

#: Searchable transform settings (the tuning layer builds distributions from these).
TRANSFORM_PARAMS: tuple[Param, ...] = (
    Param("filter", "choice", "lanczos", choices=RESIZE_FILTERS, description="resampling filter"),
    Param("linear_light", "bool", False, description="resample in linear-light sRGB"),
    Param("sharpen_amount", "float", 0.0, 0.0, 5.0, description="unsharp-mask strength; 0 is off"),
    Param("sharpen_radius", "float", 1.0, 0.1, 20.0, description="unsharp-mask Gaussian sigma, pixels"),
    Param("sharpen_threshold", "float", 0.0, 0.0, 1.0, description="minimum local difference to sharpen"),
)
_PARAMS = {p.name: p for p in TRANSFORM_PARAMS}


# --------------------------------------------------------------------------------------------------
# Colour


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear light (IEC 61966-2-1), float32."""
    x = np.asarray(x, dtype=np.float32)
    curve = ((x + np.float32(0.055)) / np.float32(1.055)) ** np.float32(2.4)
    return np.where(x <= 0.04045, x / np.float32(12.92), curve).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light to sRGB encoding, float32; negative input (filter undershoot) maps to 0."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, None)
    return np.where(
        x <= 0.0031308, x * np.float32(12.92), np.float32(1.055) * x ** np.float32(1 / 2.4) - np.float32(0.055)
    ).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Resize


def target_size(
    source: tuple[int, int],
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    max_pixels: int | None = None,
) -> tuple[int, int]:
    """The (width, height) a resize request gives for a ``source`` (width, height); validates the request.

    Args:
        source: (width, height) of the image to resize.
        width: Target width (aspect kept when alone).
        height: Target height (aspect kept when alone).
        scale: Scale factor, instead of width/height.
        max_pixels: Largest output allowed (default: the process pixel limit,
            :func:`~optimizer.imageio.get_max_pixels`), checked before anything is allocated.

    Returns:
        The output (width, height).
    """
    _check_size_request(width, height, scale)
    w, h = source
    if scale is not None:
        size = max(1, round(w * scale)), max(1, round(h * scale))
    elif width is not None and height is not None:
        size = width, height
    elif width is not None:
        size = width, max(1, round(h * width / w))
    elif height is not None:
        size = max(1, round(w * height / h)), height
    else:  # pragma: no cover - _check_size_request refuses a request without width, height or scale
        raise InvalidParameterError("resize needs width, height (one or both) or scale; got none")
    _check_output_pixels(size, max_pixels)
    return size


def _check_output_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    limit = get_max_pixels() if max_pixels is None else max_pixels
    if size[0] * size[1] > limit:
        raise InvalidParameterError(
            f"resize to {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels is over the pixel limit of {limit:,} "
            "(the same limit as for input images; raise it with set_max_pixels() if this is intended)"
        )


def _check_size_request(width: Any, height: Any, scale: Any) -> None:
    if width is None and height is None and scale is None:
        raise InvalidParameterError("resize needs width, height (one or both) or scale; got none")
    if scale is not None and (width is not None or height is not None):
        raise InvalidParameterError(
            f"resize takes either scale or width/height, got scale={scale!r}, width={width!r}, height={height!r}"
        )
    for name, value in (("width", width), ("height", height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0):
            raise InvalidParameterError(f"resize {name} must be a positive integer, got {value!r}")
    numeric = isinstance(scale, (int, float, np.number)) and not isinstance(scale, bool)
    if scale is not None and (not numeric or not math.isfinite(scale) or scale <= 0):
        raise InvalidParameterError(f"resize scale must be a positive finite number, got {scale!r}")


def _check_filter(name: Any) -> Any:
    if name not in _FILTERS:
        raise InvalidParameterError(f"unknown resize filter {name!r}; known: {', '.join(RESIZE_FILTERS)}")
    return _FILTERS[name]


def _resample_planes(planes: np.ndarray, size: tuple[int, int], flt: Any) -> np.ndarray:
    """Resample ``H x W x C`` float32 planes to ``size`` (width, height), one Pillow ``F`` image per plane."""
    out = np.empty((size[1], size[0], planes.shape[2]), dtype=np.float32)
    for c in range(planes.shape[2]):
        plane = PILImage.fromarray(np.ascontiguousarray(planes[..., c]), "F")
        out[..., c] = np.asarray(plane.resize(size, flt), dtype=np.float32)
    return out


def resize(
    image: Image,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
    filter: str = "lanczos",
    linear_light: bool = False,
) -> Image:
    """Resize to ``width``, ``height`` (aspect kept), both (exact size) or ``scale``; float32 throughout.

    A request that gives the source size returns ``image`` itself. Lanczos and bicubic overshoot near
    edges; results are clipped to [0, 1].

    Args:
        image: The image (alpha is resized premultiplied).
        width: Target width in pixels.
        height: Target height in pixels.
        scale: Scale factor (instead of a size).
        filter: One of :data:`RESIZE_FILTERS` (``lanczos``, ``bicubic``, ``bilinear``, ...).
        linear_light: Resize in linear light instead of sRGB-encoded values.

    Returns:
        The resized :class:`Image`.
    """
    flt = _check_filter(filter)
    size = target_size(image.size, width=width, height=height, scale=scale)
    if size == image.size:
        return image
    colour = srgb_to_linear(image.rgb) if linear_light else image.rgb
    if image.alpha is None:
        rgb = _resample_planes(colour, size, flt)
        alpha = None
    else:
        a = image.alpha[..., None]
        stacked = _resample_planes(np.concatenate([colour * a, a], axis=2), size, flt)
        alpha = np.clip(stacked[..., 3], 0.0, 1.0)
        premultiplied = stacked[..., :3]
        safe = np.where(alpha > 1e-6, alpha, 1.0)[..., None]
        rgb = np.where(alpha[..., None] > 1e-6, premultiplied / safe, 0.0).astype(np.float32)
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    if linear_light:
        rgb = linear_to_srgb(rgb)
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    return image.with_pixels(np.ascontiguousarray(rgb), alpha)


# --------------------------------------------------------------------------------------------------
# Sharpen


def _gaussian_kernel(sigma: float) -> np.ndarray:
    half = max(1, math.ceil(3.0 * sigma))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    kernel: np.ndarray = (k / k.sum()).astype(np.float32)
    return kernel


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``H x W [x C]`` float32 data, reflecting at the borders."""
    k = _gaussian_kernel(sigma)
    half = len(k) // 2
    for axis in (0, 1):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (half, half)
        padded = np.pad(x, pad, mode="symmetric")
        out = np.zeros_like(x)
        for i, w in enumerate(k):
            window = [slice(None)] * x.ndim
            window[axis] = slice(i, i + n)
            out += w * padded[tuple(window)]
        x = out
    return x


def sharpen(image: Image, *, amount: float, radius: float = 1.0, threshold: float = 0.0) -> Image:
    """Unsharp mask in float32 (see the module docs); ``amount=0`` returns ``image`` itself.

    Args:
        image: The image.
        amount: Strength: how much of the detail (image minus its blur) is added back.
        radius: Gaussian blur radius (sigma) in pixels.
        threshold: Details smaller than this (0..1) are left alone.

    Returns:
        The sharpened :class:`Image`.
    """
    amount = _PARAMS["sharpen_amount"].validate(amount)
    radius = _PARAMS["sharpen_radius"].validate(radius)
    threshold = _PARAMS["sharpen_threshold"].validate(threshold)
    if amount == 0.0:
        return image
    x = image.rgb
    if image.alpha is None:
        blurred = _blur(x, radius)
    else:
        a = image.alpha[..., None]
        weight = _blur(a, radius)
        blurred = np.where(weight > 1e-6, _blur(x * a, radius) / np.maximum(weight, 1e-6), x)
    detail = x - blurred
    if threshold > 0.0:
        detail = np.where(np.abs(detail) >= threshold, detail, 0.0)
    out = np.clip(x + np.float32(amount) * detail, 0.0, 1.0).astype(np.float32)
    return image.with_pixels(np.ascontiguousarray(out), image.alpha)


# --------------------------------------------------------------------------------------------------
# Transform


@dataclass(frozen=True)
class Transform:
    """Resize (optional) then sharpen (optional), validated on construction.

    At most one of ``scale`` and ``width``/``height`` is set; none means no resize. ``scale`` above 1 or a
    target above the source size upscales, which is allowed.
    """

    width: int | None = None
    height: int | None = None
    scale: float | None = None
    filter: str = "lanczos"
    linear_light: bool = False
    sharpen_amount: float = 0.0
    sharpen_radius: float = 1.0
    sharpen_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not (self.width is None and self.height is None and self.scale is None):
            _check_size_request(self.width, self.height, self.scale)
            # Whatever the source, the output is at least this many pixels: refuse it before any image is seen.
            _check_output_pixels((self.width or 1, self.height or 1), None)
        for p in TRANSFORM_PARAMS:
            object.__setattr__(self, p.name, p.validate(getattr(self, p.name)))
        if self.scale is not None:
            object.__setattr__(self, "scale", float(self.scale))
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))

    @property
    def resizes(self) -> bool:
        return not (self.width is None and self.height is None and (self.scale is None or self.scale == 1.0))

    @property
    def is_identity(self) -> bool:
        """True when applying it returns the input unchanged (no resize, no sharpening)."""
        return not self.resizes and self.sharpen_amount == 0.0

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) this transform produces from an image of ``size``."""
        if not self.resizes:
            return size
        return target_size(size, width=self.width, height=self.height, scale=self.scale)

    def apply(self, image: Image) -> Image:
        if self.resizes:
            image = resize(
                image,
                width=self.width,
                height=self.height,
                scale=self.scale,
                filter=self.filter,
                linear_light=self.linear_light,
            )
        if self.sharpen_amount:
            image = sharpen(
                image, amount=self.sharpen_amount, radius=self.sharpen_radius, threshold=self.sharpen_threshold
            )
        return image

    def label(self) -> str:
        """A short human description, e.g. ``width 1024 lanczos linear + sharpen 0.3 r0.7``."""
        parts = []
        if self.resizes:
            if self.scale is not None:
                size = f"scale {self.scale:g}"
            elif self.width is not None and self.height is not None:
                size = f"{self.width}x{self.height}"
            else:
                size = f"width {self.width}" if self.width is not None else f"height {self.height}"
            parts.append(f"{size} {self.filter}" + (" linear" if self.linear_light else ""))
        if self.sharpen_amount:
            sharp = f"sharpen {self.sharpen_amount:g}"
            if self.sharpen_radius != 1.0:
                sharp += f" r{self.sharpen_radius:g}"
            if self.sharpen_threshold:
                sharp += f" t{self.sharpen_threshold:g}"
            parts.append(sharp)
        return " + ".join(parts) or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Transform:
        """Build from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise InvalidParameterError(f"transform must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise InvalidParameterError(
                f"unknown transform key{plural} {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return cls(**dict(data))
