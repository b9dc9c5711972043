"""Study figures and tables (optimizer.plots): series, axes, tiers, importances, crops, maps, no pyplot state."""

from __future__ import annotations

from pathlib import Path

import matplotlib._pylab_helpers as pylab_helpers
import numpy as np
import pytest
from conftest import SMALL_STUDY_IMAGES
from matplotlib.figure import Figure

from optimizer import plots
from optimizer.errors import InvalidParameterError
from optimizer.imageio import load_image
from optimizer.tuning import analysis
from optimizer.tuning import crops as crops_module
from optimizer.tuning.settings import EncodingSettings
from optimizer.tuning.study import TuneConfig, TuningResult, open_stored_study, prepare_study

pytestmark = pytest.mark.slow

NAMES = SMALL_STUDY_IMAGES


@pytest.fixture(scope="module")
def corpus_dir(small_study_dir: Path) -> Path:
    return small_study_dir


@pytest.fixture(scope="module")
def result(small_study: TuningResult) -> TuningResult:
    return small_study


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _gids(ax) -> set[str]:
    return {a.get_gid() for a in [*ax.collections, *ax.lines, *ax.texts] if a.get_gid()}


def test_rate_quality_one_series_per_format(result: TuningResult) -> None:
    fig = plots.rate_quality(result)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "bits per pixel"
    assert ax.get_ylabel().startswith("ssim (p10 over 2 images)")
    texts = _legend_texts(ax)
    for expected in ("jpeg", "webp", "target ssim:0.9", "meets target", "misses target"):
        assert expected in texts
    gids = _gids(ax)
    formats = set(result.trials_dataframe().query("state == 'COMPLETE'")["format"])
    assert {f"curve-{f}" for f in formats} <= gids
    assert {"feasible-jpeg", "infeasible-jpeg", "feasible-webp", "target"} <= gids
    target = next(line for line in ax.lines if line.get_gid() == "target")
    assert set(target.get_ydata()) == {0.9}
    # every measured point (each trial's answer and its other complete probes) and every pruned trial is
    # drawn once, in its format's colour group
    drawn = sum(
        len(c.get_offsets())
        for c in ax.collections
        if c.get_gid() and c.get_gid().split("-")[0] in ("feasible", "infeasible", "pruned")
    )
    points = result.points_dataframe().query("state == 'COMPLETE'")
    pruned = result.trials_dataframe().query("state == 'PRUNED'")
    assert drawn == len(points) + len(pruned) and len(points) > len(result.trials_dataframe())


def test_rate_quality_other_metric_and_unknown_metric(result: TuningResult) -> None:
    (ax,) = plots.rate_quality(result, metric="psnr").axes
    assert ax.get_ylabel().startswith("psnr")
    assert "target ssim:0.9" not in _legend_texts(ax)
    with pytest.raises(InvalidParameterError, match="recorded: psnr, ssim|recorded: composite, psnr, ssim"):
        plots.rate_quality(result, metric="lpips")


def test_accepts_study_pair_and_result(result: TuningResult) -> None:
    pair = open_stored_study(result.study_name, result.storage)  # a (study, definition) pair
    for source in (result, result.study, pair):
        (ax,) = plots.pareto_front(source).axes
        assert "tiers" in _gids(ax)


def test_pareto_front_marks_the_tiers(result: TuningResult) -> None:
    preset = result.presets
    assert preset is not None
    (ax,) = plots.pareto_front(result).axes
    tiers = next(c for c in ax.collections if c.get_gid() == "tiers")
    assert len(tiers.get_offsets()) == len(preset.tiers)
    front = next(line for line in ax.lines if line.get_gid() == "front")
    assert len(front.get_xdata()) == len(result.pareto_front)
    # the default tier is the cheapest feasible trial, which lies on the front
    tier = preset.default_tier
    x, y = tiers.get_offsets()[0]
    assert x == pytest.approx(tier.expected.bits_per_pixel)
    assert y == pytest.approx(tier.expected.quality)
    labels = [t.get_text() for t in ax.texts]
    assert f"{tier.name} (default)" in labels
    (bare,) = plots.pareto_front(result, None).axes
    assert "tiers" not in _gids(bare)


def test_importances_per_format_and_all(result: TuningResult) -> None:
    table = analysis.importance_table(result, evaluator="ped-anova", min_trials=3)
    assert table.attrs["evaluator"] == "PED-ANOVA"
    assert set(table["objective"]) <= {"bytes", "quality"}
    for _, group in table.groupby(["scope", "objective"]):
        assert group["importance"].sum() == pytest.approx(1.0)
    assert set(table[table["scope"] == "all formats"]["param"]) == {"format"}
    jpeg = table[table["scope"] == "jpeg"]
    assert set(jpeg["param"]) <= {"jpeg.subsampling", "jpeg.optimize"} and not jpeg.empty
    fig = plots.param_importances(result, evaluator="ped-anova", min_trials=3)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["all formats", "jpeg", "webp"]
    bars = {c.get_label() for ax in fig.axes for c in ax.containers}
    assert bars == {"bytes", "quality"}


