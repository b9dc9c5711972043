"""Exports of preset tiers: the flags each tool gets, and the files the real tools write.

The second half runs the exported cjpeg, cwebp and avifenc command lines (and cjxl when present) on a
Kodak image and compares the files with optimizer's own encoder at the same settings. The tools come from
Debian (``libjpeg-turbo-progs``, ``webp``, ``libavif-bin``; ``libjxl-tools`` for cjxl). A missing tool skips
locally but fails under CI (``CI`` set), so CI never passes by skipping; cjxl is optional everywhere.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.codecs import get_codec
from optimizer.errors import InvalidParameterError, UnknownNameError
from optimizer.imageio import Image, load_image
from optimizer.transforms import Transform
from optimizer.tuning.export import (
    EXPORT_TOOLS,
    avifenc_quantizer,
    export_settings,
    export_tier,
    pillow_kwargs,
    sharp_options,
    tools_for_codec,
)
from optimizer.tuning.presets import Expected, PresetTier
from optimizer.tuning.settings import EncodingSettings


def _settings(codec: str, transform: Transform | None = None, **params: object) -> EncodingSettings:
    return EncodingSettings(codec, params, transform or Transform())


def _tier(settings: EncodingSettings, widths: tuple[int, ...] = ()) -> PresetTier:
    return PresetTier("t", "ssim:0.9", settings, Expected(1.0, 100, 0.95, {"ssim": 0.95}), 3, widths)


SHARP = Transform(filter="bicubic", sharpen_amount=0.4, sharpen_radius=0.8, sharpen_threshold=0.02)


# --------------------------------------------------------------------------------------------------
# Flags


def test_cjpeg_flags_follow_the_params() -> None:
    e = export_settings(
        _settings("jpeg", quality=82, subsampling="4:2:2", progressive=True, optimize=True),
        "cjpeg",
        input="in.ppm",
        output="out.jpg",
    )
    assert e.commands == (
        ("cjpeg", "-quality", "82", "-sample", "2x1", "-progressive", "-optimize", "-outfile", "out.jpg", "in.ppm"),
    )
    low = export_settings(
        _settings("jpeg", quality=20, subsampling="4:4:4", progressive=False, optimize=False), "cjpeg", input="in.ppm"
    )
    argv = low.commands[-1]
    assert argv[argv.index("-sample") + 1] == "1x1" and "-baseline" in argv
    assert "-progressive" not in argv and "-optimize" not in argv


def test_cjpeg_converts_png_input_and_resizes_with_imagemagick() -> None:
    e = export_settings(_settings("jpeg", SHARP, quality=70), "cjpeg", width=640, input="photo.png", output="o.jpg")
    prepare, encode = e.commands
    assert prepare[0] == "magick" and prepare[-1].endswith(".ppm") and encode[-1] == prepare[-1]
    assert prepare[prepare.index("-filter") + 1] == "Catrom"  # Pillow's bicubic is Catmull-Rom
    assert prepare[prepare.index("-resize") + 1] == "640x"
    assert prepare[prepare.index("-unsharp") + 1] == "0x0.8+0.4+0.04"  # IM's threshold compares 2 x difference
    assert " && " in e.text and any("ImageMagick" in n for n in e.notes)


def test_cwebp_flags() -> None:
    e = export_settings(_settings("webp", quality=67, method=6), "cwebp", output="o.webp")
    assert e.commands == (("cwebp", "-q", "67", "-m", "6", "-metadata", "none", "input.png", "-o", "o.webp"),)
    assert "-sharp_yuv" not in e.text and "-af" not in e.commands[0]  # Pillow passes neither
    lossless = export_settings(_settings("webp", quality=90, lossless=True), "cwebp").commands[-1]
    assert "-lossless" in lossless and "-exact" in lossless


@pytest.mark.parametrize(("quality", "quantizer"), [(100, 0), (90, 6), (60, 25), (50, 32), (1, 62), (0, 63)])
def test_avifenc_quantizer_is_libavifs_mapping(quality: int, quantizer: int) -> None:
    assert avifenc_quantizer(quality) == quantizer


def test_avifenc_flags() -> None:
    argv = export_settings(_settings("avif", quality=60, speed=8, subsampling="4:4:4"), "avifenc").commands[-1]
    assert argv[argv.index("-s") + 1] == "8" and argv[argv.index("-y") + 1] == "444"
    assert argv[argv.index("--min") + 1] == "0" and argv[argv.index("--max") + 1] == "63"
    assert "cq-level=25" in argv and "end-usage=q" in argv
    assert argv[argv.index("-r") + 1] == "full" and "--autotiling" in argv
    lossless = export_settings(_settings("avif", quality=100), "avifenc").commands[-1]
    assert lossless[lossless.index("--min") + 1] == "0" and lossless[lossless.index("--max") + 1] == "0"


def test_cjxl_flags() -> None:
    e = export_settings(_settings("jxl", distance=1.5, effort=5), "cjxl", output="o.jxl")
    assert e.commands == (("cjxl", "input.png", "o.jxl", "-d", "1.5", "-e", "5"),)
    jpeg_input = export_settings(_settings("jxl", distance=1.0, effort=7), "cjxl", input="photo.jpg")
    assert jpeg_input.commands[0][0] == "magick"  # cjxl would transcode a JPEG losslessly instead


def test_imagemagick_flags_per_codec() -> None:
    jpeg = export_settings(
        _settings("jpeg", SHARP, quality=77, subsampling="4:2:0", progressive=True), "imagemagick", width=320
    ).commands[0]
    assert jpeg[jpeg.index("-quality") + 1] == "77" and jpeg[jpeg.index("-sampling-factor") + 1] == "4:2:0"
    assert jpeg[jpeg.index("-interlace") + 1] == "JPEG" and "-auto-orient" in jpeg
    assert jpeg[jpeg.index("-resize") + 1] == "320x" and "-unsharp" in jpeg
    assert jpeg.index("-resize") < jpeg.index("-unsharp") < jpeg.index("-quality")
    webp = export_settings(_settings("webp", quality=70, method=5, lossless=True), "imagemagick").text
    assert "webp:method=5" in webp and "webp:lossless=true" in webp
    avif = export_settings(_settings("avif", quality=55, speed=10), "imagemagick")
    assert "heic:speed=9" in avif.text and "heic:chroma=420" in avif.text and avif.notes
    jxl = export_settings(_settings("jxl", distance=1.0, effort=6), "imagemagick").commands[0]
    assert jxl[jxl.index("-quality") + 1] == "90" and "jxl:effort=6" in jxl  # libjxl: quality 90 = distance 1
    linear = export_settings(_settings("png", Transform(linear_light=True)), "imagemagick", width=100).commands[0]
    assert linear[linear.index("-colorspace") + 1] == "RGB" and linear.count("-colorspace") == 2
    assert export_settings(_settings("png"), "imagemagick", program="convert").commands[0][0] == "convert"


def test_sharp_options_and_snippet() -> None:
    settings = _settings("avif", SHARP, quality=52, speed=6, subsampling="4:2:0")
    options = sharp_options(settings, width=800)
    assert options["resize"] == {"kernel": "cubic", "fastShrinkOnLoad": False, "width": 800}
    assert options["sharpen"]["sigma"] == 0.8 and options["sharpen"]["m2"] == 0.4
    assert options["avif"] == {"quality": 52, "effort": 3, "chromaSubsampling": "4:2:0"}
    e = export_settings(settings, "sharp", width=800)
    assert '.resize({ kernel: "cubic"' in e.text and ".avif({ quality: 52" in e.text
    assert e.render().count("// note:") == len(e.notes) > 0
    jpeg = sharp_options(_settings("jpeg", quality=80, subsampling="4:2:2"))
    assert jpeg["jpeg"]["chromaSubsampling"] == "4:4:4" and jpeg["flatten"] == {"background": "#ffffff"}
    assert "resize" not in jpeg


def test_export_per_width_and_names() -> None:
    tier = _tier(_settings("webp", quality=70), widths=(480, 960))
    exports = export_tier(tier, "imagemagick")
    assert [e.width for e in exports] == [480, 960]
    assert [e.output for e in exports] == ["output-480w.webp", "output-960w.webp"]
    named = export_tier(tier, "cwebp", output="site/hero.webp")
    assert [e.output for e in named] == ["site/hero-480w.webp", "site/hero-960w.webp"]
    assert [e.output for e in export_tier(_tier(_settings("webp")), "cwebp", output="a.webp")] == ["a.webp"]


def test_unknown_tool_and_wrong_codec_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="cjpeg"):
        export_settings(_settings("jpeg"), "gimp")
    with pytest.raises(InvalidParameterError, match="cwebp does not write jpeg"):
        export_settings(_settings("jpeg"), "cwebp")
    assert tools_for_codec("avif") == ["pillow", "avifenc", "imagemagick", "sharp"]
    assert set(tools_for_codec("jpeg")) < set(EXPORT_TOOLS)


@pytest.mark.parametrize(
    ("codec", "params"),
    [
        ("jpeg", {"quality": 64, "subsampling": "4:4:4", "progressive": True, "optimize": True}),
        ("webp", {"quality": 55, "method": 4}),
        ("avif", {"quality": 50, "speed": 8, "subsampling": "4:2:0"}),
    ],
)
def test_pillow_kwargs_reproduce_our_bytes(codec: str, params: dict, kodak_paths: list[Path]) -> None:
    image = load_image(kodak_paths[3]).with_pixels(load_image(kodak_paths[3]).rgb[:128, :192].copy(), None)
    settings = _settings(codec, **params)
    buf = io.BytesIO()
    image.to_pil().save(buf, **pillow_kwargs(settings))
    assert buf.getvalue() == get_codec(codec).encode(image, settings.params)
    snippet = export_settings(settings, "pillow").text
    assert (
        snippet.splitlines()[-1].startswith("im.save('output")
        and f"format={pillow_kwargs(settings)['format']!r}" in snippet
    )


def test_pillow_export_of_jxl_names_the_encoder_function() -> None:
    if not get_codec("jxl", require_available=False).available():
        pytest.skip("imagecodecs with JPEG XL is not installed")
    e = export_settings(_settings("jxl", distance=2.0, effort=4), "pillow")
    assert e.options == {
        "function": "imagecodecs.jpegxl_encode",
        "kwargs": {"distance": 2.0, "lossless": False, "effort": 4},
    }
    assert "imagecodecs.jpegxl_encode(np.asarray(im), distance=2.0, lossless=False, effort=4)" in e.text


def test_pillow_snippet_runs_and_matches_the_tier(tmp_path: Path, kodak_paths: list[Path]) -> None:
    source = tmp_path / "input.png"
    PILImage.open(kodak_paths[0]).crop((0, 0, 256, 192)).save(source)
    settings = _settings("jpeg", Transform(filter="lanczos"), quality=80)
    e = export_settings(settings, "pillow", width=128, input=str(source), output=str(tmp_path / "o.jpg"))
    exec(compile(e.text, "<export>", "exec"), {})  # noqa: S102 - our own generated snippet
    written = load_image(tmp_path / "o.jpg")
    ours = EncodingSettings(settings.codec, settings.params, Transform(width=128)).encode(load_image(source))
    assert written.size == (128, 96) == (ours.width, ours.height)
    assert np.abs(written.rgb - ours.decoded.rgb).mean() < 2 / 255  # 8-bit vs float32 resize, same encoder


# --------------------------------------------------------------------------------------------------
# The real tools


def _require(tool: str, package: str, *, optional: bool = False) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (Debian package {package})"
        if os.environ.get("CI") and not optional:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def kodim23(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """kodim23 as the tools read it (PNG and PPM), its 384x256 crop, and an SSIM scorer for each."""
    from optimizer.evaluator import Evaluator

    folder = tmp_path_factory.mktemp("tools")
    image = load_image(kodak_paths[22])
    crop = image.with_pixels(np.ascontiguousarray(image.rgb[128:384, 192:576]), None)
    for name, img in (("full", image), ("crop", crop)):
        PILImage.fromarray(img.to_uint8()).save(folder / f"{name}.png")
        PILImage.fromarray(img.to_uint8()).save(folder / f"{name}.ppm")
    evaluator = Evaluator(metrics=["ssim"])
    return {
        "dir": folder,
        "full": image,
        "crop": crop,
        "score": {"full": evaluator.for_reference(image), "crop": evaluator.for_reference(crop)},
    }


def _run_export(settings: EncodingSettings, tool: str, source: Path, output: Path) -> bytes:
    export = export_settings(settings, tool, input=str(source), output=str(output))
    assert len(export.commands) == 1, "the test inputs need no preparation step"
    subprocess.run(export.commands[0], check=True, capture_output=True, timeout=120)
    return output.read_bytes()


def _compare(
    kodim23: dict, which: str, settings: EncodingSettings, tool: str, suffix: str
) -> tuple[float, float, float, float]:
    """(bytes ratio tool/ours, SSIM tool - ours, tool bytes, tool SSIM) at the same settings."""
    folder: Path = kodim23["dir"]  # type: ignore[assignment]
    source = folder / f"{which}{suffix}"
    theirs = _run_export(settings, tool, source, folder / f"{tool}-{which}{get_codec(settings.codec).extension}")
    ours = get_codec(settings.codec).encode(kodim23[which], settings.params)  # type: ignore[arg-type]
    scorer = kodim23["score"][which]  # type: ignore[index]
    ssim_theirs = scorer.score(theirs).scores["ssim"]
    ssim_ours = scorer.score(ours).scores["ssim"]
    return len(theirs) / len(ours), ssim_theirs - ssim_ours, float(len(theirs)), ssim_theirs


@pytest.mark.parametrize(
    "params",
    [
        {"quality": 85, "subsampling": "4:2:0", "progressive": False, "optimize": True},
        {"quality": 50, "subsampling": "4:4:4", "progressive": True, "optimize": True},
        {"quality": 15, "subsampling": "4:2:2", "progressive": False, "optimize": False},
    ],
)
def test_cjpeg_matches_our_encoder(kodim23: dict, params: dict) -> None:
    _require("cjpeg", "libjpeg-turbo-progs")
    ratio, d_ssim, _, _ = _compare(kodim23, "full", _settings("jpeg", **params), "cjpeg", ".ppm")
    # Pillow and cjpeg call libjpeg(-turbo) with the same quality tables, sampling and scan options: measured
    # byte-identical (libjpeg-turbo 2.1.5 cjpeg vs Pillow's 3.x). 1 % / 0.001 leaves room for other builds.
    assert abs(ratio - 1) <= 0.01 and abs(d_ssim) <= 0.001, (ratio, d_ssim)


@pytest.mark.parametrize(
    ("which", "params"),
    [
        ("full", {"quality": 75, "method": 4}),
        ("full", {"quality": 40, "method": 6}),
        ("crop", {"quality": 80, "method": 4, "lossless": True}),
    ],
)
def test_cwebp_matches_our_encoder(kodim23: dict, which: str, params: dict) -> None:
    _require("cwebp", "webp")
    ratio, d_ssim, _, ssim = _compare(kodim23, which, _settings("webp", **params), "cwebp", ".png")
    # Both start from WebPConfigInit with the same quality, method and exact flags: measured byte-identical
    # for lossy (libwebp 1.2.4 cwebp vs Pillow's 1.6), 0.03 % apart for lossless. Tolerance 1 % / 0.001.
    assert abs(ratio - 1) <= 0.01 and abs(d_ssim) <= 0.001, (ratio, d_ssim)
    if params.get("lossless"):
        assert ssim == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "params", [{"quality": 60, "speed": 6, "subsampling": "4:2:0"}, {"quality": 40, "speed": 8, "subsampling": "4:4:4"}]
)
def test_avifenc_lands_on_our_rate_quality_curve(kodim23: dict, params: dict) -> None:
    _require("avifenc", "libavif-bin")
    settings = _settings("avif", **params)
    ratio, d_ssim, tool_bytes, tool_ssim = _compare(kodim23, "crop", settings, "avifenc", ".png")
    # Same quantizer, speed, subsampling, range and matrix, but Debian 12's avifenc is libavif 0.11 with
    # libaom 3.6, while Pillow bundles libavif 1.4 with libaom 3.14, which tunes for 'iq' by default. On
    # Kodak that measured 8-30 % fewer bytes and up to 0.015 lower SSIM at the same settings, so the direct
    # comparison gets a wide band ...
    assert 0.60 <= ratio <= 1.10 and d_ssim >= -0.025, (ratio, d_ssim)
    # ... and the real check is the trade-off: at the bytes avifenc wrote, our encoder's SSIM (interpolated
    # over its quality axis) is within 0.003 (measured <= 0.0012). A wrong subsampling, range or matrix
    # flag moves the point off the curve.
    crop: Image = kodim23["crop"]  # type: ignore[assignment]
    scorer = kodim23["score"]["crop"]
    curve = []
    for quality in range(max(5, params["quality"] - 30), min(95, params["quality"] + 16), 5):
        data = get_codec("avif").encode(crop, {**settings.params, "quality": quality})
        curve.append((len(data), scorer.score(data).scores["ssim"]))
    curve.sort()
    sizes, ssims = zip(*curve)
    assert sizes[0] <= tool_bytes <= sizes[-1], "the curve must bracket the tool's size"
    assert abs(float(np.interp(tool_bytes, sizes, ssims)) - tool_ssim) <= 0.003


def test_cjxl_matches_our_encoder(kodim23: dict) -> None:
    _require("cjxl", "libjxl-tools", optional=True)
    if not get_codec("jxl", require_available=False).available():
        pytest.skip("imagecodecs with JPEG XL is not installed")
    ratio, d_ssim, _, _ = _compare(kodim23, "crop", _settings("jxl", distance=1.0, effort=7), "cjxl", ".png")
    # Same libjxl distance and effort; Debian 12's cjxl is libjxl 0.7 against imagecodecs' 0.11: measured
    # 5-12 % fewer bytes and at most 0.005 lower SSIM (SSIMULACRA 2 within 1.4).
    assert 0.80 <= ratio <= 1.10 and abs(d_ssim) <= 0.01, (ratio, d_ssim)
