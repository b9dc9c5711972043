"""PNG through Pillow (zlib): the lossless reference format.

Settings change only size and speed, never pixels. Encoding is 8-bit RGB or RGBA like every codec here.
"""

from __future__ import annotations

from typing import Any

from .base import Param, PillowCodec, _feature_version

__all__ = ["PngCodec"]


class PngCodec(PillowCodec):
    name = "png"
    extension = ".png"
    extensions = (".png",)
    mime_type = "image/png"
    lossless = True
    supports_alpha = True
    pil_format = "PNG"
    pil_feature = "zlib"
    quality_param = None
    params = (
        Param("compress_level", "int", 6, 0, 9, description="zlib level: 0 stored, 9 smallest"),
        Param("optimize", "bool", False, description="search filter/compression settings for the smallest file"),
    )

    def library_versions(self) -> dict[str, str]:
        versions = super().library_versions()
        zlib = _feature_version("zlib")
        if zlib:
            versions["zlib"] = zlib
        return versions

    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"compress_level": params["compress_level"], "optimize": params["optimize"]}