def test_importances_default_is_fanova_or_says_why_not(result: TuningResult) -> None:
    table = analysis.importance_table(result)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        assert table.attrs["evaluator"] == "PED-ANOVA"
        assert "scikit-learn" in table.attrs["fallback"]
        assert "scikit-learn" in plots.param_importances(result).get_suptitle()
    else:
        assert table.attrs["evaluator"] == "fANOVA" and table.attrs["fallback"] is None


def test_importances_with_too_few_trials_say_so(result: TuningResult) -> None:
    table = analysis.importance_table(result, evaluator="ped-anova", min_trials=50)
    assert table.empty
    assert all("need at least 50" in note for note in table.attrs["notes"].values())
    fig = plots.param_importances(result, evaluator="ped-anova", min_trials=50)
    assert all(not ax.containers for ax in fig.axes)
    assert any("need at least 50" in t.get_text() for ax in fig.axes for t in ax.texts)
    with pytest.raises(InvalidParameterError, match="importance evaluator"):
        analysis.importance_table(result, evaluator="shap")


def test_tradeoff_table_with_and_without_baseline(result: TuningResult) -> None:
    table = analysis.tradeoff_table(result)
    assert list(table.columns) == [
        "tier",
        "default",
        "target",
        "format",
        "settings",
        "bits_per_pixel",
        "quality",
        "total_bytes",
        "trial",
    ]
    assert table["default"].sum() == 1
    tier = result.presets.default_tier
    row = table[table["tier"] == tier.name].iloc[0]
    assert row["format"] == tier.codec and row["total_bytes"] == tier.expected.total_bytes
    baseline = analysis.Baseline(
        "twice the default tier", 2 * tier.expected.total_bytes, 2 * tier.expected.bits_per_pixel
    )
    with_base = analysis.tradeoff_table(result, baseline=baseline)
    assert with_base.attrs["baseline"] == "twice the default tier"
    assert with_base.iloc[0]["savings"] == pytest.approx(0.5)
    assert with_base.iloc[-1]["tier"] == "baseline" and with_base.iloc[-1]["savings"] == 0.0


def test_measure_baseline_scores_like_the_study(result: TuningResult, corpus_dir: Path) -> None:
    corpus = analysis.study_corpus(result, corpus_dir)
    base = analysis.measure_baseline(result, corpus, EncodingSettings("jpeg", {"quality": 85}))
    images = [load_image(corpus_dir / n) for n in NAMES]
    encoded = [EncodingSettings("jpeg", {"quality": 85}).encode(im) for im in images]
    assert base.total_bytes == sum(e.bytes for e in encoded)
    assert base.bits_per_pixel == pytest.approx(base.total_bytes * 8 / sum(im.pixels for im in images))
    assert 0.9 < base.quality <= 1.0


def test_hardest_images_follow_the_recorded_scores(result: TuningResult) -> None:
    trial = result.study.trials[result.presets.default_tier.trial_number]
    ranked = analysis.hardest_images(trial, "ssim:0.9", count=5)
    scores = {r["name"]: r["scores"]["ssim"] for r in trial.user_attrs["images"]}
    assert [r["name"] for r in ranked] == sorted(scores, key=scores.get)
    assert analysis.hardest_images(trial, "ssim:0.9", count=1)[0]["quality"] == min(scores.values())
    composites = {r["name"]: r["composite"] for r in trial.user_attrs["images"]}
    assert analysis.hardest_images(trial, "composite:0.5", count=1)[0]["name"] == min(composites, key=composites.get)


