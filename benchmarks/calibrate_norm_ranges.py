"""Fit each metric's composite norm range so that its normalised value reads like SSIMULACRA 2 / 100.

The composite averages normalised metrics, and the quality levels (excellent >= 0.9, very good >= 0.8, ...)
only mean the same thing across profiles if every metric's normalised value sits on one scale. SSIMULACRA 2
has a published reading (90 visually lossless, 80 high, 70 medium, 50 low), so it is the anchor: for each
other metric we fit ``ssimulacra2 / 100 ~ (value - lo) / (hi - lo)`` by least squares on Kodak images
encoded with JPEG, WebP and AVIF over their quality ranges, keeping pairs with SSIMULACRA 2 in [30, 95].

    python benchmarks/calibrate_norm_ranges.py [--images 8] [--metrics psnr,ssim,ms_ssim]

Prints the fitted ranges, the ones in the registry, and how well each tracks the anchor (RMSE, Spearman).
Learned metrics (lpips, dists) need pretrained weights; they are included when the weights are present.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.codecs import get_codec  # noqa: E402
from optimizer.evaluator import Evaluator  # noqa: E402
from optimizer.imageio import load_image  # noqa: E402
from optimizer.metrics.registry import get_spec  # noqa: E402

KODAK = (
    Path(os.environ.get("OPTIMIZER_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets")) / "kodak"
)
SETTINGS = (
    [("jpeg", {"quality": q}) for q in (10, 20, 30, 45, 60, 75, 85, 92, 97)]
    + [("webp", {"quality": q}) for q in (10, 30, 50, 70, 85, 95)]
    + [("avif", {"quality": q, "speed": 8}) for q in (15, 35, 55, 75, 90)]
)


def _normalise(x: np.ndarray, norm_range: tuple[float, float], higher_is_better: bool) -> np.ndarray:
    lo, hi = norm_range
    z = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return z if higher_is_better else 1.0 - z


def _fit(x: np.ndarray, y: np.ndarray, spec) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Least-squares norm range; a metric with a finite best value keeps it as the best end, so identical
    images still normalise to exactly 1."""
    from scipy.optimize import minimize, minimize_scalar

    def loss(r: tuple[float, float]) -> float:
        if r[0] == r[1]:
            return 1e9
        return float(np.mean((_normalise(x, r, spec.higher_is_better) - y) ** 2))

    best = spec.best_value
    if np.isfinite(best):
        if spec.higher_is_better:
            res = minimize_scalar(
                lambda lo: loss((lo, best)), bounds=(float(x.min()) - 1.0, best - 1e-6), method="bounded"
            )
            return float(res.x), best
        res = minimize_scalar(
            lambda hi: loss((best, hi)), bounds=(best + 1e-6, float(x.max()) * 3 + 1e-3), method="bounded"
        )
        return best, float(res.x)
    slope, intercept = np.polyfit(x, y, 1)
    start = (-intercept / slope, (1.0 - intercept) / slope)
    res = minimize(lambda r: loss((r[0], r[1])), start, method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="Kodak images to use (every third from kodim01)")
    parser.add_argument("--metrics", default="psnr,ssim,ms_ssim", help="metrics to calibrate against ssimulacra2")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    evaluator = Evaluator(metrics=["ssimulacra2", *metrics])
    paths = sorted(KODAK.glob("kodim*.png"))[:: max(1, 24 // args.images)][: args.images]
    rows: list[dict[str, float]] = []
    for path in paths:
        scorer = evaluator.for_reference(load_image(path))
        for codec_name, params in SETTINGS:
            codec = get_codec(codec_name)
            decoded = codec.decode(codec.encode(scorer.reference, params))
            rows.append(scorer.score(decoded).scores)
    anchor = np.array([r["ssimulacra2"] for r in rows]) / 100.0
    keep = (anchor >= 0.30) & (anchor <= 0.95)
    print(f"{len(rows)} pairs from {len(paths)} Kodak images, {int(keep.sum())} with SSIMULACRA 2 in [30, 95]\n")
    print("| metric | fitted norm_range | registry norm_range | RMSE fitted | RMSE registry | Spearman |")
    print("|---|---|---|---|---|---|")
    from scipy.stats import spearmanr

    for name in metrics:
        spec = get_spec(name)
        values = np.array([r[name] for r in rows])
        x, y = values[keep], anchor[keep]
        finite = np.isfinite(x)
        x, y = x[finite], y[finite]
        fitted = _fit(x, y, spec)
        rmse_fit = float(np.sqrt(np.mean((_normalise(x, fitted, spec.higher_is_better) - y) ** 2)))
        registry = np.array([spec.normalise(v) for v in x])
        rmse_reg = float(np.sqrt(np.mean((registry - y) ** 2)))
        rho = spearmanr(x, y).statistic * (1 if spec.higher_is_better else -1)
        print(
            f"| {name} | ({fitted[0]:.4g}, {fitted[1]:.4g}) | {spec.norm_range} | {rmse_fit:.3f} | {rmse_reg:.3f} "
            f"| {rho:.3f} |"
        )


if __name__ == "__main__":
    main()
