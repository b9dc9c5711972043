"""Metadata of image files: what loading captures (EXIF, ICC, XMP) and which of it an encoder writes.

:class:`Metadata` holds the three kinds as bytes, as the source file stored them: ``exif`` as a TIFF
structure (``II*\\0`` or ``MM\\0*``, without the ``Exif\\0\\0`` prefix JPEG puts before it), ``icc`` the
embedded colour profile and ``xmp`` the XMP packet. :func:`~optimizer.imageio.load_image` keeps it on the
:class:`~optimizer.imageio.Image` (``image.metadata``), beside the pixels, and transforms carry it along.

:class:`MetadataPolicy` says what an output keeps, in cwebp's words: ``all``, ``none``, or a comma list of
``exif``, ``icc`` and ``xmp``; plus ``web``, the default of ``encode``, ``apply`` and ``compress``:

* EXIF reduced to the rights: ``Artist`` and ``Copyright`` (nothing when the source has neither). Camera
  make and model, GPS position, dates, thumbnails and maker notes cost bytes and often privacy.
* ICC only where the colours need it: when the pixels are not sRGB (``color="keep"`` on a Display P3 or
  Adobe RGB source). An sRGB file needs no profile: untagged images are shown as sRGB.
* No XMP (editing history, often kilobytes).

What is written, whatever the policy:

* **Orientation** is applied to the pixels at load, so every EXIF block written says orientation 1 (the tag
  is rewritten in place, the rest of the block is kept byte for byte), and ``tiff:Orientation`` in XMP is
  rewritten to 1 the same way. AVIF stores orientation in its own boxes: Pillow moves the EXIF tag there,
  so an AVIF's EXIF has no orientation tag and no rotation box (upright).
* **ICC** describes the pixels written: the source's profile when the pixels are still in it (``color=
  "keep"``, written even with ``none``, because it is colour, not metadata), the source's own profile when it
  is sRGB or equivalent, and an sRGB profile when the source's colours were converted to sRGB. A profile
  LittleCMS cannot read, or one for grey or CMYK data, is never copied.

Formats: JPEG, WebP, AVIF and PNG carry all three kinds (JPEG: EXIF and XMP up to 65,533 bytes each, no
extended XMP). JPEG XL carries EXIF and XMP (as ``Exif`` and ``xml `` boxes of the container) but no ICC:
imagecodecs offers no way to embed one, so pixels kept in a wide-gamut profile are converted to sRGB for
JPEG XL, and a :class:`MetadataWarning` says so once per process (as for any kind a format cannot carry).
See ``docs/metadata.md`` for the table checked against exiftool.
"""

from __future__ import annotations

import re
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from .image import Image

__all__ = [
    "DEFAULT_METADATA",
    "METADATA_KINDS",
    "Metadata",
    "MetadataKind",
    "MetadataPolicy",
    "MetadataWarning",
    "capture_metadata",
    "exif_tiff",
    "rights_exif",
    "upright_exif",
    "upright_xmp",
    "warn_once",
]

MetadataKind = Literal["exif", "icc", "xmp"]
#: The kinds of metadata, in cwebp's words.
METADATA_KINDS: tuple[MetadataKind, ...] = get_args(MetadataKind)
#: The policy of ``encode``, ``apply`` and ``compress`` when none is given (see the module docs).
DEFAULT_METADATA = "web"

