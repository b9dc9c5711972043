"""PNG through Pillow (zlib): the lossless reference format.

Settings change only size and speed, never pixels. Encoding is 8-bit RGB or RGBA like every codec here.
Metadata: EXIF as an ``eXIf`` chunk, ICC as ``iCCP`` and XMP as the ``iTXt`` chunk ``XML:com.adobe.xmp``.
"""

from __future__ import annotations

from typing import Any

from ..imageio.metadata import Metadata
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
    metadata_kinds = frozenset({"exif", "icc", "xmp"})
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

    def _metadata_options(self, tags: Metadata) -> dict[str, Any]:
        options = super()._metadata_options(tags.without("xmp"))
        if tags.xmp is not None:
            from PIL.PngImagePlugin import PngInfo

            text = PngInfo()
            text.add_itxt("XML:com.adobe.xmp", tags.xmp.decode("utf-8", "replace"))
            options["pnginfo"] = text
        return options

    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"compress_level": params["compress_level"], "optimize": params["optimize"]}
