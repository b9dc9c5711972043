"""``compress`` at photo scale: the proxy and its learned gap, the guarantee whatever the proxy says, lossless
candidates, formats never dropped, parallel jobs, resizing before the search, progress and memory layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.evaluator import Evaluator, ReferenceScorer
from optimizer.imageio import Image, load_image
from optimizer.transforms import resize
from optimizer.tuning.adaptive import compress
from optimizer.tuning.compress_image import lossless_worth_trying
from optimizer.tuning.compress_memory import channel_first
from optimizer.tuning.proxy import GapModel, build_proxy

TARGET = "ssim:0.95"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ssim() -> Evaluator:
    return Evaluator(metrics=["ssim"]).load()


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crops")
    out = []
    for index, box in ((0, (200, 100, 392, 292)), (2, (300, 150, 492, 342)), (22, (100, 100, 292, 292))):
        path = folder / kodak_paths[index].name
        PILImage.open(kodak_paths[index]).convert("RGB").crop(box).save(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def mosaic(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024x1024 photo-like image (four Kodak crops): sixteen 256-pixel tiles, the smallest proxy case."""
    canvas = PILImage.new("RGB", (1024, 1024))
    for slot, index in enumerate((0, 4, 12, 22)):
        source = PILImage.open(kodak_paths[index]).convert("RGB").crop((0, 0, 512, 512))
        canvas.paste(source, ((slot % 2) * 512, (slot // 2) * 512))
    path = tmp_path_factory.mktemp("mosaic") / "mosaic.png"
    canvas.save(path)
    return path


def _score(evaluator: Evaluator, reference: Any, distorted: Any) -> float:
    return evaluator.evaluate(load_image(reference), load_image(distorted)).scores["ssim"]


# --------------------------------------------------------------------------------------------------
# The proxy


def test_proxy_is_a_mosaic_of_native_tiles_across_the_activity_range() -> None:
    rng = np.random.default_rng(0)
    rgb = np.full((1024, 2048, 3), 0.5, dtype=np.float32)
    rgb[:, 1024:] = rng.random((1024, 1024, 3), dtype=np.float32)  # flat left half, noisy right half
    image = Image(rgb)
    proxy = build_proxy(image, tile=256, tiles=16, min_pixels=1)
    assert proxy is not None and proxy.image.size == (1024, 1024) and len(proxy.origins) == 16
    assert proxy.fraction == pytest.approx(0.5)
    flat = [x < 1024 for x, _ in proxy.origins]
    assert any(flat) and not all(flat)  # both kinds of content are represented
    for slot, (x, y) in enumerate(proxy.origins):  # every tile is the image's own pixels, unresampled
        r, c = divmod(slot, 4)
        assert np.array_equal(
            proxy.image.rgb[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256], rgb[y : y + 256, x : x + 256]
        )
    assert "16 tiles of 256x256" in proxy.describe()
    assert build_proxy(image, min_pixels=4_000_000) is None  # small images are searched at full size
    assert build_proxy(Image(rgb[:512, :512]), min_pixels=1) is None  # fewer tiles than the mosaic needs


def test_gap_model_learns_how_far_the_proxy_reads_high() -> None:
    gaps = GapModel(prior=1.2)
    assert gaps.offset("avif") == 1.2  # before any full-size check
    gaps.record("avif", proxy_margin=2.0, full_margin=0.5)  # read 1.5 high
    gaps.record("avif", proxy_margin=1.0, full_margin=0.0)
    assert gaps.offset("avif") == pytest.approx(1.25 + 0.3)
    gaps.record("jpeg", proxy_margin=-3.0, full_margin=1.0)  # read low: aim no lower than the bar
    assert gaps.offset("jpeg") == 0.0
    gaps.record("webp", float("nan"), 1.0)
    assert gaps.offset("webp") == 1.2


class _Biased(Evaluator):
    """Reads every image of the proxy's size ``bias`` higher (a proxy that over- or under-predicts)."""

    def __init__(self, bias: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bias = bias

    def for_reference(self, reference, *, name=None, max_memory=None):  # type: ignore[no-untyped-def]
        scorer = super().for_reference(reference, name=name, max_memory=max_memory)
        if (scorer.reference.source or "").endswith("(proxy)"):
            plain = scorer.score

            def score(distorted, *, metrics=None):  # type: ignore[no-untyped-def]
                result = plain(distorted, metrics=metrics)
                result.scores["ssim"] = min(1.0, result.scores["ssim"] + self.bias)
                return result

            scorer.score = score  # type: ignore[method-assign]
        return scorer


@pytest.mark.parametrize("bias", [0.03, -0.02], ids=["over-predicts", "under-predicts"])
def test_the_written_file_meets_the_target_whatever_the_proxy_says(
    mosaic: Path, tmp_path: Path, ssim: Evaluator, bias: float
) -> None:
    evaluator = _Biased(bias, metrics=["ssim"])
    report = compress(
        [mosaic], target=TARGET, formats=["jpeg"], out_dir=tmp_path, evaluator=evaluator, proxy_min_pixels=1
    )
    result = report.results[0]
    assert result.met and result.proxy is not None and "16 tiles" in result.proxy
    assert _score(ssim, mosaic, Path(result.output)) >= 0.95  # re-scored independently, from disk
    [outcome] = result.formats
    assert outcome.searched_on == "proxy" and outcome.full_size_checks >= 2  # the proxy misled; it was corrected
    exact = compress([mosaic], target=TARGET, formats=["jpeg"], evaluator=ssim, proxy_min_pixels=None)
    assert exact.results[0].proxy is None
    if bias > 0:  # it first wrote nothing on the proxy's word: the pass is at or above the true minimum
        assert result.params["quality"] >= exact.results[0].params["quality"]
    assert result.params["quality"] <= exact.results[0].params["quality"] + 1  # and not far above it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # checked files that lost are gone


def test_an_honest_proxy_needs_one_full_size_encode_and_check(mosaic: Path, ssim: Evaluator) -> None:
    report = compress(
        [mosaic, mosaic.read_bytes()], target=TARGET, formats=["jpeg"], evaluator=ssim, proxy_min_pixels=1
    )
    for result in report.results:
        assert result.met and result.data is not None
        assert _score(ssim, mosaic, result.data) >= 0.95
        chosen = next(o for o in result.formats if o.format == result.format)
        assert chosen.full_size_checks <= 2 and chosen.full_size_encodes <= 2
    assert report.totals()["full_size_encodes"] <= 3


# --------------------------------------------------------------------------------------------------
# Lossless candidates and requested formats


def _screenshot(path: Path) -> Path:
    """Flat colours, hard edges and text-like strokes: what lossless coding wins on."""
    rng = np.random.default_rng(3)
    pixels = np.full((240, 320, 3), 245, dtype=np.uint8)
    pixels[:30] = (40, 60, 90)  # a title bar
    pixels[30:, :70] = (225, 228, 232)  # a side panel
    for row in range(45, 230, 14):  # lines of "text"
        for start in range(80, 300, 9):
            if rng.random() < 0.8:
                width = int(rng.integers(2, 7))
                pixels[row : row + 8, start : start + width] = (20, 20, 20)
    PILImage.fromarray(pixels).save(path)
    return path


def test_lossless_wins_on_a_screenshot(tmp_path: Path, ssim: Evaluator) -> None:
    source = _screenshot(tmp_path / "screen.png")
    assert lossless_worth_trying(load_image(source))
    report = compress([source], target=TARGET, out_dir=tmp_path / "out", evaluator=ssim, keep_original_if_smaller=False)
    result = report.results[0]
    assert result.met and result.format == "webp" and result.params["lossless"] is True
    lossy = [o for o in result.formats if o.format in ("avif", "jpeg") and o.bytes is not None and o.met]
    assert lossy and all(result.bytes < o.bytes for o in lossy)  # smaller than every lossy file that passed
    written = load_image(Path(result.output))
    assert np.array_equal(written.to_uint8(), load_image(source).to_uint8())  # exact pixels
    assert not lossless_worth_trying(Image(np.random.default_rng(1).random((240, 320, 3), dtype=np.float32)))


def test_requested_formats_are_never_dropped(tmp_path: Path, crops: list[Path], ssim: Evaluator) -> None:
    source = _screenshot(tmp_path / "screen.png")
    report = compress([source, crops[0]], target=TARGET, formats=["png", "webp"], evaluator=ssim)
    assert report.formats == ("png", "webp")
    for result in report.results:
        assert {o.format for o in result.formats} >= {"png", "webp"}
        png = next(o for o in result.formats if o.format == "png")
        assert png.axis == "lossless" and png.probes == 1 and png.met and png.setting is None
    only_png = compress(
        [crops[0]], target="ssim:0.999", formats=["png"], evaluator=ssim, keep_original_if_smaller=False
    )
    [result] = only_png.results
    assert result.met and result.format == "png" and result.quality == pytest.approx(1.0)
    lossless_webp = compress(
        [crops[0]],
        target=TARGET,
        formats=["webp"],
        params={"webp": {"lossless": True}},
        evaluator=ssim,
        keep_original_if_smaller=False,
    )
    [result] = lossless_webp.results
    assert result.params["lossless"] is True and result.total_probes == 1 and result.quality == pytest.approx(1.0)


def test_cli_accepts_png_and_webp_lossless(
    tmp_path: Path, crops: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from optimizer.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "compress",
            str(crops[0]),
            "-t",
            TARGET,
            "--formats",
            "png,webp",
            "--param",
            "webp.lossless=true",
            "-o",
            str(out),
            "--format",
            "json",
            "--no-keep-original",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["formats"] == ["png", "webp"]
    assert {o["format"]: o["axis"] for o in data["results"][0]["formats"]} == {"png": "lossless", "webp": "lossless"}


# --------------------------------------------------------------------------------------------------
# Parallel jobs, resizing, progress


def test_jobs_give_the_same_results_as_one_at_a_time(crops: list[Path], ssim: Evaluator, tmp_path: Path) -> None:
    options: dict[str, Any] = dict(target=TARGET, formats=["jpeg", "webp"], evaluator=ssim)
    sequential = compress(crops, **options)
    parallel = compress(crops, jobs=3, out_dir=tmp_path, **options)
    assert [(r.input, r.format, dict(r.params), r.bytes) for r in parallel.results] == [
        (r.input, r.format, dict(r.params), r.bytes) for r in sequential.results
    ]
    assert all(Path(r.output).stat().st_size == r.bytes for r in parallel.results)
    import torch

    assert torch.get_num_threads() == 1  # restored (the module runs torch on one thread)


def test_max_width_resizes_the_reference_and_the_candidate_alike(
    crops: list[Path], ssim: Evaluator, tmp_path: Path
) -> None:
    from optimizer.errors import InvalidParameterError
    from optimizer.transforms import Transform

    report = compress(
        crops[:1], target=TARGET, formats=["jpeg"], out_dir=tmp_path, evaluator=ssim, max_width=96, max_height=200
    )
    result = report.results[0]
    assert (result.width, result.height) == (96, 96) and result.original_bytes is None
    reference = resize(load_image(crops[0]), width=96, height=96, filter="lanczos")
    assert ssim.evaluate(reference, load_image(Path(result.output))).scores["ssim"] == pytest.approx(
        result.quality, abs=1e-6
    )
    assert result.quality >= 0.95
    unchanged = compress(crops[:1], target=TARGET, formats=["jpeg"], evaluator=ssim, max_width=4000)
    assert (unchanged.results[0].width, unchanged.results[0].height) == (192, 192)  # never enlarged
    tall = compress(crops[:1], target=TARGET, formats=["jpeg"], evaluator=ssim, max_height=64)
    assert (tall.results[0].width, tall.results[0].height) == (64, 64)
    with pytest.raises(InvalidParameterError, match="not both"):
        compress(crops[:1], target=TARGET, max_width=64, transform=Transform(width=32))
    with pytest.raises(InvalidParameterError, match="jobs"):
        compress(crops[:1], target=TARGET, jobs=0)


def test_progress_is_reported_per_probe(crops: list[Path], ssim: Evaluator) -> None:
    calls: list[tuple[int, int, str]] = []
    compress(
        crops[:2],
        target=TARGET,
        formats=["jpeg"],
        evaluator=ssim,
        progress=lambda d, t, label: calls.append((d, t, label)),
    )
    assert calls[0] == (0, 2, "")  # the total is known before the first probe
    probes = [c for c in calls if "quality=" in c[2]]
    assert probes and all(c[2].startswith(crops[0].name) or c[2].startswith(crops[1].name) for c in probes)
    assert any("checked at full size" in c[2] for c in probes)
    assert calls[-1][0] == 2


def test_cli_prints_plain_progress_lines_when_piped(
    crops: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimizer.cli import compress_cmd, main

    monkeypatch.setattr(compress_cmd, "PROGRESS_INTERVAL", 0.0)
    code = main(["compress", str(crops[0]), "-t", TARGET, "--formats", "jpeg", "-d", str(tmp_path), "-j", "2"])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 0 and lines[0] == "compressing: 0/1" and lines[-1] == f"compressing: 1/1 {crops[0].name}"
    assert any(line.startswith(f"compressing: 0/1 {crops[0].name}: jpeg quality=") for line in lines)
    assert "\x1b" not in err  # no terminal control sequences


# --------------------------------------------------------------------------------------------------
# Memory layout


def test_channel_first_images_score_the_same_and_share_the_scorers_tensor(crops: list[Path], ssim: Evaluator) -> None:
    image = load_image(crops[0])
    stored = channel_first(image)
    assert np.array_equal(stored.rgb, image.rgb) and stored.rgb.transpose(2, 0, 1).flags.c_contiguous
    tensor = stored.to_tensor()
    assert tensor.data_ptr() == stored.rgb.ctypes.data  # a view: no second full-size copy
    distorted = load_image(crops[1])
    scorer: ReferenceScorer = ssim.for_reference(stored)
    assert scorer.score(channel_first(distorted)).scores == ssim.evaluate(image, distorted).scores
    assert np.array_equal(stored.rgb, image.rgb)  # scoring left the shared pixels alone


def test_an_interrupt_stops_every_parallel_image(crops: list[Path], ssim: Evaluator, tmp_path: Path) -> None:
    probes: list[str] = []

    def progress(done: int, total: int, label: str) -> None:
        if "quality=" in label:
            probes.append(label)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compress(crops, target=TARGET, formats=["jpeg"], evaluator=ssim, out_dir=tmp_path, jobs=2, progress=progress)
    assert len(probes) <= 2  # each running image stopped at its next probe; the third never started
    assert not list(tmp_path.rglob("*"))  # nothing written, no temporary file left
