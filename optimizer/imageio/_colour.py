"""Colour and orientation at load time: embedded ICC profiles to sRGB, and the EXIF orientation.

* ICC: colour is converted through an embedded profile to sRGB with LittleCMS (Pillow's ``ImageCms`` at 8
  bits; imagecodecs' LittleCMS at 16 bits into float). When the conversion moves no pixel by more than one
  8-bit level (an embedded sRGB profile, or an equivalent one) the file's own pixels are kept, so a profile
  adds no rounding noise; this is decided on the pixels, never on the profile's name. A profile LittleCMS
  cannot read, or one for another colour space, is ignored with an :class:`IccWarning` and the pixels are
  taken as sRGB. CMYK without a profile uses Pillow's naive conversion; ``LAB`` images use the CIELAB D50
  profile. PNG ``gAMA``/``cHRM`` chunks are not applied. Converting an RGB profile whose colours lie outside
  sRGB (Display P3, Adobe RGB) clips them: a :class:`GamutWarning` gives the share of pixels. With
  ``color="keep"`` the pixels of an RGB profile stay in it and the image names the profile instead.
* EXIF orientation (tag 0x0112, which Pillow also reads from XMP) turns stored pixels into displayed ones.
  A broken EXIF block costs the orientation (an :class:`ImageWarning`), never the pixels.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms

from . import _optional
from ._warn import GamutWarning, IccWarning, ImageWarning, warn

__all__ = [
    "Colour",
    "Converted",
    "grey_to_rgb",
    "orient",
    "orientation",
    "out_of_gamut_share",
    "profile_name",
    "profile_to_srgb",
    "rgb8_to_float",
    "to_srgb",
]

#: A decoded colour plane: either a PIL image in an 8-bit mode LittleCMS understands (L, RGB, CMYK, LAB), or
#: an H x W x 1|3 numpy array of uint16 (16-bit data) or float32 in [0, 1].
Colour = PILImage.Image | np.ndarray

_ORIENTATION_TAG = 0x0112


class Converted(NamedTuple):
    """Decoded colour as float32 RGB: the pixels, whether an ICC profile changed them, their bit depth, and
    the profile they are still in (``color="keep"``; None: they are sRGB)."""

    rgb: np.ndarray
    icc_converted: bool
    bit_depth: int
    profile: bytes | None = None


def to_srgb(colour: Colour, icc: bytes | None, label: str, *, keep: bool = False) -> Converted:
    """Float32 ``H x W x 3`` from decoded colour, converted to sRGB through ``icc``.

    With ``keep``, RGB pixels that their profile would change stay as they are and the result names the
    profile (grey, CMYK and LAB data are converted all the same). Without it, colours of an RGB profile
    that lie outside sRGB are clipped, and a :class:`GamutWarning` says how many.
    """
    profile = _open_profile(icc, label) if icc else None
    if isinstance(colour, np.ndarray):
        if colour.dtype != np.uint16:
            if profile is not None:
                warn(f"{label}: ICC profile not applied to floating-point pixels; taken as sRGB", IccWarning)
            return Converted(grey_to_rgb(colour.astype(np.float32, copy=False)), False, 32)
        rgb = grey_to_rgb(colour.astype(np.float32) / np.float32(65535.0))
        if profile is None or icc is None:
            return Converted(rgb, False, 16)
        if _cms16_available():
            converted = _cms16(colour, icc, label)
            if converted is None:
                return Converted(rgb, False, 16)
            return _outcome(rgb, converted, 16, icc, label, keep=keep and colour.shape[2] == 3)
        colour = _quantise8(colour)  # no 16-bit LittleCMS here: convert at 8 bits with Pillow
    if colour.mode == "LAB":
        srgb = ImageCms.profileToProfile(
            colour, ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
        return Converted(rgb8_to_float(srgb if srgb is not None else colour.convert("RGB")), False, 8)
    rgb = rgb8_to_float(colour if colour.mode == "RGB" else colour.convert("RGB"))
    if profile is None or icc is None:
        return Converted(rgb, False, 8)
    converted8 = _cms8(colour, profile, label)
    if converted8 is None:
        return Converted(rgb, False, 8)
    return _outcome(rgb, rgb8_to_float(converted8), 8, icc, label, keep=keep and colour.mode == "RGB")


def _outcome(
    original: np.ndarray, converted: np.ndarray, depth: int, icc: bytes, label: str, *, keep: bool
) -> Converted:
    """Keep the file's own pixels when the profile moved none of them by more than one 8-bit level.

    That is what an embedded sRGB profile (or an equivalent one) does: applying it would only add LittleCMS
    rounding noise. Decided on the pixels, not the profile's name ("Linear sRGB" is not sRGB). Otherwise the
    converted pixels, or with ``keep`` (an RGB profile) the original ones named with their profile.
    """
    if float(np.abs(converted - original).max()) <= 1.0 / 255.0 + 1e-6:
        return Converted(original, False, depth)
    rgb_space = icc[16:20] == b"RGB "
    if keep and rgb_space:
        return Converted(original, False, depth, icc)
    if rgb_space:
        _warn_gamut(original, icc, label)
    return Converted(converted, True, depth)


def profile_to_srgb(rgb: np.ndarray, icc: bytes, bit_depth: int, label: str) -> np.ndarray:
    """Pixels kept in their profile (``color="keep"``), converted to sRGB exactly as loading would have.

    Args:
        rgb: Float32 ``H x W x 3`` in the profile's space.
        icc: The profile.
        bit_depth: Their precision (8, or 16 for 16-bit sources).
        label: The source named in warnings.

    Returns:
        Float32 sRGB pixels (no gamut warning: the caller chose to keep the profile).
    """
    if bit_depth > 8 and _cms16_available():
        wide = np.clip(np.rint(rgb * 65535.0), 0, 65535).astype(np.uint16)
        converted = _cms16(wide, icc, label)
        return rgb if converted is None else converted
    pixels = PILImage.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8), "RGB")
    profile = _open_profile(icc, label)
    converted8 = _cms8(pixels, profile, label) if profile is not None else None
    return rgb if converted8 is None else rgb8_to_float(converted8)


#: A colour is outside sRGB when converting it to sRGB and back moves it by more than this many 8-bit
#: levels: an in-gamut colour comes back within 2 (it is rounded twice).
GAMUT_TOLERANCE = 3


def out_of_gamut_share(original: np.ndarray, icc: bytes) -> float:
    """The share of pixels whose colour (float32 RGB in the space of ``icc``) lies outside sRGB.

    Measured at 8 bits by a round trip through sRGB with LittleCMS: an in-gamut colour comes back within
    :data:`GAMUT_TOLERANCE` levels, a clipped one does not.

    Args:
        original: ``H x W x 3`` float32 pixels in the profile's space.
        icc: The profile.

    Returns:
        The share in [0, 1].
    """
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    srgb = ImageCms.createProfile("sRGB")
    pixels8 = np.clip(np.rint(original * 255.0), 0, 255).astype(np.uint8)
    there = ImageCms.profileToProfile(PILImage.fromarray(pixels8, "RGB"), source, srgb, outputMode="RGB")
    back = ImageCms.profileToProfile(there, srgb, source, outputMode="RGB") if there is not None else None
    if back is None:
        return 0.0
    moved = np.abs(np.asarray(back, dtype=np.int16) - pixels8.astype(np.int16)).max(axis=2)
    return float(np.count_nonzero(moved > GAMUT_TOLERANCE)) / float(moved.size)


def _warn_gamut(original: np.ndarray, icc: bytes, label: str) -> None:
    try:
        share = out_of_gamut_share(original, icc)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return
    if share > 0.0:
        warn(
            f"{label}: {share:.2%} of its pixels hold colours of its {profile_name(icc)} profile outside sRGB; "
            "converting to sRGB clipped them (load with color='keep', or --color keep, to keep the profile)",
            GamutWarning,
        )


def profile_name(icc: bytes) -> str:
    """The profile's description (``Display P3``), or ``ICC`` when it has none."""
    try:
        text = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return "ICC"
    return text or "ICC"


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
    codecs = _optional.imagecodecs()
    return codecs is not None and bool(codecs.CMS.available)


