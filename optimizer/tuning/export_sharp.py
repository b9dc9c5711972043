"""The ``sharp`` (Node.js, libvips) export: an options object and the program that runs it.

Part of :mod:`optimizer.tuning.export`. The program is CommonJS (``require``) with a promise chain, so it
runs as printed under Node.js 18+ (see :func:`sharp_script`); tested with the real ``sharp`` from npm in
``tests/test_export_tools.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ..transforms import Transform
from .settings import EncodingSettings

__all__ = ["sharp_parts", "sharp_script"]

_SHARP_KERNELS = {
    "lanczos": ("lanczos3", None),
    "bicubic": ("cubic", None),
    "bilinear": ("linear", None),
    "box": ("linear", "sharp has no box kernel; 'linear' is the nearest equivalent"),
    "hamming": ("lanczos2", "sharp has no Hamming kernel; 'lanczos2' (also support 2 lobes) is used"),
    "nearest": ("nearest", None),
}


def sharp_parts(settings: EncodingSettings, transform: Transform) -> tuple[dict[str, Any], list[str]]:
    """The sharp options object for ``settings`` after ``transform``, and where sharp differs (notes).

    Args:
        settings: The encoding settings.
        transform: The resize and sharpening step (already at the export's width).

    Returns:
        ``(options, notes)``.
    """
    codec = settings.codec
    p = settings.params
    notes: list[str] = []
    options: dict[str, Any] = {"rotate": True}
    if transform.resizes:
        kernel, note = _SHARP_KERNELS[transform.filter]
        if note:
            notes.append(note)
        resize: dict[str, Any] = {"kernel": kernel, "fastShrinkOnLoad": False}
        if transform.scale is not None:
            resize["scale"] = transform.scale
            notes.append("sharp resizes to sizes, not factors: compute width = round(source width * scale)")
        if transform.width is not None:
            resize["width"] = transform.width
        if transform.height is not None:
            resize["height"] = transform.height
            if transform.width is not None:
                resize["fit"] = "fill"
        options["resize"] = resize
        if transform.linear_light:
            notes.append("the tier resamples in linear light; sharp resizes in sRGB here")
    if transform.sharpen_amount:
        options["sharpen"] = {
            "sigma": transform.sharpen_radius,
            "m1": transform.sharpen_amount,
            "m2": transform.sharpen_amount,
            "x1": round(transform.sharpen_threshold * 100, 4),
            "y2": 100,
            "y3": 100,
        }
        notes.append(
            "sharp (libvips) sharpens the L* channel with slopes m1/m2 and a threshold x1 in L* units: an "
            "approximation of optimizer's RGB unsharp mask"
        )
    options["format"] = codec
    if codec == "jpeg":
        chroma = p["subsampling"]
        if chroma == "4:2:2":
            notes.append("sharp's JPEG writer offers 4:2:0 or 4:4:4, not 4:2:2; 4:4:4 is used (larger files)")
            chroma = "4:4:4"
        options["flatten"] = {"background": "#ffffff"}
        options["jpeg"] = {
            "quality": p["quality"],
            "chromaSubsampling": chroma,
            "progressive": p["progressive"],
            "optimiseCoding": p["optimize"],
            "mozjpeg": False,
        }
    elif codec == "webp":
        options["webp"] = {
            "quality": p["quality"],
            "effort": p["method"],
            "lossless": p["lossless"],
            "smartSubsample": False,
        }
        if p["lossless"]:
            options["webp"]["exact"] = True
    elif codec == "avif":
        chroma = p["subsampling"]
        if chroma == "4:2:2":
            notes.append("sharp's AVIF writer offers 4:2:0 or 4:4:4, not 4:2:2; 4:4:4 is used (larger files)")
            chroma = "4:4:4"
        effort = min(max(9 - int(p["speed"]), 0), 9)
        options["avif"] = {"quality": p["quality"], "effort": effort, "chromaSubsampling": chroma}
        notes.append(
            f"sharp's AVIF effort is 9 - libavif speed (speed {p['speed']} -> effort {effort}); sharp encodes "
            "through libheif, whose quality scale differs from libavif's"
        )
    elif codec == "jxl":
        options["jxl"] = {"distance": p["distance"], "effort": p["effort"], "lossless": p["distance"] == 0.0}
        notes.append("sharp writes JPEG XL only with a libvips built with libjxl (not the prebuilt binaries)")
    elif codec == "png":
        options["png"] = {"compressionLevel": p["compress_level"]}
    return options, notes


def sharp_script(options: Mapping[str, Any], input: str, output: str) -> str:
    """The Node.js program that runs ``options`` (:func:`sharp_parts`) on ``input`` into ``output``.

    CommonJS with a promise chain, no top-level ``await``: ``require`` and top-level ``await`` cannot be
    mixed in one file (CommonJS has no top-level await, an ES module has no ``require``), so this runs as
    written with ``node script.js`` (or ``script.cjs`` inside a ``"type": "module"`` package). A failure
    prints its message and exits 1.

    Args:
        options: The options object (``format`` names the output format's method).
        input: The input file.
        output: The output file.

    Returns:
        The program text.
    """
    codec = options["format"]
    lines = [
        "// CommonJS: run with `node FILE.js` (name it FILE.cjs inside a package whose type is module)",
        'const sharp = require("sharp");',
        "",
        f"sharp({json.dumps(input)})",
        "  .rotate()",
    ]
    if "resize" in options:
        lines.append(f"  .resize({_js(options['resize'])})")
    if "sharpen" in options:
        lines.append(f"  .sharpen({_js(options['sharpen'])})")
    if "flatten" in options:
        lines.append(f"  .flatten({_js(options['flatten'])})")
    lines.append(f"  .{codec}({_js(options[codec])})")
    lines.append(f"  .toFile({json.dumps(output)})")
    lines.append("  .catch((error) => {")
    lines.append("    console.error(error.message);")
    lines.append("    process.exitCode = 1;")
    lines.append("  });")
    return "\n".join(lines)


def _js(value: Mapping[str, Any]) -> str:
    """A JavaScript object literal (JSON with unquoted identifier keys)."""
    parts = []
    for key, item in value.items():
        text = json.dumps(item) if not isinstance(item, float) or math.isfinite(item) else "null"
        parts.append(f"{key}: {text}")
    return "{ " + ", ".join(parts) + " }"
