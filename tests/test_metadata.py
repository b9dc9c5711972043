"""Metadata and colour through the pipeline: what loading captures, what each policy writes in each format
(read back by exiftool, an independent reader), orientation, wide-gamut sources kept or converted, and the
table of docs/metadata.md.

exiftool comes from Debian (``libimage-exiftool-perl``, installed by ``tests/run.sh``): a missing exiftool
skips locally but fails under CI (``CI`` set).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.codecs import codec_names, get_codec
from optimizer.errors import InvalidParameterError
from optimizer.evaluator import Evaluator
from optimizer.imageio import GamutWarning, Image, Metadata, MetadataPolicy, MetadataWarning, load_image
from optimizer.imageio import metadata as metadata_module
from optimizer.imageio.metadata import rights_exif, upright_exif, upright_xmp

REPO = Path(__file__).resolve().parents[1]
ARTIST, COPYRIGHT = "Jane Doe", "(c) 2024 Jane Doe"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    b'tiff:Orientation="6"><dc:rights>Jane Doe rights</dc:rights></rdf:Description></rdf:RDF></x:xmpmeta>'
)
FORMATS = [
    name for name in ("jpeg", "webp", "avif", "jxl", "png") if get_codec(name, require_available=False).available()
]


@functools.cache
def display_p3() -> bytes:
    """A Display P3 profile (P3 primaries, D65, the sRGB tone curve), built with imagecodecs' LittleCMS (once:
    its header records the time it was made)."""
    imagecodecs = pytest.importorskip("imagecodecs")
    x = np.linspace(0.0, 1.0, 4096)
    curve = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return bytes(
        imagecodecs.cms_profile(
            "rgb",
            whitepoint=[0.3127, 0.3290, 1.0],
            primaries=[0.680, 0.320, 1.0, 0.265, 0.690, 1.0, 0.150, 0.060, 1.0],
            transferfunction=(curve * 65535).astype(np.uint16),
        )
    )


def _exif(orientation: int = 6) -> bytes:
    exif = PILImage.Exif()
    exif[0x010F] = "Canon"  # Make
    exif[0x0110] = "EOS R5"  # Model
    exif[0x013B] = ARTIST
    exif[0x8298] = COPYRIGHT
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.fixture(scope="module")
def sources(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A camera-like JPEG (EXIF with orientation 6, a Display P3 profile, XMP) whose top-left corner is a
    P3 red that sRGB cannot show, and the same pixels without a profile."""
    folder = tmp_path_factory.mktemp("metadata")
    pixels = np.asarray(PILImage.open(kodak_paths[22]).convert("RGB").crop((0, 0, 96, 64))).copy()
    pixels[:16, :16] = (255, 0, 0)
    p3 = display_p3()
    camera = folder / "camera.jpg"
    PILImage.fromarray(pixels).save(camera, quality=95, exif=_exif(), icc_profile=p3, xmp=XMP)
    plain = folder / "plain.jpg"
    PILImage.fromarray(pixels).save(plain, quality=95, exif=_exif(orientation=1))
    return {"dir": folder, "camera": camera, "plain": plain, "p3": p3, "pixels": pixels}


