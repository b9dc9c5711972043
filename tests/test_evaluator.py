"""The composite evaluator: profiles, normalisation, levels, results, caching and configuration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from optimizer.config import load_config
from optimizer.errors import ConfigError, ImageSizeMismatchError, InvalidParameterError, UnknownNameError
from optimizer.evaluator import PROFILES, EvaluationResult, Evaluator, Profile, QualityLevels, get_profile
from optimizer.imageio import load_image
from optimizer.metrics import get_spec, metric_names


@pytest.fixture(scope="module")
def pair(kodak_paths: list[Path]):
    """A 256x192 Kodak crop and its JPEG q40 version."""
    import io

    from PIL import Image as PILImage

    ref = load_image(kodak_paths[4]).to_pil().crop((200, 100, 456, 292))
    buffer = io.BytesIO()
    ref.save(buffer, "JPEG", quality=40)
    return load_image(ref), load_image(buffer.getvalue()), PILImage


def test_profiles_are_documented_and_valid() -> None:
    assert set(PROFILES) >= {"default", "seed", "perceptual", "fast"}
    default = get_profile("default")
    assert set(default.weights) == {"ssimulacra2", "ms_ssim", "ssim", "psnr"} and not default.needs_weights
    seed = get_profile("seed")
    assert seed.weights == {"lpips": 0.3, "ssim": 0.3, "dists": 0.2, "psnr": 0.1} and seed.needs_weights
    assert math.isclose(sum(seed.normalised_weights.values()), 1.0)
    assert set(get_profile("perceptual").weights) == {"lpips", "ssimulacra2", "ms_ssim"}
    import optimizer.evaluator as module

    for name in ("default", "seed", "perceptual", "fast"):
        assert f"``{name}``" in module.__doc__


def test_unknown_profile_and_metric() -> None:
    with pytest.raises(UnknownNameError, match="default"):
        Evaluator("nope")
    with pytest.raises(UnknownNameError, match="ssimulacra2"):
        Evaluator(metrics=["vmaf"])
    with pytest.raises(InvalidParameterError):
        Profile("bad", {"ssim": -1.0})
    with pytest.raises(InvalidParameterError):
        Evaluator("default", weights={"ssim": 1.0})


@pytest.mark.parametrize("name", metric_names())
def test_normalisation_respects_direction_and_identity(name: str) -> None:
    spec = get_spec(name)
    assert spec.normalise(spec.best_value) == 1.0
    lo, hi = spec.norm_range
    worst = lo if spec.higher_is_better else hi
    assert spec.normalise(worst) == 0.0
    middle = (lo + hi) / 2
    assert spec.normalise(middle) == pytest.approx(0.5)
    assert spec.normalise(float("nan")) == 0.0


def test_identical_images_score_best_on_every_metric(pair) -> None:
    ref, _, _ = pair
    evaluator = Evaluator(metrics=["psnr", "ssim", "ms_ssim", "ssimulacra2"])
    result = evaluator.evaluate(ref, ref)
    assert result.scores["psnr"] == math.inf
    assert result.scores["ssim"] == 1.0 and result.scores["ms_ssim"] == 1.0
    assert result.scores["ssimulacra2"] == pytest.approx(100.0)
    assert all(v == 1.0 for v in result.normalised.values())
    assert result.composite == 1.0 and result.level == "excellent"


def test_composite_is_weighted_mean_of_normalised(pair) -> None:
    ref, dist, _ = pair
    result = Evaluator("default").evaluate(ref, dist)
    weights = get_profile("default").normalised_weights
    expected = sum(weights[m] * get_spec(m).normalise(result.scores[m]) for m in weights)
    assert result.composite == pytest.approx(expected)
    assert 0.0 < result.composite < 1.0
    assert result.level == QualityLevels().level(result.composite)
    assert result.metric_versions["ssimulacra2"] == "2.1"


def test_custom_weights_and_extra_metrics(pair) -> None:
    ref, dist, _ = pair
    custom = Evaluator(weights={"ssim": 3, "psnr": 1}).evaluate(ref, dist)
    assert custom.profile == "custom" and custom.weights == {"ssim": 0.75, "psnr": 0.25}
    extra = Evaluator("fast", metrics=["ms_ssim"]).evaluate(ref, dist)
    assert set(extra.scores) == {"ssim", "psnr", "ms_ssim"} and "ms_ssim" not in extra.weights
    equal = Evaluator(metrics=["ssim", "psnr"]).evaluate(ref, dist)
    assert equal.weights == {"ssim": 0.5, "psnr": 0.5}


def test_quality_levels_configurable() -> None:
    levels = QualityLevels()
    assert [levels.level(x) for x in (0.95, 0.85, 0.75, 0.65, 0.55, 0.1)] == [
        "excellent",
        "very_good",
        "good",
        "acceptable",
        "poor",
        "very_poor",
    ]
    strict = QualityLevels.from_mapping({"great": 0.95, "ok": 0.8})
    assert strict.level(0.9) == "ok" and strict.level(0.5) == "very_poor"
    with pytest.raises(InvalidParameterError):
        QualityLevels((("a", 0.5), ("b", 0.7)))


def test_result_is_json_serialisable_and_round_trips(pair) -> None:
    ref, _, _ = pair
    result = Evaluator("fast").evaluate(ref, ref)
    text = result.to_json()
    data = json.loads(text)
    assert data["scores"]["psnr"] == "inf"  # reported honestly, not clamped
    back = EvaluationResult.from_dict(data)
    assert back.scores["psnr"] == math.inf and back.composite == result.composite


def test_mismatched_sizes_are_an_error_unless_resized(pair) -> None:
    ref, dist, pil = pair
    smaller = load_image(dist.to_pil().resize((128, 96)))
    with pytest.raises(ImageSizeMismatchError, match="256x192.*128x96"):
        Evaluator("fast").evaluate(ref, smaller)
    result = Evaluator("fast", resize_to_reference=True).evaluate(ref, smaller)
    assert result.width == 256 and 0 < result.scores["ssim"] < 1


def test_scoring_a_metric_the_evaluator_lacks(pair) -> None:
    ref, dist, _ = pair
    scorer = Evaluator("fast").for_reference(ref)
    assert set(scorer.score(dist, metrics=["psnr"]).scores) == {"psnr"}
    with pytest.raises(UnknownNameError, match="lpips"):
        scorer.score(dist, metrics=["psnr", "lpips"])


def test_cached_reference_equals_uncached(pair) -> None:
    ref, dist, _ = pair
    evaluator = Evaluator("default")
    scorer = evaluator.for_reference(ref)
    cached = [scorer.score(dist).scores for _ in range(2)]
    fresh = Evaluator("default").evaluate(ref, dist).scores
    assert cached[0] == cached[1] == fresh


def test_one_scorer_shared_by_threads_equals_sequential(pair) -> None:
    # Tuning trials in threads (n_jobs) and the service share one scorer per reference: scoring must not
    # touch shared scratch state.
    from concurrent.futures import ThreadPoolExecutor

    ref, dist, _ = pair
    box = (0, 0, 96, 80)
    reference = load_image(ref.to_pil().crop(box))
    candidates = [load_image(dist.to_pil().crop(box)), load_image(dist.to_pil().crop(box).rotate(180)), reference]
    scorer = Evaluator("default").for_reference(reference)
    sequential = [scorer.score(c).scores for c in candidates]
    with ThreadPoolExecutor(3) as pool:
        threaded = list(pool.map(lambda i: scorer.score(candidates[i % 3]).scores, range(24)))
    assert threaded == [sequential[i % 3] for i in range(24)]


def test_inputs_as_paths_arrays_and_pil(pair, tmp_path: Path) -> None:
    ref, dist, _ = pair
    ref.to_pil().save(tmp_path / "ref.png")
    dist.to_pil().save(tmp_path / "dist.png")
    evaluator = Evaluator("fast")
    a = evaluator.evaluate(tmp_path / "ref.png", tmp_path / "dist.png").scores
    b = evaluator.evaluate(ref.to_uint8(), dist.to_pil()).scores
    assert a == pytest.approx(b)


def test_maps_have_image_size(pair) -> None:
    ref, dist, _ = pair
    maps = Evaluator(metrics=["ssim", "ssimulacra2"]).for_reference(ref).maps(dist)
    assert set(maps) == {"ssim", "ssimulacra2"}
    for arr in maps.values():
        assert arr.shape == (192, 256) and np.isfinite(arr).all()


def test_config_file(tmp_path: Path, pair) -> None:
    ref, dist, _ = pair
    path = tmp_path / "optimizer.toml"
    path.write_text(
        '[evaluator]\nprofile = "photos"\n\n[profiles.photos]\nssim = 0.8\npsnr = 0.2\n\n'
        "[levels]\nexcellent = 0.99\ngood = 0.5\n"
    )
    config = load_config(path)
    evaluator = config.evaluator()
    result = evaluator.evaluate(ref, dist)
    assert result.profile == "photos" and result.weights == {"ssim": 0.8, "psnr": 0.2}
    assert result.level in ("excellent", "good", "very_poor")
    assert config.evaluator(profile="fast").profile.name == "fast"  # flags override the file
    for bad, message in (
        ('[evaluator]\nprofil = "x"\n', "unknown key"),
        ("[colours]\n", "unknown key"),
        ("[profiles.p]\nvmaf = 1\n", "vmaf"),
        ("[levels]\na = 0.5\nb = 0.5\n", "decreasing"),
        ("[evaluator\n", "config"),
        ('[evaluator]\nresize_to_reference = "no"\n', "true or false"),
    ):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path.write_bytes(b"\xff\xfe[evaluator]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
