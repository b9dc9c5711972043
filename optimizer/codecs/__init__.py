"""Image codecs behind one interface (see :mod:`optimizer.codecs.base`), and their registry.

Registered: ``jpeg``, ``webp``, ``avif``, ``jxl`` (needs the ``jxl`` extra) and ``png`` (the lossless
reference). Importing this package imports Pillow but no encoder library beyond it; imagecodecs and
``pillow_avif`` load when first asked for.
"""

from __future__ import annotations

from .avif import AvifCodec
from .base import Codec, Param, PillowCodec
from .jpeg import JpegCodec
from .jxl import JxlCodec
from .png import PngCodec
from .registry import available_codecs, codec_for_extension, codec_names, get_codec, register_codec
from .webp import WebpCodec

__all__ = [
    "AvifCodec",
    "Codec",
    "JpegCodec",
    "JxlCodec",
    "Param",
    "PillowCodec",
    "PngCodec",
    "WebpCodec",
    "available_codecs",
    "codec_for_extension",
    "codec_names",
    "get_codec",
    "register_codec",
]

for _codec in (JpegCodec(), WebpCodec(), AvifCodec(), JxlCodec(), PngCodec()):
    register_codec(_codec)
del _codec