def _exiftool() -> str:
    path = shutil.which("exiftool")
    if path is None:
        message = "exiftool is not installed (Debian package libimage-exiftool-perl)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_tags(path: Path) -> dict[str, Any]:
    """EXIF, XMP and ICC tags of ``path`` as exiftool reads them (``GROUP:Tag`` keys, numeric values)."""
    proc = subprocess.run(
        [_exiftool(), "-j", "-G1", "-a", "-n", "-EXIF:all", "-XMP:all", "-ICC_Profile:all", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tags: dict[str, Any] = json.loads(proc.stdout)[0]
    return tags


def _kinds(tags: dict[str, Any]) -> set[str]:
    groups = {key.split(":", 1)[0] for key in tags if ":" in key}
    kinds = set()
    if groups & {"IFD0", "ExifIFD", "IFD1", "GPS"}:
        kinds.add("exif")
    if any(g.startswith("XMP") for g in groups):
        kinds.add("xmp")
    if any(g.startswith("ICC") for g in groups):
        kinds.add("icc")
    return kinds


def _write(folder: Path, image: Image, codec: str, policy: str, tag: str) -> Path:
    path = folder / f"{tag}-{codec}-{policy.replace(',', '+')}{get_codec(codec).extension}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetadataWarning)
        path.write_bytes(get_codec(codec).encode(image, {}, metadata=policy))
    return path


# --------------------------------------------------------------------------------------------------
# Capture and policies


def test_loading_keeps_exif_icc_and_xmp_beside_upright_pixels(sources: dict[str, Any]) -> None:
    with pytest.warns(GamutWarning, match="outside sRGB"):
        image = load_image(sources["camera"])
    assert image.size == (64, 96)  # orientation 6 turned the 96x64 stored pixels
    meta = image.metadata
    assert meta.kinds == ("exif", "icc", "xmp")
    assert meta.exif is not None and meta.exif[:4] in (b"II*\x00", b"MM\x00*")  # TIFF, no "Exif\0\0"
    assert meta.icc == sources["p3"] and meta.xmp == XMP
    assert image.info.icc_converted and image.profile is None
    assert "exif=" in repr(meta) and "bytes" in repr(meta)


def test_policy_parsing() -> None:
    assert MetadataPolicy.parse(None) == MetadataPolicy.parse("web") == MetadataPolicy()
    assert MetadataPolicy.parse("ALL") == MetadataPolicy("all", "all", True)
    assert MetadataPolicy.parse("none") == MetadataPolicy("none", "none", False)
    assert MetadataPolicy.parse(" exif , xmp") == MetadataPolicy("all", "none", True)
    for text in ("web", "all", "none", "exif", "icc,xmp", "exif,icc,xmp"):
        assert str(MetadataPolicy.parse(text)) == ("all" if text == "exif,icc,xmp" else text)
    for bad in ("", "gps", "exif,gps", ",", "keep"):
        with pytest.raises(InvalidParameterError, match="metadata must be"):
            MetadataPolicy.parse(bad)
    with pytest.raises(InvalidParameterError):
        MetadataPolicy.parse(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="bytes"):
        Metadata(exif="text")  # type: ignore[arg-type]


def test_exif_rewriting_keeps_the_block_and_fixes_orientation() -> None:
    tiff = _exif()[6:]
    upright = upright_exif(tiff)
    assert upright is not None and len(upright) == len(tiff)
    changed = [i for i in range(len(tiff)) if tiff[i] != upright[i]]
    assert len(changed) == 1  # one byte: the orientation value 6 -> 1
    reread = PILImage.Exif()
    reread.load(upright)
    assert reread[0x0112] == 1 and reread[0x010F] == "Canon"
    rights = rights_exif(tiff)
    assert rights is not None
    small = PILImage.Exif()
    small.load(rights)
    assert dict(small) == {0x013B: ARTIST, 0x8298: COPYRIGHT}
    no_rights = PILImage.Exif()
    no_rights[0x010F] = "Canon"
    assert rights_exif(no_rights.tobytes()[6:]) is None
    assert upright_exif(b"II*\x00\xff\xff\x00\x00") is None  # IFD0 beyond the block: not copied
    assert upright_xmp(b'<tiff:Orientation>8</tiff:Orientation> tiff:Orientation="3"') == (
        b'<tiff:Orientation>1</tiff:Orientation> tiff:Orientation="1"'
    )


# --------------------------------------------------------------------------------------------------
# What each policy writes, read back by exiftool

#: The kinds each policy writes for the camera source converted to sRGB, before a format drops what it
#: cannot carry (ICC here is the sRGB profile of the converted pixels).
EXPECTED = {
    "all": {"exif", "icc", "xmp"},
    "none": set(),
    "web": {"exif"},
    "exif": {"exif"},
    "icc": {"icc"},
    "xmp": {"xmp"},
    "exif,xmp": {"exif", "xmp"},
}


@pytest.mark.parametrize("codec", FORMATS)
def test_each_policy_in_each_format(codec: str, sources: dict[str, Any], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GamutWarning)
        image = load_image(sources["camera"])
    carried = set(get_codec(codec).metadata_kinds)
    for policy, expected in EXPECTED.items():
        tags = read_tags(_write(tmp_path, image, codec, policy, "srgb"))
        assert _kinds(tags) == expected & carried, (codec, policy, tags)
        if "exif" in expected & carried:
            assert tags["IFD0:Artist"] == ARTIST and tags["IFD0:Copyright"] == COPYRIGHT
            assert ("IFD0:Make" in tags) == (policy != "web")  # web keeps the rights only
            # every EXIF written says upright (AVIF keeps orientation in its own boxes: no tag at all)
            assert tags.get("IFD0:Orientation", 1) == 1
            if policy != "web" and codec != "avif":
                assert tags["IFD0:Orientation"] == 1
        if "xmp" in expected & carried:
            assert tags["XMP-dc:Rights"] == "Jane Doe rights" and tags["XMP-tiff:Orientation"] == 1
        if "icc" in expected & carried:
            assert tags["ICC_Profile:ProfileDescription"] == "sRGB built-in"  # the pixels are sRGB now


@pytest.mark.parametrize("codec", FORMATS)
def test_written_files_display_upright(codec: str, sources: dict[str, Any], tmp_path: Path) -> None:
    """A viewer applying the written orientation sees the source as loaded (not turned twice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GamutWarning)
        image = load_image(sources["camera"])
    for policy in ("all", "web", "exif,xmp"):
        written = load_image(_write(tmp_path, image, codec, policy, "upright"))
        assert written.size == image.size == (64, 96), (codec, policy)
        assert np.abs(written.rgb - image.rgb).mean() < 0.03, (codec, policy)


def test_policy_without_source_metadata_writes_nothing(sources: dict[str, Any], tmp_path: Path) -> None:
    image = load_image(np.asarray(sources["pixels"]))
    for codec in FORMATS:
        assert _kinds(read_tags(_write(tmp_path, image, codec, "all", "bare"))) == set()


def test_metadata_that_does_not_fit_a_jpeg_marker_is_dropped_with_a_warning(sources: dict[str, Any]) -> None:
    image = load_image(sources["plain"])
    big = Image(image.rgb, metadata=Metadata(exif=image.metadata.exif, xmp=b"<x>" + b"a" * 70_000 + b"</x>"))
    metadata_module._warned.discard("jpeg:xmp-size")
    with pytest.warns(MetadataWarning, match="XMP metadata over"):
        data = get_codec("jpeg").encode(big, {}, metadata="all")
    reread = PILImage.open(io.BytesIO(data))
    assert "xmp" not in reread.info and reread.getexif()[0x013B] == ARTIST


# --------------------------------------------------------------------------------------------------
# Wide-gamut sources: converted with a warning, or kept with their profile


def test_converting_a_wide_gamut_source_warns_and_srgb_sources_do_not(sources: dict[str, Any]) -> None:
    with pytest.warns(GamutWarning, match=r"\d+\.\d+% of its pixels"):
        load_image(sources["camera"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", GamutWarning)
        load_image(sources["plain"])  # no profile: nothing to clip
        load_image(sources["camera"], color="keep")  # kept: nothing clipped


def test_keep_encodes_the_original_pixels_with_their_profile(sources: dict[str, Any], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", GamutWarning)
        kept = load_image(sources["camera"], color="keep")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GamutWarning)
        converted = load_image(sources["camera"])
    assert kept.profile == sources["p3"] and not kept.info.icc_converted
    assert not np.array_equal(kept.rgb, converted.rgb)  # the P3 values themselves
    np.testing.assert_array_equal(kept.for_scoring(), converted.rgb)  # scored in sRGB, as converted
    png = tmp_path / "kept.png"
    png.write_bytes(get_codec("png").encode(kept, {}, metadata="none"))  # the profile is colour: written
    assert PILImage.open(png).info["icc_profile"] == sources["p3"]
    np.testing.assert_array_equal(load_image(png, color="keep").rgb, kept.rgb)
    for codec in [c for c in FORMATS if "icc" in get_codec(c).metadata_kinds]:
        path = _write(tmp_path, kept, codec, "none", "kept")
        assert _kinds(read_tags(path)) == {"icc"}
        assert PILImage.open(path).info["icc_profile"] == sources["p3"]


def test_scores_compare_kept_and_converted_sources_alike(sources: dict[str, Any]) -> None:
    """A lossless encode of a kept source is identical to it in sRGB: both sides are compared in sRGB."""
    kept = load_image(sources["camera"], color="keep")
    scorer = Evaluator(metrics=["psnr", "ssim"]).for_reference(kept)
    lossless = scorer.score(get_codec("png").encode(kept, {}))
    assert lossless.scores["psnr"] == float("inf") and lossless.scores["ssim"] == pytest.approx(1.0)
    lossy = scorer.score(get_codec("webp").encode(kept, {"quality": 80}))
    assert 30 < lossy.scores["psnr"] < float("inf")


def test_a_format_without_icc_converts_kept_pixels_and_says_so(sources: dict[str, Any]) -> None:
    if "jxl" not in FORMATS:
        pytest.skip("imagecodecs with JPEG XL is not installed")
    kept = load_image(sources["camera"], color="keep")
    metadata_module._warned.discard("jxl:profile")
    with pytest.warns(MetadataWarning, match="jxl output cannot carry an ICC profile"):
        data = get_codec("jxl").encode(kept, {"distance": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GamutWarning)
        converted = load_image(sources["camera"])
    np.testing.assert_array_equal(load_image(data).rgb, converted.rgb)  # lossless, in sRGB


def test_color_mode_is_checked(sources: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError, match="color must be one of srgb, keep"):
        load_image(sources["plain"], color="p3")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The documented table


def test_docs_table_matches_the_codecs() -> None:
    """docs/metadata.md states, per format, which kinds are written: it must say what the codecs do."""
    text = (REPO / "docs" / "metadata.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].lower() in codec_names():
            rows[cells[0].lower()] = {
                kind for kind, cell in zip(("exif", "icc", "xmp"), cells[1:], strict=True) if cell.startswith("yes")
            }
    assert set(rows) == set(codec_names())
    for name, kinds in rows.items():
        assert kinds == set(get_codec(name, require_available=False).metadata_kinds), name
    assert re.search(r"\]\(docs/metadata\.md\)", (REPO / "README.md").read_text(encoding="utf-8"))


def test_jxl_boxes_follow_a_codestream_box_that_ran_to_the_end() -> None:
    from optimizer.codecs.jxl import _sized_boxes
    from optimizer.imageio._jxl import jxl_boxes

    signature = bytes.fromhex("0000000c4a584c200d0a870a")
    open_ended = signature + bytes(4) + b"jxlc" + b"\xff\x0acodestream"  # size 0: to the end of the file
    sized = _sized_boxes(open_ended)
    assert [kind for kind, _ in jxl_boxes(sized + bytes.fromhex("0000000c") + b"Exif" + bytes(4))] == [
        b"JXL ",
        b"jxlc",
        b"Exif",
    ]
    assert _sized_boxes(sized) == sized


def test_image_checks_its_metadata_and_profile() -> None:
    from optimizer.errors import InvalidImageError

    rgb = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(InvalidImageError, match="metadata must be a Metadata"):
        Image(rgb, metadata={"exif": b""})  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="profile must be"):
        Image(rgb, profile=b"")
    assert Image(rgb).to_srgb().profile is None
