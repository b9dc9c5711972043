"""WebP through Pillow (libwebp).

Lossy WebP is always 4:2:0. With ``lossless=True`` the pixels are exact (``exact`` is set so colour under
fully transparent pixels is kept too) and libwebp reads ``quality`` and ``method`` as compression effort:
higher means smaller and slower, not better looking. Alpha is kept. EXIF, ICC and XMP are written as the
``EXIF``, ``ICCP`` and ``XMP`` chunks of an extended (VP8X) file. ``quality`` starts at 1, as for every
codec here, although libwebp would accept 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Param, PillowCodec, _feature_version

__all__ = ["WebpCodec"]


class WebpCodec(PillowCodec):
    name = "webp"
    extension = ".webp"
    extensions = (".webp",)
    mime_type = "image/webp"
    supports_alpha = True
    pil_format = "WEBP"
    pil_feature = "webp"
    metadata_kinds = frozenset({"exif", "icc", "xmp"})
    quality_param = "quality"
    params = (
        Param("quality", "int", 80, 1, 100, description="lossy quality; with lossless=True, compression effort"),
        Param("method", "int", 4, 0, 6, description="encoder effort: 0 fastest, 6 smallest"),
        Param("lossless", "bool", False, description="lossless mode (exact pixels, alpha included)"),
    )

    def library_versions(self) -> dict[str, str]:
        versions = super().library_versions()
        libwebp = _feature_version("webp")
        if libwebp:
            versions["libwebp"] = libwebp
        return versions

    def is_lossless(self, params: Mapping[str, Any] | None = None) -> bool:
        return bool(self.validate_params(params)["lossless"])

    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "quality": params["quality"],
            "method": params["method"],
            "lossless": params["lossless"],
        }
        if params["lossless"]:
            options["exact"] = True
        return options