def _cms16(colour: np.ndarray, icc: bytes | None, label: str) -> np.ndarray | None:
    """16-bit grey or RGB through LittleCMS (imagecodecs) to float32 sRGB; None (warned) when it fails."""
    codecs = _optional.imagecodecs()
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
    warn(f"{label}: ignoring unusable ICC profile ({exc}); pixels treated as sRGB", IccWarning)


def _quantise8(arr16: np.ndarray) -> PILImage.Image:
    arr8 = ((arr16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return PILImage.fromarray(arr8[..., 0], "L") if arr8.shape[2] == 1 else PILImage.fromarray(arr8, "RGB")


def grey_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr, dtype=np.float32)


def rgb8_to_float(colour: PILImage.Image) -> np.ndarray:
    rgb = np.array(colour, dtype=np.float32)  # a fresh array: divided in place, no second float copy
    rgb /= np.float32(255.0)
    return rgb


def orientation(pil: PILImage.Image, label: str) -> int:
    """The EXIF orientation 1..8 (1 when absent, invalid or unreadable: broken EXIF never costs the pixels)."""
    try:
        value = int(pil.getexif().get(_ORIENTATION_TAG, 1))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds of errors on malformed EXIF blocks
        problem = str(exc) or type(exc).__name__
        warn(f"{label}: ignoring a broken EXIF block ({problem}); orientation taken as upright", ImageWarning)
        return 1
    return value if 1 <= value <= 8 else 1


def orient(arr: np.ndarray, orientation: int) -> np.ndarray:
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
