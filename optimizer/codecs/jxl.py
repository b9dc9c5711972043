"""JPEG XL through imagecodecs (libjxl), the ``jxl`` extra.

The parameter space is libjxl's own: ``distance`` (Butteraugli distance; 0 is lossless, 1 visually
lossless, lower is better) and ``effort`` (1 fastest .. 9 smallest). ``distance`` is the quality axis, so
``quality_higher_is_better`` is false. For users who think in cjxl's ``-q``, :meth:`JxlCodec.validate_params`
also accepts ``quality`` (1..100) and converts it with libjxl's ``JxlEncoderDistanceFromQuality`` mapping;
the validated params, and every preset, record only ``distance``.

``imagecodecs.jpegxl_encode`` encodes losslessly unless told otherwise, so every call passes ``lossless``
and ``distance`` explicitly: distance 0 is lossless, anything above is lossy.

Metadata: EXIF and XMP go into ``Exif`` and ``xml `` boxes of the JPEG XL container (ISO/IEC 18181-2),
appended after the codestream that imagecodecs writes in a container. JPEG XL keeps an ICC profile inside
the codestream, and imagecodecs offers no way to put one there: no ICC is written (pixels kept in a profile
are converted to sRGB first, see :mod:`optimizer.codecs.base`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..imageio import Image
from ..imageio.metadata import Metadata
from .base import Codec, Param

__all__ = ["JxlCodec", "distance_from_quality"]


def distance_from_quality(quality: float) -> float:
    """libjxl's quality -> distance mapping (cjxl ``-q``): 100 -> 0 (lossless), 90 -> 1.0, 30 -> 6.4."""
    if quality >= 100:
        return 0.0
    if quality >= 30:
        return 0.1 + (100 - quality) * 0.09
    return 53.0 / 3000.0 * quality * quality - 23.0 / 20.0 * quality + 25.0


@functools.lru_cache(maxsize=1)
def _imagecodecs() -> Any:
    try:
        module = importlib.import_module("imagecodecs")
    except ImportError:
        return None
    jpegxl = getattr(module, "JPEGXL", None)
    return module if jpegxl is not None and getattr(jpegxl, "available", False) else None


class JxlCodec(Codec):
    name = "jxl"
    aliases = ("jpegxl", "jpeg-xl")
    extension = ".jxl"
    extensions = (".jxl",)
    mime_type = "image/jxl"
    supports_alpha = True
    quality_param = "distance"
    quality_higher_is_better = False
    encoder_function = "imagecodecs.jpegxl_encode"
    metadata_kinds = frozenset({"exif", "xmp"})
    install_hint = "pip install 'optimizer[jxl]' (imagecodecs with JPEG XL support)"
    params = (
        Param("distance", "float", 1.0, 0.0, 25.0, description="Butteraugli distance: 0 lossless, 1 visually lossless"),
        Param("effort", "int", 7, 1, 9, description="encoder effort: 1 fastest, 9 smallest"),
    )
    _QUALITY = Param("quality", "int", 90, 1, 100, description="cjxl -q, converted to distance")

    def available(self) -> bool:
        return _imagecodecs() is not None

    def library_versions(self) -> dict[str, str]:
        module = _imagecodecs()
        if module is None:
            return {}
        return {"imagecodecs": str(module.__version__), "libjxl": str(module.jpegxl_version()).removeprefix("libjxl ")}

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """As the base, plus ``quality`` (1..100) as an alternative to ``distance``; never both."""
        if params is not None and isinstance(params, Mapping) and "quality" in params:
            if "distance" in params:
                raise InvalidParameterError(
                    f"jxl: give distance or quality, not both (got distance={params['distance']!r}, "
                    f"quality={params['quality']!r})"
                )
            rest = {k: v for k, v in params.items() if k != "quality"}
            quality = self._QUALITY.validate(params["quality"], owner=self.name)
            rest["distance"] = round(distance_from_quality(quality), 6)
            params = rest
        return super().validate_params(params)

    def _known(self) -> str:
        return super()._known() + " (quality is accepted instead of distance)"

    def is_lossless(self, params: Mapping[str, Any] | None = None) -> bool:
        return bool(self.validate_params(params)["distance"] == 0.0)

    def encoder_kwargs(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        checked = self.validate_params(params)
        return {"distance": checked["distance"], "lossless": checked["distance"] == 0.0, "effort": checked["effort"]}

    def _encode(self, image: Image, params: dict[str, Any], threads: int | None, container: bool = False) -> bytes:
        pixels = np.ascontiguousarray(image.to_uint8(keep_alpha=True))
        options = self.encoder_kwargs(params)
        if threads is not None:
            options["numthreads"] = threads
        if container:
            options["usecontainer"] = True
        return bytes(_imagecodecs().jpegxl_encode(pixels, **options))

    def _encode_tagged(self, image: Image, params: dict[str, Any], threads: int | None, tags: Metadata) -> bytes:
        data = _sized_boxes(self._encode(image, params, threads, container=True))
        if tags.exif is not None:
            data += _box(b"Exif", bytes(4) + tags.exif)  # 4 bytes: offset of the TIFF header after them
        if tags.xmp is not None:
            data += _box(b"xml ", tags.xmp)
        return data


def _sized_boxes(data: bytes) -> bytes:
    """``data`` with a last box that runs "to the end of the file" (size 0) given its size, so that boxes can
    follow it."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 0 and len(data) - pos < 2**32:
            return data[:pos] + (len(data) - pos).to_bytes(4, "big") + data[pos + 4 :]
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if size < 8:
            break
        pos += size
    return data


def _box(kind: bytes, payload: bytes) -> bytes:
    """An ISO BMFF box: 32-bit size, 4-byte type, payload."""
    return (8 + len(payload)).to_bytes(4, "big") + kind + payload
