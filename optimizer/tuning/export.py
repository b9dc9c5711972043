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
with an ImageMagick command that writes the prepared image next to the output (``<output>.prepared.ppm``
or ``.png``); the shell line removes it afterwards, whether the encoder succeeded or not, and still fails
when a step fails (:attr:`Export.intermediates` lists it for programs that run ``commands``).

ImageMagick's program: ``magick`` for ImageMagick 7; ImageMagick 6 has ``convert``. By default the program
is looked up on this machine (:func:`find_imagemagick`): ``magick`` when it is on ``PATH``, else the first
``convert`` on ``PATH`` whose ``-version`` says ImageMagick (another program may be called ``convert``),
named by its full path when an earlier ``convert`` is not ImageMagick. Without either, ``magick`` is
written with a note. ``program=`` (``--program``) overrides the lookup.

Paths: a relative path that starts with ``-`` would be read as an option (``cjpeg -outfile -x.jpg`` takes
``-x.jpg`` as a value, but ``magick -x.png ...`` and ``cwebp -x.png`` take it as an option), and one whose
first part holds ``:`` as an ImageMagick format prefix (``png:out``); such paths are written ``./-x.png``.
``--`` would not do: ImageMagick and libjpeg's cjpeg do not read it as the end of options.

Inputs: optimizer converts embedded ICC profiles to sRGB and applies EXIF orientation before encoding.
The ImageMagick and sharp exports auto-orient; colour management of non-sRGB inputs is left to the tool.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ..codecs import get_codec
from ..errors import InvalidParameterError, UnknownNameError
from ..transforms import Transform
from .export_sharp import sharp_parts, sharp_script
from .settings import EncodingSettings, transform_at_width

if TYPE_CHECKING:
    from .presets import PresetTier

__all__ = [
    "EXPORT_TOOLS",
    "Export",
    "avifenc_quantizer",
    "export_settings",
    "export_tier",
    "find_imagemagick",
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
    resize or sharpen, then the encoder); ``intermediates`` are the files they leave to remove afterwards
    (the prepared input). ``text`` is what to paste: a shell line (which removes the intermediates itself),
    or Python/JavaScript code for ``pillow`` and ``sharp``. ``options`` holds JSON-able options (Pillow
    kwargs, sharp object). ``notes`` say where the tool differs from optimizer's own encoder.
    """

    tool: str
    codec: str
    text: str
    commands: tuple[tuple[str, ...], ...] = ()
    options: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    width: int | None = None
    output: str = ""
    intermediates: tuple[str, ...] = ()

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
            "intermediates": list(self.intermediates),
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
    program: str | None = None,
) -> list[Export]:
    """Exports of ``tier`` for ``tool``: one per responsive width (one in all when the tier keeps the size).

    ``output`` defaults to ``output<ext>`` (``output-640w<ext>`` per width); with several widths a given
    ``output`` gets the same ``-<width>w`` suffix before its extension. ``program``: the ImageMagick program
    (default: :func:`find_imagemagick`).
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
    program: str | None = None,
) -> Export:
    """The export of ``settings`` (resized to ``width`` first when given) for ``tool``.

    Args:
        settings: The encoding settings.
        tool: One of :data:`EXPORT_TOOLS`.
        width: Resize to this width first (aspect kept).
        input: The input file named in the export.
        output: The output file (default ``output<ext>``).
        program: The ImageMagick program for ImageMagick commands (default: :func:`find_imagemagick`,
            else ``magick`` with a note).

    Returns:
        The :class:`Export`.
    """
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
    found = program or find_imagemagick()
    builder = _BUILDERS[key]
    export: Export = builder(settings, transform, input, out, found or "magick")
    if found is None and any(command[0] == "magick" for command in export.commands):
        missing = (
            "ImageMagick was not found on this machine: 'magick' is ImageMagick 7's program, ImageMagick 6 "
            "calls it 'convert' (--program convert)"
        )
        export = replace(export, notes=(*export.notes, missing))
    return replace(export, width=width, output=out)


def find_imagemagick(path: str | None = None) -> str | None:
    """ImageMagick's program on this machine: ``magick`` (7) when on ``PATH``, else the first ``convert`` on
    ``PATH`` whose ``-version`` says ImageMagick (6), by name when it is the first ``convert`` found, by
    full path otherwise; None when there is neither.

    Args:
        path: The search path (default: ``PATH``).

    Returns:
        The program to write in command lines, or None.
    """
    return _find_imagemagick(os.environ.get("PATH", os.defpath) if path is None else path)


@functools.lru_cache(maxsize=8)
def _find_imagemagick(path: str) -> str | None:
    if shutil.which("magick", path=path):
        return "magick"
    first = shutil.which("convert", path=path)
    for folder in path.split(os.pathsep):
        candidate = shutil.which("convert", path=folder) if folder else None
        if candidate is None:
            continue
        try:
            proc = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.stdout.startswith("Version: ImageMagick"):
            return "convert" if candidate == first else candidate
    return None


