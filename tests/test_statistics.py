"""One meaning per statistic: the gate, batch summaries, tuning aggregates and JSON round trips agree."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from optimizer.batch import BatchReport, PairResult
from optimizer.errors import InvalidParameterError
from optimizer.evaluator import EvaluationResult, Evaluator
from optimizer.gate import Budget, check_budget
from optimizer.jsonio import dumps, json_safe, number_from_json
from optimizer.statistics import AGGREGATES, STATISTICS, percentile, statistic
from optimizer.tuning.target import Target

LPIPS = [0.02, 0.05, 0.08, 0.12, 0.30]  # a distance: lower is better
SSIM = [0.98, 0.95, 0.91, 0.88, 0.70]  # a score: higher is better


def test_quantiles_follow_the_direction() -> None:
    # The worst 10 % of a distance is its 90th percentile, of a score its 10th.
    assert statistic(LPIPS, "p10", higher_is_better=False) == pytest.approx(np.percentile(LPIPS, 90))
    assert statistic(LPIPS, "p10", higher_is_better=False) == pytest.approx(0.228)
    assert statistic(SSIM, "p10", higher_is_better=True) == pytest.approx(np.percentile(SSIM, 10))
    assert statistic(LPIPS, "p90", higher_is_better=False) == pytest.approx(np.percentile(LPIPS, 10))
    assert statistic(SSIM, "p90", higher_is_better=True) == pytest.approx(np.percentile(SSIM, 90))
    for higher in (True, False):
        assert statistic(LPIPS, "median", higher_is_better=higher) == 0.08
        assert statistic(LPIPS, "min", higher_is_better=higher) == 0.02  # min and max stay numeric
        assert statistic(LPIPS, "max", higher_is_better=higher) == 0.30
    assert statistic(LPIPS, "worst", higher_is_better=False) == 0.30
    assert statistic(SSIM, "worst", higher_is_better=True) == 0.70


def _pairs(metric: str, values: list[float]) -> list[PairResult]:
    evaluator = Evaluator(metrics=[metric])
    pairs = []
    for i, value in enumerate(values):
        result = evaluator.result_from_scores({metric: value}, width=8, height=8)
        pairs.append(PairResult(f"img{i}", f"ref/img{i}.png", f"out/img{i}.png", result, 1000, 500))
    return pairs


@pytest.mark.parametrize(("metric", "values"), [("lpips", LPIPS), ("ssim", SSIM), ("psnr", [30.0, 35.0, math.inf])])
def test_gate_batch_and_tuning_agree_on_every_statistic(metric: str, values: list[float]) -> None:
    pairs = _pairs(metric, values)
    higher = Target(metric, 0.5 if metric != "psnr" else 30.0).higher_is_better
    summary = BatchReport(pairs=pairs, issues=[], evaluator=Evaluator(metrics=[metric]).describe()).summary()
    for stat in STATISTICS:
        expected = statistic(values, stat, higher_is_better=higher)
        gate_value = check_budget(Budget(metric=metric, stat=stat, max=1e9), pairs).value
        assert gate_value == pytest.approx(expected), stat
        if stat in summary["metrics"][metric]:
            assert summary["metrics"][metric][stat] == pytest.approx(expected), stat
        if stat in AGGREGATES:
            assert Target(metric, 0.5).aggregate(values, stat) == pytest.approx(expected), stat


def test_the_gate_checks_the_hard_images_of_a_distance() -> None:
    """``lpips p10 max=0.2`` must fail when the worst tenth of the images is above 0.2."""
    result = check_budget(Budget(metric="lpips", stat="p10", max=0.2), _pairs("lpips", LPIPS))
    assert not result.passed and result.value == pytest.approx(0.228)
    assert [key for key, _ in result.failing] == ["img4"]


def test_infinities_nan_and_empty() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy would warn (and read NaN) between two infinities
        assert statistic([math.inf] * 3, "p10") == math.inf
        assert statistic([30.0, math.inf, math.inf], "p90") == math.inf
        assert statistic([30.0, math.inf], "p10") == math.inf
        assert statistic([30.0, 40.0, math.inf], "median") == 40.0
        hard = [12.0, 10.0, 15.0] + [math.inf] * 8  # 11 images: p10 lies on the second worst
        assert statistic(hard, "p10") == 12.0 and statistic(hard, "worst") == 10.0
    # The mean averages the finite values; it is infinite only when every value is.
    assert statistic([30.0, 35.0, math.inf], "mean") == 32.5
    assert statistic([math.inf, math.inf], "mean") == math.inf
    assert math.isnan(statistic([math.inf, -math.inf], "mean"))
    for stat in STATISTICS:
        assert math.isnan(statistic([], stat))
        assert math.isnan(statistic([1.0, math.nan], stat))
    values = np.random.default_rng(0).random(17)
    for q in (0, 10, 33.3, 50, 90, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q), abs=1e-15)
    with pytest.raises(InvalidParameterError, match="statistic must be one of"):
        statistic([1.0], "p50")


def test_non_finite_json_round_trips() -> None:
    data = {"psnr": math.inf, "low": -math.inf, "bad": math.nan, "list": [1.5, math.inf], "n": 3}
    text = dumps(data)
    assert json.loads(text) == {"psnr": "inf", "low": "-inf", "bad": "nan", "list": [1.5, "inf"], "n": 3}
    back = json.loads(text)
    assert number_from_json(back["psnr"]) == math.inf and number_from_json(back["low"]) == -math.inf
    assert math.isnan(number_from_json(back["bad"])) and number_from_json(back["list"][0]) == 1.5
    assert number_from_json(1e308) == math.inf  # the stand-in earlier releases stored in studies
    for bad in ("Infinity", None, True, [1]):
        with pytest.raises((TypeError, ValueError)):
            number_from_json(bad)
    result = Evaluator(metrics=["psnr"]).result_from_scores({"psnr": math.inf}, width=4, height=4)
    assert EvaluationResult.from_dict(json.loads(result.to_json())) == result
    assert json_safe((math.inf,)) == ["inf"]
