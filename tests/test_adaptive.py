"""Per-image adaptive compression: the search, the guarantee, the report and the CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.codecs import get_codec
from optimizer.errors import InvalidParameterError, UnknownNameError
from optimizer.evaluator import Evaluator
from optimizer.imageio import load_image
from optimizer.tuning.adaptive import compress
from optimizer.tuning.quality_axis import QualityAxis
from optimizer.tuning.rootfind import adaptive_search, bisection_search
from optimizer.tuning.target import Target

TARGET = "ssim:0.95"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# Fixtures: three Kodak crops written as PNG files (the originals compress() compares against)


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("crops")
    out = []
    for index, box in ((0, (200, 100, 456, 356)), (2, (300, 150, 556, 406)), (22, (100, 100, 356, 356))):
        path = folder / kodak_paths[index].name
        PILImage.open(kodak_paths[index]).convert("RGB").crop(box).save(path)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def ssim() -> Evaluator:
    return Evaluator(metrics=["ssim"]).load()


@pytest.fixture(scope="module")
def jpeg_webp(crops: list[Path], ssim: Evaluator, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("out")
    return out, compress(crops, target=TARGET, formats=["jpeg", "webp"], out_dir=out, evaluator=ssim)


def _score(ssim: Evaluator, reference: Path, data: bytes | Path) -> float:
    return ssim.evaluate(load_image(reference), load_image(data)).scores["ssim"]


# --------------------------------------------------------------------------------------------------
# The search on synthetic curves


def _curves(seed: int, count: int = 40) -> list[list[float]]:
    """Saturating score curves over 100 positions (images of varied difficulty), with non-monotone noise."""
    rng = random.Random(seed)
    curves = []
    for _ in range(count):
        k = rng.uniform(0.03, 0.05)
        shift = rng.uniform(-10, 10)
        curves.append([1 - math.exp(-k * (i + 10 + shift)) + rng.uniform(-0.001, 0.001) for i in range(100)])
    return curves


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_finds_a_certified_crossing_in_fewer_probes_than_bisection(seed: int) -> None:
    adaptive = bisect = 0
    guess, slope = 50, None
    for curve in _curves(seed):
        margin = [v - 0.9 for v in curve]
        a = adaptive_search(lambda i: margin[i], 100, guess=guess, slope=slope)
        b = bisection_search(lambda i: margin[i], 100)
        assert len(set(a.order)) == len(a.order)  # never the same position twice
        if a.answer is None:
            assert 99 in a.order and margin[99] < 0
            continue
        assert margin[a.answer] >= 0
        assert a.certified and (a.answer == 0 or margin[a.answer - 1] < 0)
        if b.answer is not None and all(m >= 0 for m in margin[b.answer :]) and all(m < 0 for m in margin[: b.answer]):
            assert a.answer == b.answer  # monotone curve: the same minimal position
        adaptive += a.probes
        bisect += b.probes
        guess, slope = a.answer, a.slope() or slope
    assert adaptive < 0.75 * bisect, (adaptive, bisect)


def test_search_edges_and_budget() -> None:
    never = adaptive_search(lambda i: -1.0 + i * 0.001, 100, guess=30)
    assert never.answer is None and 99 in never.order and not never.certified
    always = adaptive_search(lambda i: 1.0 + i, 100, guess=60)
    assert always.answer == 0 and always.certified
    budget = adaptive_search(lambda i: i - 77.5, 100, guess=0, max_probes=2)
    assert budget.probes == 2 and budget.exhausted
    one = adaptive_search(lambda i: 0.0, 1)
    assert one.answer == 0 and one.probes == 1
    nan = adaptive_search(lambda i: math.nan if i < 40 else 1.0, 100, guess=10)
    assert nan.answer == 40 and nan.certified
    stopped = adaptive_search(lambda i: i - 80.0, 100, guess=10, stop=lambda i, m: m < 0)
    assert stopped.stopped and stopped.probes == 1


def test_lower_is_better_metric_direction() -> None:
    # A distance target (lpips:0.1): the margin is positive when the distance is at or below the bar.
    target = Target.parse("lpips:0.1")
    assert not target.higher_is_better
    distances = [0.5 * math.exp(-0.04 * i) for i in range(100)]  # improves with the position
    trace = adaptive_search(lambda i: target.margin(distances[i]), 100, guess=80)
    first = next(i for i, d in enumerate(distances) if d <= 0.1)
    assert trace.answer == first and trace.certified


def test_axis_direction_follows_the_codec() -> None:
    jpeg = QualityAxis.for_codec(get_codec("jpeg"), (30, 95))
    assert jpeg is not None and jpeg.value(0) == 30 and jpeg.value(len(jpeg) - 1) == 95
    jxl = get_codec("jxl", require_available=False)
    axis = QualityAxis.for_codec(jxl, (0.5, 3.0))
    assert axis is not None and axis.param == "distance"
    assert axis.value(0) == 3.0 and axis.value(len(axis) - 1) == 0.5  # worse first: distance falls
    assert QualityAxis.for_codec(get_codec("png")) is None
    with pytest.raises(InvalidParameterError, match="quality must be an integer in"):
        QualityAxis.for_codec(get_codec("jpeg"), (0, 95))


# --------------------------------------------------------------------------------------------------
# compress(): the guarantee and minimality on real images


def test_every_written_file_meets_the_target(jpeg_webp, crops: list[Path], ssim: Evaluator) -> None:  # type: ignore[no-untyped-def]
    out, report = jpeg_webp
    assert report.all_met and not report.failures and len(report.results) == len(crops)
    for result, source in zip(report.results, crops):
        written = Path(result.output)
        assert written.parent == out and written.stem == source.stem
        assert written.suffix == get_codec(result.format).extension
        assert written.stat().st_size == result.bytes
        independent = _score(ssim, source, written)  # re-scored from disk with a fresh reference
        assert independent >= 0.95
        assert independent == pytest.approx(result.quality, abs=1e-6)
        assert result.met and result.minimal and not result.kept_original
        assert set(result.probes) == {"jpeg", "webp"} and result.total_probes == sum(result.probes.values())
        assert result.bits_per_pixel == pytest.approx(result.bytes * 8 / (256 * 256))
        best = min((o for o in result.formats if o.met), key=lambda o: o.bytes)
        assert best.format == result.format and best.bytes == result.bytes
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_chosen_quality_is_minimal(jpeg_webp, crops: list[Path], ssim: Evaluator) -> None:  # type: ignore[no-untyped-def]
    _, report = jpeg_webp
    for result, source in zip(report.results, crops):
        codec = get_codec(result.format)
        q = result.params["quality"]
        one_lower = codec.encode(load_image(source), {**result.params, "quality": q - 1})
        assert _score(ssim, source, one_lower) < 0.95, (source.name, result.format, q)


def test_matches_an_exhaustive_scan(crops: list[Path], ssim: Evaluator, tmp_path: Path) -> None:
    source = tmp_path / "small.png"
    PILImage.open(crops[0]).crop((64, 64, 192, 192)).save(source)  # 128x128 keeps 100 scores cheap
    image = load_image(source)
    scorer = ssim.for_reference(image)
    codec = get_codec("jpeg")
    scores = {q: scorer.score(codec.decode(codec.encode(image, {"quality": q}))).scores["ssim"] for q in range(1, 101)}
    crossings = [q for q in range(2, 101) if scores[q] >= 0.95 > scores[q - 1]]
    report = compress([source], target=TARGET, formats=["jpeg"], evaluator=ssim)
    chosen = report.results[0].params["quality"]
    assert chosen in crossings
    if len(crossings) == 1:  # monotone near the bar: the global minimum
        assert chosen == min(q for q, s in scores.items() if s >= 0.95)
    assert report.results[0].total_probes <= 7 < len(scores)


def test_fewer_probes_than_bisection(crops: list[Path], ssim: Evaluator) -> None:
    report = compress(crops, target=TARGET, formats=["jpeg"], evaluator=ssim)
    axis = QualityAxis.for_codec(get_codec("jpeg"))
    assert axis is not None
    bisect = 0
    for source, result in zip(crops, report.results):
        image = load_image(source)
        scorer = ssim.for_reference(image)
        codec = get_codec("jpeg")

        def margin(i: int) -> float:
            data = codec.encode(image, {"quality": axis.value(i)})
            return scorer.score(codec.decode(data)).scores["ssim"] - 0.95

        trace = bisection_search(margin, len(axis))
        assert axis.value(trace.answer) == result.params["quality"]  # same answer, different cost
        bisect += trace.probes
    adaptive = report.totals()["probes"]
    assert adaptive < bisect, (adaptive, bisect)


def test_impossible_target_keeps_the_best_candidate(crops: list[Path], ssim: Evaluator, tmp_path: Path) -> None:
    report = compress(crops[:1], target="ssim:0.99999", formats=["jpeg", "webp"], out_dir=tmp_path, evaluator=ssim)
    result = report.results[0]
    assert not result.met and not report.all_met and report.unmet == [result]
    assert not result.kept_original and "best-quality candidate" in (result.reason or "")
    assert "ssim:0.99999" in result.reason  # type: ignore[operator]
    # the kept file is the best quality either format reached
    best = max(o.quality for o in result.formats if o.quality is not None)
    assert result.quality == pytest.approx(best, abs=1e-6)
    assert _score(ssim, crops[0], Path(result.output)) == pytest.approx(result.quality, abs=1e-6)
    original = compress(
        crops[:1], target="ssim:0.99999", formats=["jpeg"], out_dir=tmp_path / "o", evaluator=ssim, fallback="original"
    )
    kept = original.results[0]
    assert kept.kept_original and not kept.met and "original was kept" in (kept.reason or "")
    assert Path(kept.output).read_bytes() == crops[0].read_bytes()


def test_jxl_distance_axis_lower_is_better(crops: list[Path], ssim: Evaluator) -> None:
    if not get_codec("jxl", require_available=False).available():
        pytest.skip("JPEG XL is not installed")
    report = compress(
        crops[:1],
        target=TARGET,
        formats=["jxl"],
        evaluator=ssim,
        params={"jxl": {"effort": 3}},
        quality_range=(0.2, 6.0),
    )
    result = report.results[0]
    assert result.met and result.minimal and result.data is not None and result.output is None
    distance = result.params["distance"]
    assert 0.2 <= distance <= 6.0 and result.setting_label == f"jxl distance={distance:g}"
    codec = get_codec("jxl")
    worse = codec.encode(load_image(crops[0]), {"distance": round(distance + 0.05, 6), "effort": 3})
    assert _score(ssim, crops[0], worse) < 0.95
    assert _score(ssim, crops[0], result.data) >= 0.95


class _StricterOnCheck(Evaluator):
    """Scores written files (full-metric calls) a little lower than probes, as a flaky decoder might."""

    def for_reference(self, reference, *, name=None):  # type: ignore[no-untyped-def]
        scorer = super().for_reference(reference, name=name)
        plain = scorer.score

        def score(distorted, *, metrics=None):  # type: ignore[no-untyped-def]
            result = plain(distorted, metrics=metrics)
            if metrics is None:  # the check of the written file
                result.scores["ssim"] -= 0.004
            return result

        scorer.score = score  # type: ignore[method-assign]
        return scorer


def test_walks_up_when_the_written_file_fails_its_check(crops: list[Path], tmp_path: Path) -> None:
    plain = compress(crops[:1], target=TARGET, formats=["jpeg"], evaluator=Evaluator(metrics=["ssim"]))
    strict = compress(
        crops[:1], target=TARGET, formats=["jpeg"], out_dir=tmp_path, evaluator=_StricterOnCheck(metrics=["ssim"])
    )
    first, walked = plain.results[0], strict.results[0]
    assert walked.met and not walked.minimal
    assert walked.params["quality"] > first.params["quality"]
    assert walked.quality >= 0.95 and walked.total_probes > first.total_probes
    assert [p.name for p in tmp_path.iterdir()] == [f"{crops[0].stem}.jpg"]  # failed checks leave no file


def test_format_pruning_saves_probes(jpeg_webp, crops: list[Path], ssim: Evaluator) -> None:  # type: ignore[no-untyped-def]
    _, pruned = jpeg_webp
    full = compress(crops, target=TARGET, formats=["jpeg", "webp"], evaluator=ssim, prune=False)
    assert [r.bytes for r in full.results] == [r.bytes for r in pruned.results]
    assert pruned.totals()["probes"] < full.totals()["probes"]
    assert all(o.certified for r in full.results for o in r.formats)


def test_probe_budget(crops: list[Path], ssim: Evaluator) -> None:
    report = compress(crops, target=TARGET, formats=["jpeg"], evaluator=ssim, max_probes=2)
    for result in report.results:
        assert result.probes["jpeg"] <= 2
        assert not result.minimal or result.formats[0].certified
        if result.met:
            assert result.quality >= 0.95
        else:
            assert "budget of 2 probes" in (result.reason or "")
    with pytest.raises(InvalidParameterError, match="max_probes"):
        compress(crops[:1], target=TARGET, formats=["jpeg"], evaluator=ssim, max_probes=0)


def test_original_kept_when_smaller(tmp_path: Path, ssim: Evaluator) -> None:
    flat = tmp_path / "flat.png"
    PILImage.new("RGB", (64, 64), (40, 90, 160)).save(flat, optimize=True)
    report = compress([flat], target=TARGET, formats=["jpeg"], out_dir=tmp_path / "out", evaluator=ssim)
    result = report.results[0]
    assert result.met and result.kept_original and result.format == "png"
    assert Path(result.output).read_bytes() == flat.read_bytes() and "original" in (result.reason or "")
    larger = compress(
        [flat],
        target=TARGET,
        formats=["jpeg"],
        out_dir=tmp_path / "out2",
        evaluator=ssim,
        keep_original_if_smaller=False,
    )
    bigger = larger.results[0]
    assert bigger.met and not bigger.kept_original and bigger.bytes > flat.stat().st_size
    assert "larger than the original" in (bigger.reason or "")


def test_composite_target_and_report(crops: list[Path], tmp_path: Path) -> None:
    report = compress(crops[1], target="composite:0.85", formats=["jpeg"], profile="fast")
    result = report.results[0]
    assert result.met and set(result.scores) == {"ssim", "psnr"} and result.quality >= 0.85
    data = report.to_dict()
    assert data["totals"]["probes"] == result.total_probes and data["results"][0]["met"] is True
    json.loads(report.to_json(tmp_path / "report.json"))
    frame = report.to_dataframe()
    assert list(frame["probes_jpeg"]) == [result.probes["jpeg"]]


def test_failures_and_validation(crops: list[Path], tmp_path: Path, ssim: Evaluator) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    report = compress([broken, tmp_path / "missing.png", crops[0]], target=TARGET, formats=["jpeg"], evaluator=ssim)
    assert [f.input for f in report.failures] == [str(tmp_path / "missing.png"), str(broken)]
    assert len(report.results) == 1 and not report.all_met
    with pytest.raises(InvalidParameterError, match="axis the search scans"):
        compress(crops[:1], target=TARGET, formats=["jpeg"], params={"jpeg": {"quality": 80}})
    with pytest.raises(InvalidParameterError, match="no quality axis to restrict"):
        compress(
            crops[:1],
            target=TARGET,
            formats=["webp"],
            params={"webp": {"lossless": True}},
            quality_range={"webp": (10, 20)},
        )
    with pytest.raises(InvalidParameterError, match="not among the formats"):
        compress(crops[:1], target=TARGET, formats=["jpeg"], params={"webp": {"method": 6}})
    with pytest.raises(UnknownNameError):
        compress(crops[:1], target=TARGET, formats=["gif"])
    with pytest.raises(InvalidParameterError, match="not computed by the evaluator"):
        compress(crops[:1], target="psnr:40", evaluator=ssim)
    with pytest.raises(InvalidParameterError, match="fallback"):
        compress(crops[:1], target=TARGET, fallback="nothing")


def test_refuses_to_overwrite_its_input(tmp_path: Path, crops: list[Path], ssim: Evaluator) -> None:
    photo = tmp_path / "photo.jpg"
    PILImage.open(crops[0]).save(photo, quality=98)
    before = photo.read_bytes()
    report = compress([photo], target=TARGET, formats=["jpeg"], out_dir=tmp_path, evaluator=ssim)
    assert report.failures and "overwrite the input" in report.failures[0].reason
    assert photo.read_bytes() == before


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli(crops: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optimizer.cli.compress_cmd  # noqa: F401  (registers the command)
    from optimizer.cli import main

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i, crop in enumerate(crops[:2]):
        (folder / ("sub" if i else "") / crop.name).write_bytes(crop.read_bytes())
    out = tmp_path / "out"
    code = main(
        ["compress", str(folder), "--target", TARGET, "--formats", "jpeg", "-d", str(out), "--quality", "20-100"]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (out / f"{crops[0].stem}.jpg").is_file() and (out / "sub" / f"{crops[1].stem}.jpg").is_file()
    assert "probes" in printed and "2 of 2 met the target" in printed

    code = main(
        [
            "compress",
            str(crops[0]),
            "--target",
            "ssim:0.99999",
            "--formats",
            "jpeg",
            "-d",
            str(out / "x"),
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["results"][0]["met"] is False and data["totals"]["unmet"] == 1
    assert data["results"][0]["total_probes"] >= 1

    code = main(["compress", str(tmp_path / "nope.png"), "--target", TARGET, "--formats", "jpeg", "-d", str(out)])
    assert code == 3
    code = main(["compress", str(crops[0]), "--target", "ssim", "-d", str(out)])
    assert code == 2
    code = main(
        [
            "compress",
            str(crops[0]),
            "--target",
            TARGET,
            "--formats",
            "jpeg",
            "-d",
            str(out),
            "--param",
            "jpeg.quality=80",
        ]
    )
    assert code == 2


def test_cli_parsing() -> None:
    from optimizer.cli._parsing import parse_format_params, parse_quality_range

    assert parse_quality_range("40-95") == (40.0, 95.0)
    assert parse_quality_range("jpeg=40-95, jxl=0.5-3") == {"jpeg": (40.0, 95.0), "jxl": (0.5, 3.0)}
    assert parse_quality_range(None) is None
    with pytest.raises(InvalidParameterError, match="LOW-HIGH"):
        parse_quality_range("40")
    assert parse_format_params(["avif.speed=8", "jpeg.progressive=true"]) == {
        "avif": {"speed": 8},
        "jpeg": {"progressive": True},
    }
    # without FORMAT. a setting applies to every searched format that has it (and must exist in one)
    assert parse_format_params(["quality=80", "jpg.optimize=on"], ["avif", "webp", "jpeg"]) == {
        "avif": {"quality": 80},
        "webp": {"quality": 80},
        "jpeg": {"quality": 80, "optimize": True},
    }
    assert parse_format_params(["speed=8"], ["avif", "jpeg"]) == {"avif": {"speed": 8}}
    with pytest.raises(InvalidParameterError, match="FORMAT.speed=VALUE"):
        parse_format_params(["speed=8"], ["jpeg"])


def test_resize_transform_scores_against_a_resized_reference(
    crops: list[Path], ssim: Evaluator, tmp_path: Path
) -> None:
    from optimizer.transforms import Transform, resize

    report = compress(
        crops[:1],
        target=TARGET,
        formats=["jpeg"],
        out_dir=tmp_path,
        evaluator=ssim,
        transform=Transform(width=128, filter="bilinear"),
    )
    result = report.results[0]
    assert result.met and (result.width, result.height) == (128, 128) and result.original_bytes is None
    reference = resize(load_image(crops[0]), width=128, filter="lanczos")
    assert ssim.evaluate(reference, load_image(Path(result.output))).scores["ssim"] >= 0.95


def test_in_memory_inputs(crops: list[Path], ssim: Evaluator) -> None:
    image = load_image(crops[0])
    array = np.asarray(PILImage.open(crops[1]).convert("RGB"))
    report = compress([image, array], target=TARGET, formats=["jpeg"], evaluator=ssim)
    assert [r.output for r in report.results] == [None, None]
    assert all(r.data is not None and r.original_bytes is None for r in report.results)
    assert report.results[1].input == "image001"


def test_transparent_images_keep_their_alpha(tmp_path: Path, crops: list[Path], ssim: Evaluator) -> None:
    rgba = PILImage.open(crops[0]).convert("RGBA").resize((96, 96))
    alpha = np.zeros((96, 96), dtype=np.uint8)
    alpha[16:80, 16:80] = 255
    rgba.putalpha(PILImage.fromarray(alpha))
    logo = tmp_path / "logo.png"
    rgba.save(logo)
    report = compress(
        [logo],
        target=TARGET,
        formats=["jpeg", "webp"],
        out_dir=tmp_path / "out",
        evaluator=ssim,
        keep_original_if_smaller=False,
    )
    result = report.results[0]
    assert result.format == "webp" and set(result.probes) == {"webp"}
    assert load_image(Path(result.output)).alpha is not None
    only_jpeg = compress([logo], target=TARGET, formats=["jpeg"], evaluator=ssim, keep_original_if_smaller=False)
    assert only_jpeg.results[0].format == "jpeg"  # asked for nothing else: flattened as documented


def test_output_names_never_depend_on_the_batch(tmp_path: Path, crops: list[Path], ssim: Evaluator) -> None:
    """One rule: a folder's files keep their relative path, the extension is the codec's; an input whose
    output name another input already takes is refused (and says which), never renamed."""
    for folder, source in (("a", crops[0]), ("b", crops[1])):
        (tmp_path / folder).mkdir()
        PILImage.open(source).resize((64, 64)).save(tmp_path / folder / "photo.png")
    PILImage.open(crops[0]).resize((64, 64)).save(tmp_path / "a" / "photo.bmp")
    options = dict(target=TARGET, formats=["jpeg"], evaluator=ssim, keep_original_if_smaller=False)
    report = compress([tmp_path / "a", tmp_path / "b"], out_dir=tmp_path / "out", **options)
    assert [Path(r.output).relative_to(tmp_path / "out").as_posix() for r in report.results] == ["photo.jpg"]
    assert [f.input for f in report.failures] == [str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png")]
    assert all("taken by" in f.reason and "photo.bmp" in f.reason for f in report.failures)
    alone = compress([tmp_path / "b" / "photo.png"], out_dir=tmp_path / "alone", **options)
    assert Path(alone.results[0].output).name == "photo.jpg"  # the same name as in the batch


def test_existing_outputs_error_skip_or_overwrite(tmp_path: Path, crops: list[Path], ssim: Evaluator) -> None:
    out = tmp_path / "out"
    options = dict(target=TARGET, formats=["jpeg"], evaluator=ssim, keep_original_if_smaller=False, out_dir=out)
    first = compress(crops[:1], **options)
    written = Path(first.results[0].output)
    stamp = written.stat().st_mtime_ns
    again = compress(crops[:1], **options)
    assert not again.results and "--overwrite" in again.failures[0].reason and not again.all_met
    skipped = compress(crops[:1], existing="skip", **options)
    assert not skipped.results and not skipped.failures and len(skipped.skipped) == 1 and skipped.all_met
    assert written.stat().st_mtime_ns == stamp
    replaced = compress(crops[:1], existing="overwrite", **options)
    assert replaced.results and replaced.all_met
    assert sorted(p.name for p in out.iterdir()) == [written.name]  # no temporary file left behind
