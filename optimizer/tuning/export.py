"""Preset tiers as the settings of the tools people encode with.

For one tier (or one :class:`~optimizer.tuning.settings.EncodingSettings`) this module writes:

``pillow``
    ``PIL.Image.Image.save()`` keyword arguments (JPEG, WebP, AVIF, PNG) or, for JPEG XL, the
    ``imagecodecs.jpegxl_encode`` call, with a Python snippet that resizes and sharpens first.
``cjpeg`` / ``cwebp`` / ``avifenc`` / ``cjxl``
    Command lines for libjpeg-turbo, libwebp, libavif and libjxl's own tools.
``imagemagick``
    A ``magick`` (or ``convert``) command line, resize and sharpening included.
``sharp``
    A JSON-able options object for the Node.js ``sharp`` library and a JavaScript snippet.

How close each one gets (measured on Kodak, see ``tests/test_export_tools.py``):

* cjpeg and cwebp reproduce Pillow's bytes exactly when their library versions match ours: Pillow calls
  ``jpeg_set_quality`` and ``WebPConfigInit`` exactly as the tools do. cjpeg needs ``-baseline`` below
  quality 25, where Pillow clamps quantisation tables to 8 bits.
* avifenc: Pillow sets libavif's ``quality``, which libavif turns into the AV1 quantizer
  ``((100 - quality) * 63 + 50) // 100`` with a constant-quality rate control. avifenc before 1.0 has no
  ``-q``; the command sets the same quantizer through ``-a end-usage=q -a cq-level=Q`` with the quantizer
  range left open (``--min 0 --max 63``), as libavif 1.x does. Different libavif/libaom versions still give
  different files (libavif 1.4 with libaom 3.12+ tunes for ``iq`` by default).
* cjxl and ``imagecodecs.jpegxl_encode`` drive the same libjxl encoder with the same distance and effort.
* ImageMagick and sharp go through libheif for AVIF, whose quality scale differs from libavif's, and sharp
  sharpens the L* channel with its own curve: both are close, not equal. Each export lists such
  differences in :attr:`Export.notes`.

The resize and sharpening step: ImageMagick (``-filter``/``-resize``/``-unsharp``), sharp
(``resize``/``sharpen``) and Pillow do it themselves. cjpeg, cwebp, avifenc and cjxl cannot resize with a
chosen filter or unsharp-mask (cwebp's ``-resize`` uses its own fixed rescaler), so their exports start
with an ImageMagick command that writes the prepared image.

Inputs: optimizer converts embedded ICC profiles to sRGB and applies EXIF orientation before encoding.
The ImageMagick and sharp exports auto-orient; colour management of non-sRGB inputs is left to the tool.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ..codecs import get_codec
from ..errors import InvalidParameterError, UnknownNameError
from ..transforms import Transform
from .settings import EncodingSettings, transform_at_width

if TYPE_CHECKING:
    from .presets import PresetTier

__all__ = [
    "EXPORT_TOOLS",
    "Export",
    "avifenc_quantizer",
    "export_settings",
    "export_tier",
    "pillow_kwargs",
    "sharp_options",
    "tools_for_codec",
]

#: Export targets, in the order ``optimizer presets export --to`` lists them.
EXPORT_TOOLS: tuple[str, ...] = ("pillow", "cjpeg", "cwebp", "avifenc", "cjxl", "imagemagick", "sharp")

#: Codecs each tool writes (the others write every registered format they know).
_TOOL_CODECS: dict[str, tuple[str, ...]] = {
    "pillow": ("jpeg", "webp", "avif", "jxl", "png"),
    "cjpeg": ("jpeg",),
    "cwebp": ("webp",),
    "avifenc": ("avif",),
    "cjxl": ("jxl",),
    "imagemagick": ("jpeg", "webp", "avif", "jxl", "png"),
    "sharp": ("jpeg", "webp", "avif", "jxl", "png"),
}

_IM_FILTERS = {
    "lanczos": ["-filter", "Lanczos"],
    "bicubic": ["-filter", "Catrom"],  # Pillow's bicubic is Catmull-Rom (a = -0.5)
    "bilinear": ["-filter", "Triangle"],
    "box": ["-filter", "Box"],
    "hamming": ["-filter", "Hamming", "-define", "filter:lobes=1"],  # Pillow's Hamming has support 1
    "nearest": ["-filter", "Point"],
}
_SHARP_KERNELS = {
    "lanczos": ("lanczos3", None),
    "bicubic": ("cubic", None),
    "bilinear": ("linear", None),
    "box": ("linear", "sharp has no box kernel; 'linear' is the nearest equivalent"),
    "hamming": ("lanczos2", "sharp has no Hamming kernel; 'lanczos2' (also support 2 lobes) is used"),
    "nearest": ("nearest", None),
}
_PIL_FILTERS = {
    "lanczos": "LANCZOS",
    "bicubic": "BICUBIC",
    "bilinear": "BILINEAR",
    "box": "BOX",
    "hamming": "HAMMING",
    "nearest": "NEAREST",
}
_CJPEG_SAMPLING = {"4:2:0": "2x2", "4:2:2": "2x1", "4:4:4": "1x1"}


@dataclass(frozen=True)
class Export:
    """One tier in one tool's terms.

    ``commands`` are argument vectors run one after the other (a preparation step, when the tool cannot
    resize or sharpen, then the encoder); ``text`` is what to paste: a shell line, or Python/JavaScript
    code for ``pillow`` and ``sharp``. ``options`` holds JSON-able options (Pillow kwargs, sharp object).
    ``notes`` say where the tool differs from optimizer's own encoder.
    """

    tool: str
    codec: str
    text: str
    commands: tuple[tuple[str, ...], ...] = ()
    options: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    width: int | None = None
    output: str = ""

    @property
    def comment_prefix(self) -> str:
        return "//" if self.tool == "sharp" else "#"

    def render(self, *, notes: bool = True) -> str:
        """The text, followed by the notes as comments in the text's own language."""
        lines = [self.text]
        if notes:
            lines += [f"{self.comment_prefix} note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "codec": self.codec,
            "width": self.width,
            "output": self.output,
            "text": self.text,
            "commands": [list(c) for c in self.commands],
            "options": self.options,
            "notes": list(self.notes),
        }