def test_comparison_crops_show_the_hardest_images(result: TuningResult, corpus_dir: Path) -> None:
    crops = crops_module.hardest_crops(result, corpus_dir, count=2, crop=64)
    assert [c.name for c in crops] == [
        r["name"]
        for r in analysis.hardest_images(result.study.trials[result.presets.default_tier.trial_number], "ssim:0.9", 2)
    ]
    for c in crops:
        x, y, w, h = c.box
        assert (w, h) == (64, 64) and 0 <= x <= 192 - 64 and 0 <= y <= 128 - 64
        assert c.original.shape == c.candidate.shape == (64, 64, 3)
        assert c.damage.shape == (64, 64) and c.damage.min() >= 0
        assert not np.array_equal(c.original, c.candidate)
        reference = load_image(corpus_dir / c.name).for_scoring()
        assert np.array_equal(c.original, reference[y : y + h, x : x + w])
    fig = plots.comparison_crops(result, corpus_dir, count=2, crop=64, damage_map="difference")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == 6 and [len(ax.images) for ax in panels] == [1] * 6
    assert "|difference|" in panels[2].get_title()
    # one colour bar per damage map, on the fixed scale of the mean absolute difference
    assert len(bars) == 2 and all(bar.get_ylim()[1] == pytest.approx(0.09) for bar in bars)
    assert all(
        c.damage_scale == 0.09
        for c in crops_module.hardest_crops(result, corpus_dir, count=2, crop=64, damage_map="difference")
    )


def test_crops_refuse_images_that_are_not_the_corpus(result: TuningResult, kodak_dir: Path) -> None:
    # same names, other pixels (the full-size originals)
    with pytest.raises(InvalidParameterError, match="fingerprint"):
        analysis.study_corpus(result, kodak_dir)
    with pytest.raises(InvalidParameterError, match="missing"):
        analysis.study_corpus(result, [kodak_dir / "kodim02.png"])


def test_study_corpus_picks_the_recorded_names(result: TuningResult, corpus_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_bytes((corpus_dir / name).read_bytes())
    load_image(corpus_dir / NAMES[0]).to_pil().crop((0, 0, 64, 64)).save(folder / "unrelated.png")
    corpus = analysis.study_corpus(result, folder)
    assert corpus.fingerprint == result.definition.corpus["fingerprint"]
    assert sorted(corpus.names) == sorted(NAMES)


def test_metric_maps_panels(corpus_dir: Path) -> None:
    reference = load_image(corpus_dir / NAMES[0])
    decoded = EncodingSettings("jpeg", {"quality": 20}).encode(reference).decoded
    fig = plots.metric_maps(reference, decoded)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles[:3] == ["reference", "distorted", "|difference|"]
    assert any(t.startswith("1 - SSIM") for t in titles) and any(t.startswith("ssimulacra2 map") for t in titles)
    assert "ssim 0." in fig.get_suptitle()


def test_empty_study_draws_a_message(corpus_dir: Path, tmp_path: Path) -> None:
    prepared = prepare_study(
        sorted(corpus_dir.glob("*.png")),
        TuneConfig(
            space={"formats": ["jpeg"]},
            target="ssim:0.9",
            profile="fast",
            storage=f"sqlite:///{tmp_path / 'empty.db'}",
            study_name="empty",
        ),
    )
    figures = {
        "no trials yet": plots.rate_quality(prepared.study),
        "no complete trials yet": plots.pareto_front(prepared.study),
        "0 complete trial(s)": plots.param_importances(prepared.study),
    }
    for message, fig in figures.items():
        assert any(message in t.get_text() for ax in fig.axes for t in ax.texts), message
    assert analysis.tradeoff_table(prepared.study).empty


def test_figures_leave_no_pyplot_state(result: TuningResult) -> None:
    before = pylab_helpers.Gcf.get_num_fig_managers()
    for _ in range(3):
        plots.rate_quality(result)
        plots.pareto_front(result)
    assert pylab_helpers.Gcf.get_num_fig_managers() == before


def test_crops_of_a_tier_the_study_does_not_hold_are_scored_afresh(
    result: TuningResult, corpus_dir: Path, tmp_path: Path
) -> None:
    """A preset file from elsewhere (no trial number): the hardest images are found by scoring them again."""
    import json

    data = json.loads(result.presets.to_json())
    for tier in data["tiers"]:
        tier["trial_number"] = None
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(data))
    recorded = crops_module.hardest_crops(result, corpus_dir, count=2, crop=48)
    rescored = crops_module.hardest_crops(result, corpus_dir, presets=path, count=2, crop=48)
    assert [c.name for c in rescored] == [c.name for c in recorded]
    for a, b in zip(recorded, rescored):
        assert b.quality == pytest.approx(a.quality, abs=1e-6)
        assert b.box == a.box and np.array_equal(a.candidate, b.candidate)


def test_hardest_images_of_a_distance_rank_the_largest_first() -> None:
    import optuna

    records = [
        {"name": n, "scores": {"lpips": v}, "composite": 0.5, "bits_per_pixel": 1.0, "bytes": 10}
        for n, v in (("a", 0.05), ("b", 0.30), ("c", 0.12))
    ]
    trial = optuna.trial.create_trial(value=1.0, user_attrs={"images": records})
    assert [r["name"] for r in analysis.hardest_images(trial, "lpips:0.1", count=2)] == ["b", "c"]
