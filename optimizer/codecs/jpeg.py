"""JPEG through Pillow (libjpeg-turbo).

JPEG has no alpha: images with alpha are composited over white, the background used for scoring, so the
encoded pixels are exactly what the metrics compared against.

Metadata: EXIF (APP1), ICC (APP2, split over several markers when large) and XMP (APP1). One marker holds
at most 65,533 bytes: a larger EXIF block or XMP packet (extended XMP) is not written, with a warning.

Progressive scans and optimised Huffman tables are on by default: they change only the entropy coding (the
decoded pixels are identical) and save about 4% of the bytes on Kodak, so ``encode``, ``compress`` and the
search spaces all start from the encoding a cjpeg or mozjpeg user already gets (the baseline of
:func:`~optimizer.tuning.settings.baseline_settings`). Turn them off with ``progressive=False`` or
``optimize=False`` for baseline sequential files.
"""

from __future__ import annotations

from typing import Any

from ..imageio.metadata import Metadata, MetadataKind, warn_once
from .base import Param, PillowCodec, _feature_version

__all__ = ["JpegCodec"]

#: The payload of one JPEG marker segment (65,535 less its length field), less the identifying prefix.
_MAX_EXIF = 65533 - len(b"Exif\x00\x00")
_MAX_XMP = 65533 - len(b"http://ns.adobe.com/xap/1.0/\x00")

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


class JpegCodec(PillowCodec):
    name = "jpeg"
    aliases = ("jpg",)
    extension = ".jpg"
    extensions = (".jpg", ".jpeg", ".jpe", ".jfif")
    mime_type = "image/jpeg"
    supports_alpha = False
    pil_format = "JPEG"
    pil_feature = "jpg"
    metadata_kinds = frozenset({"exif", "icc", "xmp"})
    quality_param = "quality"
    params = (
        Param("quality", "int", 75, 1, 100, description="libjpeg quality scale; higher keeps more detail"),
        Param("subsampling", "choice", "4:2:0", choices=SUBSAMPLINGS, description="chroma subsampling"),
        Param("progressive", "bool", True, description="progressive scan order (usually a few % smaller)"),
        Param("optimize", "bool", True, description="optimised Huffman tables (smaller, same pixels)"),
    )

    def library_versions(self) -> dict[str, str]:
        versions = super().library_versions()
        turbo = _feature_version("libjpeg_turbo")
        if turbo:
            versions["libjpeg-turbo"] = turbo
        libjpeg = _feature_version("jpg")
        if libjpeg:
            versions["libjpeg"] = libjpeg
        return versions

    def _metadata_options(self, tags: Metadata) -> dict[str, Any]:
        limits: dict[MetadataKind, int] = {"exif": _MAX_EXIF, "xmp": _MAX_XMP}
        too_long = [kind for kind, limit in limits.items() if len(getattr(tags, kind) or b"") > limit]
        for kind in too_long:
            warn_once(
                f"jpeg:{kind}-size",
                f"jpeg: {kind.upper()} metadata over {limits[kind]:,} bytes does not fit one JPEG marker; not written",
            )
        return super()._metadata_options(tags.without(*too_long))

    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "quality": params["quality"],
            "subsampling": params["subsampling"],
            "progressive": params["progressive"],
            "optimize": params["optimize"],
        }