def tools_for_codec(codec: str) -> list[str]:
    """The export tools that can write ``codec``."""
    name = get_codec(codec, require_available=False).name
    return [tool for tool in EXPORT_TOOLS if name in _TOOL_CODECS[tool]]


# --------------------------------------------------------------------------------------------------
# Entry points


def export_tier(
    tier: PresetTier,
    tool: str,
    *,
    input: str = "input.png",
    output: str | None = None,
    program: str = "magick",
) -> list[Export]:
    """Exports of ``tier`` for ``tool``: one per responsive width (one in all when the tier keeps the size).

    ``output`` defaults to ``output<ext>`` (``output-640w<ext>`` per width); with several widths a given
    ``output`` gets the same ``-<width>w`` suffix before its extension.
    """
    widths: list[int | None] = list(tier.widths) or [None]
    exports = []
    for width in widths:
        out = _output_name(tier.settings, output, width if len(widths) > 1 or output is None else None)
        exports.append(export_settings(tier.settings, tool, width=width, input=input, output=out, program=program))
    return exports


def export_settings(
    settings: EncodingSettings,
    tool: str,
    *,
    width: int | None = None,
    input: str = "input.png",
    output: str | None = None,
    program: str = "magick",
) -> Export:
    """The export of ``settings`` (resized to ``width`` first when given) for ``tool``."""
    key = str(tool).strip().lower()
    if key not in EXPORT_TOOLS:
        raise UnknownNameError("export tool", str(tool), list(EXPORT_TOOLS))
    codec = get_codec(settings.codec, require_available=False).name
    if codec not in _TOOL_CODECS[key]:
        raise InvalidParameterError(
            f"{key} does not write {codec}; tools for {codec}: {', '.join(tools_for_codec(codec))}"
        )
    transform = transform_at_width(settings.transform, width)
    out = output or _output_name(settings, None, width)
    builder = _BUILDERS[key]
    export: Export = builder(settings, transform, input, out, program)
    return replace(export, width=width, output=out)