_EXIF_PREFIX = b"Exif\x00\x00"
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
_ORIENTATION = 0x0112
_ARTIST = 0x013B
_COPYRIGHT = 0x8298
_SHORT = 3
_XMP_ORIENTATION = (
    re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\s*[0-9]+\s*([\"'])"),
    re.compile(rb"(<tiff:Orientation>)\s*[0-9]+\s*(</tiff:Orientation>)"),
)


class MetadataWarning(UserWarning):
    """Metadata the policy asks for cannot be written in this format, or could not be read."""


@dataclass(frozen=True)
class Metadata:
    """EXIF (a TIFF structure), ICC profile and XMP packet of an image file; ``None`` where absent."""

    exif: bytes | None = None
    icc: bytes | None = None
    xmp: bytes | None = None

    def __post_init__(self) -> None:
        for kind in METADATA_KINDS:
            value = getattr(self, kind)
            if value is not None and not isinstance(value, bytes):
                raise InvalidParameterError(f"metadata {kind} must be bytes or None, got {type(value).__name__}")
            if value == b"":
                object.__setattr__(self, kind, None)

    @property
    def kinds(self) -> tuple[MetadataKind, ...]:
        """The kinds present, in :data:`METADATA_KINDS` order."""
        return tuple(kind for kind in METADATA_KINDS if getattr(self, kind) is not None)

    @property
    def is_empty(self) -> bool:
        return not self.kinds

    def without(self, *kinds: MetadataKind) -> Metadata:
        """A copy with ``kinds`` removed."""
        return Metadata(**{k: None if k in kinds else getattr(self, k) for k in METADATA_KINDS})

    def __repr__(self) -> str:
        sizes = ", ".join(f"{kind}={len(getattr(self, kind))} bytes" for kind in self.kinds)
        return f"Metadata({sizes})"


_Exif = Literal["all", "rights", "none"]
_Icc = Literal["all", "needed", "none"]


@dataclass(frozen=True)
class MetadataPolicy:
    """Which metadata an output keeps (see the module docs); build it with :meth:`parse`.

    ``exif``: ``all`` (orientation rewritten to 1), ``rights`` (Artist and Copyright only) or ``none``.
    ``icc``: ``all`` (the profile describing the pixels written), ``needed`` (only when they are not sRGB)
    or ``none`` (still written when the pixels are not sRGB). ``xmp``: keep the packet (orientation
    rewritten to 1).
    """

    exif: _Exif = "rights"
    icc: _Icc = "needed"
    xmp: bool = False

    @classmethod
    def parse(cls, value: str | MetadataPolicy | None) -> MetadataPolicy:
        """A policy from ``all``, ``none``, ``web`` or a comma list of ``exif``, ``icc``, ``xmp``.

        Args:
            value: The policy text, a policy (returned as is), or None for :data:`DEFAULT_METADATA`.

        Returns:
            The policy.

        Raises:
            InvalidParameterError: for any other text.
        """
        if isinstance(value, MetadataPolicy):
            return value
        if value is None:
            value = DEFAULT_METADATA
        if not isinstance(value, str):
            raise InvalidParameterError(f"metadata must be a string such as 'all' or 'exif,icc', got {value!r}")
        text = value.strip().lower()
        if text == "web":
            return cls()
        if text == "all":
            return cls("all", "all", True)
        if text == "none":
            return cls("none", "none", False)
        words = [w.strip() for w in text.split(",") if w.strip()]
        unknown = [w for w in words if w not in METADATA_KINDS]
        if not words or unknown:
            raise InvalidParameterError(
                "metadata must be all, none, web or a comma list of exif, icc and xmp, "
                f"got {value!r}" + (f" ({', '.join(repr(w) for w in unknown)} unknown)" if unknown else "")
            )
        return cls("all" if "exif" in words else "none", "all" if "icc" in words else "none", "xmp" in words)

    def __str__(self) -> str:
        if self == MetadataPolicy():
            return "web"
        if self == MetadataPolicy("all", "all", True):
            return "all"
        if self == MetadataPolicy("none", "none", False):
            return "none"
        kinds = [k for k, on in (("exif", self.exif == "all"), ("icc", self.icc == "all"), ("xmp", self.xmp)) if on]
        if self.exif == "rights" or self.icc == "needed" or not kinds:
            return f"MetadataPolicy(exif={self.exif!r}, icc={self.icc!r}, xmp={self.xmp})"
        return ",".join(kinds)

    def select(self, image: Image) -> Metadata:
        """The metadata to write for ``image``: its source's, filtered by this policy and made upright.

        Args:
            image: The image about to be encoded (its ``metadata``, ``profile`` and ``info``).

        Returns:
            The bytes to embed, per kind (``None`` where nothing is written).
        """
        source = image.metadata
        exif = None
        if source.exif is not None and self.exif != "none":
            exif = upright_exif(source.exif) if self.exif == "all" else rights_exif(source.exif)
        xmp = upright_xmp(source.xmp) if self.xmp and source.xmp is not None else None
        return Metadata(exif=exif, icc=self._icc(image), xmp=xmp)

    def _icc(self, image: Image) -> bytes | None:
        if image.profile is not None:
            return image.profile  # the pixels are in it: colour, not metadata
        if self.icc != "all" or image.metadata.icc is None:
            return None
        if image.info.icc_converted:
            return srgb_profile()  # the source's colours were converted: the pixels are sRGB now
        return image.metadata.icc


_srgb_lock = threading.Lock()
_srgb_bytes: bytes | None = None


def srgb_profile() -> bytes:
    """LittleCMS's built-in sRGB profile (588 bytes), for pixels converted to sRGB from another profile."""
    global _srgb_bytes
    with _srgb_lock:
        if _srgb_bytes is None:
            from PIL import ImageCms

            _srgb_bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        return _srgb_bytes


# --------------------------------------------------------------------------------------------------
# EXIF


def exif_tiff(data: bytes | None) -> bytes | None:
    """EXIF bytes as a TIFF structure: the ``Exif\\0\\0`` prefix removed; None unless a TIFF header starts it.

    Args:
        data: EXIF as a file stores it (JPEG's APP1 payload, PNG's ``eXIf``, WebP's ``EXIF`` chunk...).

    Returns:
        The TIFF structure, or None.
    """
    if not data:
        return None
    if data.startswith(_EXIF_PREFIX):
        data = data[len(_EXIF_PREFIX) :]
    return bytes(data) if data[:4] in _TIFF_HEADERS else None


def _ifd0_entries(tiff: bytes) -> tuple[str, list[tuple[int, int, int, int]]] | None:
    """(struct byte order, [(entry offset, tag, type, count)]) of IFD0, or None when it does not fit."""
    order = "<" if tiff.startswith(b"II") else ">"
    if len(tiff) < 8:
        return None
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd < 8 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    entries = []
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack_from(order + "HHI", tiff, at)
        entries.append((at, tag, kind, n))
    return order, entries


def upright_exif(tiff: bytes) -> bytes | None:
    """``tiff`` with its orientation tag set to 1 (top-left), everything else kept byte for byte.

    Args:
        tiff: EXIF as a TIFF structure (:func:`exif_tiff`).

    Returns:
        The rewritten block, or None when IFD0 cannot be read (a broken block is not copied).
    """
    parsed = _ifd0_entries(tiff)
    if parsed is None:
        return None
    order, entries = parsed
    out = bytearray(tiff)
    for at, tag, kind, count in entries:
        if tag == _ORIENTATION and kind == _SHORT and count == 1:
            struct.pack_into(order + "H", out, at + 8, 1)
    return bytes(out)


def rights_exif(tiff: bytes) -> bytes | None:
    """A new EXIF block holding only the source's ``Artist`` and ``Copyright``; None when it has neither.

    Args:
        tiff: EXIF as a TIFF structure.

    Returns:
        The small block (a TIFF structure), or None.
    """
    from PIL import Image as PILImage

    source = PILImage.Exif()
    try:
        source.load(tiff)
        kept = {tag: source[tag] for tag in (_ARTIST, _COPYRIGHT) if source.get(tag)}
    except Exception:  # noqa: BLE001 - Pillow raises many kinds of errors on malformed EXIF blocks
        return None
    if not kept:
        return None
    out = PILImage.Exif()
    for tag, value in kept.items():
        out[tag] = value
    return exif_tiff(out.tobytes())


def upright_xmp(xmp: bytes) -> bytes:
    """``xmp`` with every ``tiff:Orientation`` (attribute or element) set to 1."""
    for pattern in _XMP_ORIENTATION:
        xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    return xmp


# --------------------------------------------------------------------------------------------------
# Capture


def capture_metadata(pil: PILImage.Image, icc: bytes | None) -> Metadata:
    """The metadata Pillow read from a file: EXIF (as TIFF), the ICC profile when it is a usable RGB one,
    and XMP (PNG's iTXt text encoded as UTF-8, TIFF's tag 700).

    Args:
        pil: The opened image.
        icc: Its embedded profile (already read by the caller).

    Returns:
        The :class:`Metadata`.
    """
    info: dict[Any, Any] = pil.info
    exif = info.get("exif")
    xmp: Any = info.get("xmp")
    if xmp is None and hasattr(pil, "tag_v2"):
        xmp = pil.tag_v2.get(700)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return Metadata(
        exif=exif_tiff(bytes(exif)) if isinstance(exif, (bytes, bytearray)) else None,
        icc=icc if icc and rgb_profile(icc) else None,
        xmp=bytes(xmp) if isinstance(xmp, (bytes, bytearray)) else None,
    )


def rgb_profile(icc: bytes) -> bool:
    """Whether ``icc`` is a profile LittleCMS can open whose data colour space is RGB."""
    if len(icc) < 20 or icc[16:20] != b"RGB ":
        return False
    import io

    from PIL import ImageCms

    try:
        ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return False
    return True


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(key: str, message: str) -> None:
    """Issue a :class:`MetadataWarning` the first time ``key`` is seen in this process."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, MetadataWarning, stacklevel=3)