def pillow_kwargs(settings: EncodingSettings) -> dict[str, Any]:
    """``PIL.Image.Image.save()`` keyword arguments (``format`` included) for a Pillow-encoded codec."""
    return dict(get_codec(settings.codec, require_available=False).pil_save_kwargs(settings.params))


def avifenc_quantizer(quality: int) -> int:
    """libavif's quality -> AV1 quantizer mapping (``avifQualityToQuantizer``): 100 -> 0, 60 -> 25, 0 -> 63."""
    q = min(max(int(quality), 0), 100)
    return ((100 - q) * 63 + 50) // 100


def sharp_options(settings: EncodingSettings, *, width: int | None = None) -> dict[str, Any]:
    """The sharp options object (``resize``, ``sharpen``, format and its options) for ``settings``."""
    return sharp_parts(settings, transform_at_width(settings.transform, width))[0]


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


def _safe(path: str) -> str:
    """``path`` as a command line may hold it: ``./`` before a relative path that starts with ``-`` (an
    option otherwise) or whose first part holds ``:`` (an ImageMagick format prefix such as ``png:``)."""
    if path.startswith("-") or (not PurePath(path).is_absolute() and ":" in PurePath(path).parts[0]):
        return "./" + path
    return path


def _shell(commands: tuple[tuple[str, ...], ...], intermediates: tuple[str, ...] = ()) -> str:
    """One shell line: the commands joined by ``&&``; intermediates removed afterwards, and the line still
    failing when a command failed."""
    line = " && ".join(shlex.join(c) for c in commands)
    if not intermediates:
        return line
    remove = shlex.join(["rm", "-f", "--", *intermediates])
    return f"{line} && {remove} || {{ {remove}; false; }}"


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
        return None, _safe(input)
    prepared = _safe(_prepared_name(output, suffix))
    args = [program, _safe(input), "-auto-orient", *_im_transform_args(transform)]
    if flatten:
        args += ["-background", "white", "-alpha", "remove", "-alpha", "off"]
    return tuple([*args, prepared]), prepared


def _tool_export(
    tool: str, codec: str, prepare: tuple[str, ...] | None, encode: tuple[str, ...], notes: list[str]
) -> Export:
    """An export of a command-line encoder, after its preparation step when there is one."""
    commands = tuple(c for c in (prepare, encode) if c is not None)
    intermediates = (prepare[-1],) if prepare is not None else ()
    return Export(
        tool, codec, _shell(commands, intermediates), commands=commands, notes=tuple(notes), intermediates=intermediates
    )


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
    argv += ["-outfile", _safe(output), source]
    return _tool_export("cjpeg", "jpeg", prepare, tuple(argv), notes)


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
    argv += ["-metadata", "none", source, "-o", _safe(output)]
    return _tool_export("cwebp", "webp", prepare, tuple(argv), notes)


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
    argv += ["-r", "full", "--cicp", "1/13/6", "--autotiling", source, _safe(output)]
    return _tool_export("avifenc", "avif", prepare, tuple(argv), notes)


def _cjxl(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    p = settings.params
    notes = ["cjxl and imagecodecs.jpegxl_encode run the same libjxl encoder; other libjxl versions give other bytes"]
    prepare, source = _prepare_step(transform, input, output, "cjxl", ".png", program)
    if prepare is not None:
        notes.append(_PREPARED.format(tool="cjxl"))
    argv = ("cjxl", source, _safe(output), "-d", _fmt(p["distance"]), "-e", str(p["effort"]))
    return _tool_export("cjxl", "jxl", prepare, argv, notes)


def _imagemagick(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    codec = settings.codec
    p = settings.params
    notes = _transform_notes(transform, "imagemagick")
    args: list[str] = [program, _safe(input), "-auto-orient", *_im_transform_args(transform)]
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
    args += ["-strip", _safe(output)]
    commands = (tuple(args),)
    return Export("imagemagick", codec, _shell(commands), commands=commands, notes=tuple(notes))


def _im_jxl_quality(distance: float) -> tuple[int, float]:
    """The integer -quality whose libjxl distance is closest to ``distance``, and that distance."""
    from ..codecs.jxl import distance_from_quality

    if distance <= 0.0:
        return 100, 0.0
    best = min(range(1, 100), key=lambda q: (abs(distance_from_quality(q) - distance), -q))
    return best, distance_from_quality(best)


def _sharp(settings: EncodingSettings, transform: Transform, input: str, output: str, program: str) -> Export:
    options, notes = sharp_parts(settings, transform)
    return Export("sharp", options["format"], sharp_script(options, input, output), options=options, notes=tuple(notes))


_BUILDERS = {
    "pillow": _pillow,
    "cjpeg": _cjpeg,
    "cwebp": _cwebp,
    "avifenc": _avifenc,
    "cjxl": _cjxl,
    "imagemagick": _imagemagick,
    "sharp": _sharp,
}