def pillow_kwargs(settings: EncodingSettings) -> dict[str, Any]:
    """``PIL.Image.Image.save()`` keyword arguments (``format`` included) for a Pillow-encoded codec."""
    return dict(get_codec(settings.codec, require_available=False).pil_save_kwargs(settings.params))


def avifenc_quantizer(quality: int) -> int:
    """libavif's quality -> AV1 quantizer mapping (``avifQualityToQuantizer``): 100 -> 0, 60 -> 25, 0 -> 63."""
    q = min(max(int(quality), 0), 100)
    return ((100 - q) * 63 + 50) // 100


def sharp_options(settings: EncodingSettings, *, width: int | None = None) -> dict[str, Any]:
    """The sharp options object (``resize``, ``sharpen``, format and its options) for ``settings``."""
    return _sharp_parts(settings, transform_at_width(settings.transform, width))[0]


# --------------------------------------------------------------------------------------------------
# Helpers shared by the builders


def _output_name(settings: EncodingSettings, output: str | None, width: int | None) -> str:
    ext = get_codec(settings.codec, require_available=False).extension
    if output is None:
        return f"output-{width}w{ext}" if width else f"output{ext}"
    if width is None:
        return output
    path = PurePath(output)
    return str(path.with_name(f"{path.stem}-{width}w{path.suffix or ext}"))


def _prepared_name(output: str, suffix: str) -> str:
    path = PurePath(output)
    return str(path.with_name(f"{path.stem}.prepared{suffix}"))


def _shell(commands: tuple[tuple[str, ...], ...]) -> str:
    return " && ".join(shlex.join(c) for c in commands)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _size_args(transform: Transform) -> str:
    if transform.scale is not None:
        return f"{transform.scale * 100:g}%"
    if transform.width is not None and transform.height is not None:
        return f"{transform.width}x{transform.height}!"
    if transform.width is not None:
        return f"{transform.width}x"
    return f"x{transform.height}"


def _im_transform_args(transform: Transform) -> list[str]:
    """ImageMagick arguments for the resize and unsharp mask (float pipeline in IM's HDRI builds)."""
    args: list[str] = []
    if transform.resizes:
        if transform.linear_light:
            args += ["-colorspace", "RGB"]
        args += [*_IM_FILTERS[transform.filter], "-resize", _size_args(transform)]
        if transform.linear_light:
            args += ["-colorspace", "sRGB"]
    if transform.sharpen_amount:
        # -unsharp RADIUSxSIGMA+GAIN+THRESHOLD: IM sharpens where |2 * (x - blur)| >= threshold, hence 2x.
        args += [
            "-unsharp",
            f"0x{_fmt(transform.sharpen_radius)}+{_fmt(transform.sharpen_amount)}+"
            f"{_fmt(2 * transform.sharpen_threshold)}",
        ]
    return args


def _transform_notes(transform: Transform, tool: str) -> list[str]:
    notes = []
    if transform.resizes and transform.filter == "hamming" and tool == "imagemagick":
        notes.append("ImageMagick's Hamming window with one lobe approximates Pillow's Hamming filter")
    if transform.sharpen_amount and tool == "imagemagick":
        notes.append(
            "ImageMagick's -unsharp applies the same unsharp-mask formula (it compares twice the difference "
            "with its threshold, hence the doubled value); its kernel truncation and rounding differ slightly"
        )
    return notes


_PREPARED = (
    "{tool} cannot resize with a chosen filter or unsharp-mask (nor read every input format): the first "
    "command prepares its input with ImageMagick"
)

