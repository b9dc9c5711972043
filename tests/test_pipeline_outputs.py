"""Outputs of ``encode``, ``apply`` and ``compress`` as a pipeline sees them: the metadata policy and the
colour mode end to end (CLI and Python), source times kept with ``--preserve-times``, and permissions that
follow the umask for images and reports."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from test_metadata import ARTIST, XMP, _exif, display_p3, read_tags

import optimizer.cli.compress_cmd  # noqa: F401  (registers the commands)
import optimizer.cli.presets_cmd  # noqa: F401
from optimizer.cli import EXIT_OK, EXIT_USAGE, main
from optimizer.imageio import GamutWarning, load_image
from optimizer.tuning.adaptive import compress
from optimizer.tuning.apply import apply_preset
from optimizer.tuning.presets import Expected, Preset, PresetTier
from optimizer.tuning.settings import EncodingSettings

SOURCE_TIME_NS = 1_500_000_000_123_456_789  # 2017-07-14, far from "now"


@pytest.fixture
def camera(kodak_paths: list[Path], tmp_path: Path) -> Path:
    """A 96x64 photo as a camera writes it: EXIF (orientation 6, make, rights), Display P3, XMP; old times."""
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.asarray(PILImage.open(kodak_paths[22]).convert("RGB").crop((0, 0, 96, 64))).copy()
    pixels[:16, :16] = (255, 0, 0)  # P3 red: outside sRGB
    path = folder / "camera.jpg"
    PILImage.fromarray(pixels).save(path, quality=95, exif=_exif(), icc_profile=display_p3(), xmp=XMP)
    os.utime(path, ns=(SOURCE_TIME_NS, SOURCE_TIME_NS))
    return path


@pytest.fixture
def preset_file(tmp_path: Path) -> Path:
    tier = PresetTier("web", "ssim:0.5", EncodingSettings("webp", {"quality": 80}), Expected(1.0, 1000, 0.9))
    preset = Preset(tiers=[tier], default="web", target="ssim:0.5", study={"name": "hand-made"})
    return preset.save(tmp_path / "presets.json")


@pytest.fixture
def umask() -> Iterator[int]:
    """A umask that differs from the usual 022, restored afterwards."""
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --------------------------------------------------------------------------------------------------
# encode


def test_encode_keeps_what_the_flags_ask(camera: Path, tmp_path: Path) -> None:
    default = tmp_path / "default.webp"
    with pytest.warns(GamutWarning):
        assert main(["encode", str(camera), "-f", "webp", "-o", str(default)]) == EXIT_OK
    tags = read_tags(default)
    assert tags["IFD0:Artist"] == ARTIST and "IFD0:Make" not in tags  # web: rights only
    assert not any(k.startswith(("XMP", "ICC")) for k in tags)
    assert default.stat().st_mtime_ns != SOURCE_TIME_NS

    kept = tmp_path / "kept.webp"
    with warnings.catch_warnings():
        warnings.simplefilter("error", GamutWarning)  # keeping the profile clips nothing
        code = main(
            ["encode", str(camera), "-f", "webp", "-o", str(kept), "--metadata", "all", "--color", "keep"]
            + ["--preserve-times"]
        )
    assert code == EXIT_OK
    tags = read_tags(kept)
    assert tags["IFD0:Make"] == "Canon" and tags["IFD0:Orientation"] == 1 and "XMP-dc:Rights" in tags
    assert PILImage.open(kept).info["icc_profile"] == display_p3()
    assert kept.stat().st_mtime_ns == SOURCE_TIME_NS
    assert load_image(kept, color="keep").size == (64, 96)  # upright, not turned twice


@pytest.mark.parametrize(("option", "value"), [("--metadata", "gps"), ("--color", "p3")])
def test_encode_refuses_unknown_policies(camera: Path, tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "x.webp"
    assert main(["encode", str(camera), "-f", "webp", "-o", str(out), option, value]) == EXIT_USAGE
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# apply


def test_apply_metadata_colour_and_times(camera: Path, preset_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = apply_preset(
        preset_file, camera.parent, out, metadata="exif", color="keep", preserve_times=True, verify=True
    )
    assert report.ok and len(report.items) == 1
    written = Path(report.items[0].output)
    tags = read_tags(written)
    assert tags["IFD0:Make"] == "Canon" and not any(k.startswith("XMP") for k in tags)
    assert PILImage.open(written).info["icc_profile"] == display_p3()  # kept pixels carry their profile
    assert written.stat().st_mtime_ns == SOURCE_TIME_NS
    assert report.items[0].quality is not None and report.items[0].quality > 0.9  # scored in sRGB

    cli_out = tmp_path / "cli"
    with pytest.warns(GamutWarning):
        code = main(["apply", str(preset_file), str(camera.parent), "-d", str(cli_out), "--metadata", "none"])
    assert code == EXIT_OK
    cli_written = cli_out / "camera.webp"
    assert read_tags(cli_written) == {"SourceFile": str(cli_written)}  # nothing at all
    assert cli_written.stat().st_mtime_ns != SOURCE_TIME_NS


# --------------------------------------------------------------------------------------------------
# compress


def test_compress_carries_metadata_in_the_bytes_it_checks(camera: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", GamutWarning)  # kept: no probe's decode warns either
        report = compress(
            camera,
            target="ssim:0.95",
            formats=["webp"],
            out_dir=tmp_path / "out",
            color="keep",
            preserve_times=True,
            keep_original_if_smaller=False,
        )
    result = report.results[0]
    assert result.met and not result.kept_original
    written = Path(result.output or "")
    tags = read_tags(written)
    assert tags["IFD0:Copyright"] and "IFD0:Make" not in tags  # the default policy: web
    assert PILImage.open(written).info["icc_profile"] == display_p3()
    assert written.stat().st_size == result.bytes  # the metadata is in the bytes compared and reported
    assert written.stat().st_mtime_ns == SOURCE_TIME_NS


def test_compress_cli_options(camera: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.warns(GamutWarning):
        code = main(
            ["compress", str(camera), "-t", "ssim:0.9", "--formats", "jpeg", "-d", str(out)]
            + ["--metadata", "exif,xmp", "--preserve-times", "--no-keep-original", "--json"]
        )
    assert code == EXIT_OK
    tags = read_tags(out / "camera.jpg")
    assert tags["IFD0:Make"] == "Canon" and tags["XMP-tiff:Orientation"] == 1
    assert not any(k.startswith("ICC") for k in tags)
    assert (out / "camera.jpg").stat().st_mtime_ns == SOURCE_TIME_NS


# --------------------------------------------------------------------------------------------------
# Permissions


def test_outputs_and_reports_follow_the_umask(
    camera: Path, preset_file: Path, tmp_path: Path, umask: int, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = 0o666 & ~umask
    encoded = tmp_path / "e.jpg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GamutWarning)
        assert main(["encode", str(camera), "-f", "jpeg", "-o", str(encoded)]) == EXIT_OK
        apply_report = tmp_path / "apply.json"
        assert (
            main(["apply", str(preset_file), str(camera), "-d", str(tmp_path / "a"), "--report", str(apply_report)])
            == 0
        )
        compress_report = tmp_path / "compress.json"
        code = main(
            ["compress", str(camera), "-t", "ssim:0.9", "--formats", "jpeg", "-d", str(tmp_path / "c")]
            + ["--report", str(compress_report), "--no-keep-original"]
        )
        assert code == EXIT_OK
    capsys.readouterr()
    written: list[Path] = [encoded, apply_report, tmp_path / "a" / "camera.webp", compress_report]
    written.append(tmp_path / "c" / "camera.jpg")
    assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(expected) for p in written}
    data: Any = json.loads(apply_report.read_text())
    assert data["totals"]["outputs"] == 1
