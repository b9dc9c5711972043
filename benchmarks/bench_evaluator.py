"""Evaluator speed against the naive way of computing the same metrics, in one run.

    python benchmarks/bench_evaluator.py [--images 6] [--rounds 5] [--threads 1] [--write]

* ``default`` profile (SSIMULACRA 2, MS-SSIM, SSIM, PSNR) with a cached reference, per pair, against a naive
  baseline: skimage SSIM on float64, MS-SSIM as repeated skimage SSIM over a 2x pyramid, numpy PSNR, and the
  ``ssimulacra2`` package from PyPI (which reads the two PNG files itself).
* LPIPS (AlexNet) with cached reference features against a plain ``lpips.LPIPS`` call. Both use the same
  random backbone weights: pretrained weights are not needed to time the plumbing.

Pairs are Kodak images against their JPEG q50 encodings (768x512). Timings alternate between the two sides
and report medians; the ratio is what matters, the machines are shared and noisy. ``--write`` appends the
markdown section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.evaluator import Evaluator  # noqa: E402
from optimizer.imageio import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", ROOT.parent / "shared" / "datasets"))
MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def naive_metrics(ref: np.ndarray, dist: np.ndarray, ref_png: str, dist_png: str) -> dict[str, float]:
    """The same four metrics the way most code computes them."""
    from skimage.metrics import structural_similarity
    from skimage.transform import rescale
    from ssimulacra2 import compute_ssimulacra2

    a, b = ref.astype(np.float64), dist.astype(np.float64)
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
    ssim = structural_similarity(a, b, **kwargs)
    ms = 1.0
    x, y = a, b
    for weight in MS_WEIGHTS:
        ms *= max(structural_similarity(x, y, **kwargs), 0.0) ** weight
        x = rescale(x, 0.5, channel_axis=2, anti_aliasing=False)
        y = rescale(y, 0.5, channel_axis=2, anti_aliasing=False)
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * np.log10(1.0 / mse) if mse else float("inf")
    s2 = compute_ssimulacra2(ref_png, dist_png)
    return {"ssim": ssim, "ms_ssim": ms, "psnr": psnr, "ssimulacra2": s2}


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def bench_default(paths: list[Path], rounds: int, workdir: Path) -> dict[str, float]:
    from optimizer.codecs import get_codec

    evaluator = Evaluator("default").load()
    jpeg = get_codec("jpeg")
    pairs = []
    for path in paths:
        ref = load_image(path)
        dist = jpeg.decode(jpeg.encode(ref, {"quality": 50}))
        dist_png = workdir / f"{path.stem}_q50.png"
        dist.to_pil().save(dist_png)
        pairs.append((path, ref, dist, str(dist_png)))
    scorers = [evaluator.for_reference(ref) for _, ref, _, _ in pairs]
    ours, uncached, naive = [], [], []
    max_ssim_diff = 0.0
    s2_gap = []
    for _ in range(rounds):
        for (path, ref, dist, dist_png), scorer in zip(pairs, scorers):
            t0 = time.perf_counter()
            result = scorer.score(dist)
            t1 = time.perf_counter()
            baseline = naive_metrics(ref.rgb, dist.rgb, str(path), dist_png)
            t2 = time.perf_counter()
            evaluator.evaluate(ref, dist)
            t3 = time.perf_counter()
            ours.append(t1 - t0)
            naive.append(t2 - t1)
            uncached.append(t3 - t2)
            max_ssim_diff = max(max_ssim_diff, abs(result.scores["ssim"] - baseline["ssim"]))
            s2_gap.append(result.scores["ssimulacra2"] - baseline["ssimulacra2"])
    return {
        "ours_ms": median_ms(ours),
        "uncached_ms": median_ms(uncached),
        "naive_ms": median_ms(naive),
        "ratio": statistics.median(naive) / statistics.median(ours),
        "ratio_uncached": statistics.median(naive) / statistics.median(uncached),
        "max_ssim_diff": max_ssim_diff,
        "s2_gap_mean": float(np.mean(s2_gap)),
    }


def bench_ssimulacra2_agreement() -> dict[str, float]:
    import csv

    from optimizer.metrics import create_metric

    folder = DATASETS / "ssimulacra2-reference"
    metric = create_metric("ssimulacra2")
    errors = []
    with open(folder / "scores.csv") as handle:
        for row in csv.DictReader(handle):
            ref = load_image(DATASETS / "kodak" / Path(row["reference"]).name).to_tensor()
            dist = load_image(folder / row["distorted"]).to_tensor()
            errors.append(abs(metric(ref, dist) - float(row["ssimulacra2"])))
    return {"pairs": len(errors), "mean": float(np.mean(errors)), "max": float(np.max(errors))}


def bench_lpips(paths: list[Path], rounds: int) -> dict[str, float]:
    import lpips
    import torch
    import torchvision

    from optimizer.metrics.learned import LPIPS

    torch.manual_seed(0)
    weights = torchvision.models.alexnet().state_dict()
    ours = LPIPS(net="alex", backbone_weights=weights)
    plain = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    plain.net.load_state_dict({k: v for k, v in _lpips_backbone_state(weights).items()}, strict=True)
    from optimizer.codecs import get_codec

    jpeg = get_codec("jpeg")
    cached_t, plain_t, diffs = [], [], []
    for path in paths:
        ref = load_image(path)
        dist = jpeg.decode(jpeg.encode(ref, {"quality": 50}))
        rt, dt = ref.to_tensor(), dist.to_tensor()
        shared: dict = {}
        with torch.inference_mode():
            state = ours.prepare(rt, shared)
            for _ in range(rounds):
                t0 = time.perf_counter()
                a = ours.compute(state, dt, {})
                t1 = time.perf_counter()
                b = float(plain(rt * 2 - 1, dt * 2 - 1))
                t2 = time.perf_counter()
                cached_t.append(t1 - t0)
                plain_t.append(t2 - t1)
                diffs.append(abs(a - b))
    return {
        "cached_ms": median_ms(cached_t),
        "plain_ms": median_ms(plain_t),
        "ratio": statistics.median(plain_t) / statistics.median(cached_t),
        "max_diff": max(diffs),
    }


def _lpips_backbone_state(alexnet_state: dict) -> dict:
    """lpips' alexnet wrapper splits torchvision's ``features`` into slices 1..5 with the same layer indices."""
    import lpips.pretrained_networks as pn

    wrapper = pn.alexnet(requires_grad=False, pretrained=False)
    mapping = {}
    for name in wrapper.state_dict():
        # slice{k}.{index}.{param} -> features.{index}.{param}
        _, index, param = name.split(".")
        mapping[name] = alexnet_state[f"features.{index}.{param}"]
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (skimage and numpy are single-threaded)")
    parser.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    paths = sorted((DATASETS / "kodak").glob("kodim*.png"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        default = bench_default(paths, args.rounds, Path(tmp))
    agreement = bench_ssimulacra2_agreement()
    lp = bench_lpips(paths[:3], args.rounds)
    command = (
        f"python benchmarks/bench_evaluator.py --images {args.images} --rounds {args.rounds} --threads {args.threads}"
    )
    out = io.StringIO()
    out.write("## Evaluator speed (`bench_evaluator.py`)\n\n")
    out.write(
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, torch threads {args.threads}; "
        f"{len(paths)} Kodak 768x512 images vs JPEG q50, {args.rounds} rounds, medians per pair).\n\n"
    )
    out.write("| what | ours | baseline | speed-up |\n|---|---|---|---|\n")
    out.write(
        f"| `default` profile, cached reference vs naive (skimage SSIM float64, pyramid of skimage SSIMs, numpy PSNR, PyPI ssimulacra2) "
        f"| {default['ours_ms']:.1f} ms | {default['naive_ms']:.1f} ms | **{default['ratio']:.1f}x** |\n"
    )
    out.write(
        f"| `default` profile, uncached vs naive | {default['uncached_ms']:.1f} ms | {default['naive_ms']:.1f} ms "
        f"| {default['ratio_uncached']:.1f}x |\n"
    )
    out.write(
        f"| LPIPS alex, cached reference features vs plain `lpips.LPIPS` call (same random backbone) "
        f"| {lp['cached_ms']:.1f} ms | {lp['plain_ms']:.1f} ms | **{lp['ratio']:.2f}x** |\n\n"
    )
    out.write(
        f"Agreement: SSIM vs skimage max |d| {default['max_ssim_diff']:.1e}; LPIPS vs `lpips` max |d| {lp['max_diff']:.1e}; "
        f"SSIMULACRA 2 vs the C++ tool on {agreement['pairs']} reference pairs: mean |d| {agreement['mean']:.3f}, "
        f"max {agreement['max']:.3f} (the PyPI package reads {default['s2_gap_mean']:.2f} points lower than ours on these pairs). "
        "Targets: default profile >= 6x, cached LPIPS >= 1.8x.\n"
    )
    text = out.getvalue()
    print(text)
    if args.write:
        results = ROOT / "benchmarks" / "RESULTS.md"
        with open(results, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