#: Input formats each command-line encoder reads directly (cjxl would transcode a JPEG losslessly).
_READS = {
    "cjpeg": (".ppm", ".pgm", ".pnm", ".bmp", ".tga", ".gif"),
    "cwebp": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"),
    "avifenc": (".png", ".jpg", ".jpeg", ".y4m"),
    "cjxl": (".png", ".ppm", ".pgm", ".pfm", ".pgx", ".exr"),
}


def _prepare_step(
    transform: Transform, input: str, output: str, tool: str, suffix: str, program: str, *, flatten: bool = False
) -> tuple[tuple[str, ...] | None, str]:
    """An ImageMagick command writing the encoder's input (converted, resized, sharpened), when one is needed."""
    if transform.is_identity and PurePath(input).suffix.lower() in _READS[tool]:
        return None, input
    prepared = _prepared_name(output, suffix)
    args = [program, input, "-auto-orient", *_im_transform_args(transform)]
    if flatten:
        args += ["-background", "white", "-alpha", "remove", "-alpha", "off"]
    return tuple([*args, prepared]), prepared


# --------------------------------------------------------------------------------------------------
# Builders


def _pillow(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    codec = get_codec(settings.codec, require_available=False)
    notes = []
    lines = []
    if codec.encoder_function == "PIL.Image.Image.save":
        kwargs = pillow_kwargs(settings)
    else:
        kwargs = dict(codec.encoder_kwargs(settings.params))
        lines += ["import imagecodecs", "import numpy as np"]
    options: dict[str, Any] = {"function": codec.encoder_function, "kwargs": kwargs}
    lines.append("from PIL import Image, ImageFilter, ImageOps")
    lines.append(f"im = ImageOps.exif_transpose(Image.open({input!r}))")
    if codec.supports_alpha:
        lines.append('im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")')
    else:
        lines.append('im = im.convert("RGBA")')
        lines.append('im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")')
    if transform.resizes:
        size = _pil_size_expr(transform)
        lines.append(f"im = im.resize({size}, Image.Resampling.{_PIL_FILTERS[transform.filter]})")
        notes.append(
            "Pillow resizes 8-bit data (optimizer resamples float32 planes): expect differences of about one level"
        )
        if transform.linear_light:
            notes.append(
                "the tier resamples in linear light; Pillow has no one-call equivalent (convert to linear "
                "16-bit planes, resize, convert back) — this snippet resizes in sRGB"
            )
    if transform.sharpen_amount:
        lines.append(
            f"im = im.filter(ImageFilter.UnsharpMask(radius={_fmt(transform.sharpen_radius)}, "
            f"percent={round(transform.sharpen_amount * 100)}, threshold={round(transform.sharpen_threshold * 255)}))"
        )
        notes.append("Pillow's UnsharpMask approximates the Gaussian with box blurs and works on 8-bit data")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    if codec.encoder_function == "PIL.Image.Image.save":
        lines.append(f"im.save({output!r}, {args})")
    else:
        lines.append(f"data = imagecodecs.jpegxl_encode(np.asarray(im), {args})")
        lines.append(f"open({output!r}, 'wb').write(data)")
    return Export("pillow", codec.name, "\n".join(lines), options=options, notes=tuple(notes))


def _pil_size_expr(transform: Transform) -> str:
    if transform.scale is not None:
        s = _fmt(transform.scale)
        return f"(max(1, round(im.width * {s})), max(1, round(im.height * {s})))"
    if transform.width is not None and transform.height is not None:
        return f"({transform.width}, {transform.height})"
    if transform.width is not None:
        w = transform.width
        return f"({w}, max(1, round(im.height * {w} / im.width)))"
    h = transform.height
    return f"(max(1, round(im.width * {h} / im.height)), {h})"


def _cjpeg(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    p = settings.params
    notes = []
    prepare, source = _prepare_step(transform, input, output, "cjpeg", ".ppm", program, flatten=True)
    if prepare is not None:
        notes.append(
            "cjpeg reads PPM, BMP, Targa or GIF (not PNG) and cannot resize or sharpen: ImageMagick "
            "prepares its input in the first command"
        )
    argv = ["cjpeg", "-quality", str(p["quality"]), "-sample", _CJPEG_SAMPLING[p["subsampling"]]]
    if p["quality"] < 25:
        # Pillow forces baseline (8-bit) quantisation tables; below quality 25 libjpeg's would exceed 255.
        argv.append("-baseline")
    if p["progressive"]:
        argv.append("-progressive")
    if p["optimize"]:
        argv.append("-optimize")
    argv += ["-outfile", output, source]
    commands = tuple(c for c in (prepare, tuple(argv)) if c is not None)
    return Export("cjpeg", "jpeg", _shell(commands), commands=commands, notes=tuple(notes))


def _cwebp(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    p = settings.params
    notes = [
        "cwebp's defaults are libwebp's WebPConfigInit defaults, which Pillow uses too (no -sharp_yuv, no -af, "
        "-alpha_q 100): with the same libwebp the bytes are identical"
    ]
    prepare, source = _prepare_step(transform, input, output, "cwebp", ".png", program)
    if prepare is not None:
        notes.append(_PREPARED.format(tool="cwebp") + " (cwebp's -resize has its own fixed rescaler)")
    argv = ["cwebp", "-q", str(p["quality"]), "-m", str(p["method"])]
    if p["lossless"]:
        argv += ["-lossless", "-exact"]
    argv += ["-metadata", "none", source, "-o", output]
    commands = tuple(c for c in (prepare, tuple(argv)) if c is not None)
    return Export("cwebp", "webp", _shell(commands), commands=commands, notes=tuple(notes))


def _avifenc(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    p = settings.params
    quantizer = avifenc_quantizer(p["quality"])
    notes = [
        f"quality {p['quality']} is AV1 quantizer {quantizer} (libavif's mapping); avifenc 1.0+ also accepts "
        f"-q {p['quality']} instead of --min/--max/-a end-usage/-a cq-level",
        "other libavif/libaom versions than Pillow's give other bytes at the same settings (libavif 1.4 with "
        "libaom 3.12+ tunes for 'iq' by default); the rate-quality trade-off stays close",
    ]
    prepare, source = _prepare_step(transform, input, output, "avifenc", ".png", program)
    if prepare is not None:
        notes.append(_PREPARED.format(tool="avifenc"))
    argv = ["avifenc", "-j", "all", "-s", str(p["speed"]), "-y", p["subsampling"].replace(":", "")]
    if quantizer == 0:
        argv += ["--min", "0", "--max", "0"]  # lossless AV1 coding, as libavif does for quality 100
    else:
        argv += ["--min", "0", "--max", "63", "-a", "end-usage=q", "-a", f"cq-level={quantizer}"]
    argv += ["-r", "full", "--cicp", "1/13/6", "--autotiling", source, output]
    commands = tuple(c for c in (prepare, tuple(argv)) if c is not None)
    return Export("avifenc", "avif", _shell(commands), commands=commands, notes=tuple(notes))


def _cjxl(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    p = settings.params
    notes = ["cjxl and imagecodecs.jpegxl_encode run the same libjxl encoder; other libjxl versions give other bytes"]
    prepare, source = _prepare_step(transform, input, output, "cjxl", ".png", program)
    if prepare is not None:
        notes.append(_PREPARED.format(tool="cjxl"))
    argv = ("cjxl", source, output, "-d", _fmt(p["distance"]), "-e", str(p["effort"]))
    commands = tuple(c for c in (prepare, argv) if c is not None)
    return Export("cjxl", "jxl", _shell(commands), commands=commands, notes=tuple(notes))


def _imagemagick(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    codec = settings.codec
    p = settings.params
    notes = _transform_notes(transform, "imagemagick")
    args: list[str] = [program, input, "-auto-orient", *_im_transform_args(transform)]
    if codec == "jpeg":
        args += ["-background", "white", "-alpha", "remove", "-alpha", "off"]
        args += ["-quality", str(p["quality"]), "-sampling-factor", p["subsampling"]]
        args += ["-interlace", "JPEG" if p["progressive"] else "None"]
        args += ["-define", f"jpeg:optimize-coding={'true' if p['optimize'] else 'false'}"]
    elif codec == "webp":
        args += ["-quality", str(p["quality"]), "-define", f"webp:method={p['method']}"]
        if p["lossless"]:
            args += ["-define", "webp:lossless=true", "-define", "webp:exact=true"]
    elif codec == "avif":
        speed = min(int(p["speed"]), 9)
        if speed != p["speed"]:
            notes.append(f"libheif accepts speeds 0-9; speed {p['speed']} is written as 9")
        args += ["-quality", str(p["quality"]), "-define", f"heic:speed={speed}"]
        args += ["-define", f"heic:chroma={p['subsampling'].replace(':', '')}"]
        notes.append(
            "ImageMagick writes AVIF through libheif, whose quality scale and encoder defaults differ from "
            "libavif's: check the bytes and quality on a few images"
        )
    elif codec == "jxl":
        quality, distance = _im_jxl_quality(float(p["distance"]))
        args += ["-quality", str(quality), "-define", f"jxl:effort={p['effort']}"]
        if abs(distance - float(p["distance"])) > 1e-6:
            notes.append(
                f"ImageMagick sets JPEG XL distance from an integer -quality; quality {quality} is distance "
                f"{distance:.3g} (the tier uses {float(p['distance']):.3g})"
            )
    elif codec == "png":
        args += ["-define", f"png:compression-level={p['compress_level']}"]
    args += ["-strip", output]
    commands = (tuple(args),)
    return Export("imagemagick", codec, _shell(commands), commands=commands, notes=tuple(notes))


def _im_jxl_quality(distance: float) -> tuple[int, float]:
    """The integer -quality whose libjxl distance is closest to ``distance``, and that distance."""
    from ..codecs.jxl import distance_from_quality

    if distance <= 0.0:
        return 100, 0.0
    best = min(range(1, 100), key=lambda q: (abs(distance_from_quality(q) - distance), -q))
    return best, distance_from_quality(best)


def _sharp_parts(settings: EncodingSettings, transform: Transform) -> tuple[dict[str, Any], list[str]]:
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


def _sharp(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    options, notes = _sharp_parts(settings, transform)
    lines = ['const sharp = require("sharp");', "", f"await sharp({json.dumps(input)})", "  .rotate()"]
    if "resize" in options:
        lines.append(f"  .resize({_js(options['resize'])})")
    if "sharpen" in options:
        lines.append(f"  .sharpen({_js(options['sharpen'])})")
    if "flatten" in options:
        lines.append(f"  .flatten({_js(options['flatten'])})")
    codec = options["format"]
    lines.append(f"  .{codec}({_js(options[codec])})")
    lines.append(f"  .toFile({json.dumps(output)});")
    return Export("sharp", codec, "\n".join(lines), options=options, notes=tuple(notes))


def _js(value: Mapping[str, Any]) -> str:
    """A JavaScript object literal (JSON with unquoted identifier keys)."""
    parts = []
    for key, item in value.items():
        text = json.dumps(item) if not isinstance(item, float) or math.isfinite(item) else "null"
        parts.append(f"{key}: {text}")
    return "{ " + ", ".join(parts) + " }"


_BUILDERS = {
    "pillow": _pillow,
    "cjpeg": _cjpeg,
    "cwebp": _cwebp,
    "avifenc": _avifenc,
    "cjxl": _cjxl,
    "imagemagick": _imagemagick,
    "sharp": _sharp,
}
