"""The streamed metrics against scores recorded from the whole-plane implementation (see ``metric_pairs.py``).

Streaming in stripes, filtering with matrix products and decoding sRGB without ``pow`` change only float32
rounding: SSIMULACRA 2 must stay within 0.05 points and MS-SSIM within 1e-4 of the recorded scores, on the 28
reference pairs and on mosaics of them (several stripes per scale, scales of odd sizes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from metric_pairs import METRICS, mosaic, pair, reference_rows, score

RECORDED = json.loads((Path(__file__).parent / "data" / "metric_baseline.json").read_text())["scores"]
#: Largest allowed difference from the recorded score, per metric.
TOLERANCE = {"ssimulacra2": 0.05, "ms_ssim": 1e-4, "ssim": 1e-5, "psnr": 1e-4}


def _check(name: str, ours: dict[str, float]) -> dict[str, float]:
    diffs = {m: abs(ours[m] - RECORDED[name][m]) for m in METRICS}
    assert all(diffs[m] <= TOLERANCE[m] for m in METRICS), (name, diffs)
    return diffs


def test_reference_pairs_match_recorded_scores(ssimulacra2_reference_dir: Path) -> None:
    datasets = ssimulacra2_reference_dir.parent
    worst = {m: 0.0 for m in METRICS}
    for row in reference_rows(datasets):
        diffs = _check(f"pair:{row['distorted']}", score(*pair(row, datasets)))
        worst = {m: max(worst[m], diffs[m]) for m in METRICS}
    print(f"\nlargest differences from the recorded scores on 28 pairs: {worst}")
    assert worst["ssimulacra2"] < 0.01  # in practice a few 1e-3: rounding only


def test_mosaic_matches_recorded_scores(ssimulacra2_reference_dir: Path) -> None:
    ref, dist = mosaic("mosaic4x2", ssimulacra2_reference_dir.parent)
    assert ref.shape == (1024, 3072, 3)
    _check("mosaic4x2", score(ref, dist))


@pytest.mark.slow
def test_large_mosaic_matches_recorded_scores(ssimulacra2_reference_dir: Path) -> None:
    ref, dist = mosaic("mosaic7x4", ssimulacra2_reference_dir.parent)
    assert ref.shape == (2048, 5376, 3) and not np.array_equal(ref, dist)
    _check("mosaic7x4", score(ref, dist))
