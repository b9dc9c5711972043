"""AVIF through Pillow: its native AVIF support (Pillow 11.2+) or, without it, ``pillow-avif-plugin``.

Both wrap libavif with the same options and give byte-identical output. EXIF, ICC and XMP are written as items of the file; Pillow moves
an EXIF orientation into AVIF's own rotation boxes and removes the tag. Importing ``pillow_avif`` replaces
Pillow's handler, so the backend that actually encodes is read from Pillow's registry each time
:meth:`AvifCodec.library_versions` is asked, not assumed. Alpha is kept.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from .base import Param, PillowCodec, _feature_version

__all__ = ["AvifCodec"]

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


@functools.lru_cache(maxsize=1)
def _ensure_handler() -> bool:
    """Register an AVIF handler with Pillow (native first, then the plugin); whether one exists."""
    from PIL import Image as PILImage
    from PIL import features

    PILImage.init()
    if "AVIF" in PILImage.SAVE and (features.check("avif") or "pillow_avif" in PILImage.SAVE["AVIF"].__module__):
        return True
    try:
        importlib.import_module("pillow_avif")
    except ImportError:
        return False
    return "AVIF" in PILImage.SAVE


class AvifCodec(PillowCodec):
    name = "avif"
    extension = ".avif"
    extensions = (".avif",)
    mime_type = "image/avif"
    supports_alpha = True
    pil_format = "AVIF"
    pil_feature = "avif"
    metadata_kinds = frozenset({"exif", "icc", "xmp"})
    quality_param = "quality"
    install_hint = "install Pillow >= 11.2 built with libavif, or pip install pillow-avif-plugin"
    params = (
        Param("quality", "int", 75, 1, 100, description="libavif quality scale; higher keeps more detail"),
        Param("speed", "int", 6, 0, 10, description="encoder speed: 0 slowest/smallest, 10 fastest"),
        Param("subsampling", "choice", "4:2:0", choices=SUBSAMPLINGS, description="chroma subsampling"),
    )

    def available(self) -> bool:
        return _ensure_handler()

    def library_versions(self) -> dict[str, str]:
        from PIL import Image as PILImage

        versions = super().library_versions()
        if not _ensure_handler():
            return versions
        module = PILImage.SAVE["AVIF"].__module__
        if module.startswith("pillow_avif"):
            plugin = importlib.import_module("pillow_avif")
            backend = importlib.import_module("pillow_avif._avif")
            versions["backend"] = "pillow-avif-plugin"
            versions["pillow-avif-plugin"] = str(getattr(plugin, "__version__", "unknown"))
        else:
            backend = importlib.import_module("PIL._avif")
            versions["backend"] = "pillow"
        libavif = getattr(backend, "libavif_version", None) or _feature_version("avif")
        if libavif:
            versions["libavif"] = str(libavif)
        if hasattr(backend, "codec_versions"):
            versions["av1-codecs"] = str(backend.codec_versions())
        return versions

    def _save_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"quality": params["quality"], "speed": params["speed"], "subsampling": params["subsampling"]}

    def _thread_options(self, threads: int) -> dict[str, Any]:
        return {"max_threads": threads}
