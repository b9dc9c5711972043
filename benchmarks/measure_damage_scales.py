"""Measure the fixed heat-map scales (``MetricSpec.damage_scale`` and the ``|difference|`` scale).

A heat map drawn at a fixed scale per metric lets maps compare: a JPEG q95 map must look cooler than a
q10 map of the same image. This script encodes Kodak images with JPEG over its quality range and records,
per metric with a spatial map (and for the mean absolute RGB difference), the 99th percentile of each
damage map. The scale chosen is the median over images of that percentile at JPEG q30, a heavily
compressed web image: it fills the colour range, worse encodes saturate, and the qualities sites ship
(q50-q90) sit visibly lower on it. (At q10 the SSIMULACRA 2 map reaches 60 while q75 stays under 3: a
q10 scale would draw every usable encode black.)

Run: ``python benchmarks/measure_damage_scales.py [--images 8] [--write]`` (``--write`` appends the table to
``benchmarks/RESULTS.md``). Metrics needing pretrained weights are measured when the weights are present.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from optimizer.evaluator import Evaluator  # noqa: E402
from optimizer.imageio import load_image  # noqa: E402
from optimizer.metrics.registry import get_spec, specs  # noqa: E402
from optimizer.metrics.weights import weights_status  # noqa: E402

QUALITIES = (10, 30, 50, 75, 95)
SCALE_QUALITY = 30
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", ROOT.parent / "shared" / "datasets"))


def _metrics() -> list[str]:
    missing = {name for status in weights_status() if not status.present for name in status.needed_by}
    return [s.name for s in specs() if s.has_map and s.name not in missing]


def measure(images: int) -> tuple[dict[str, dict[int, list[float]]], list[str]]:
    paths = sorted((DATASETS / "kodak").glob("kodim*.png"))[:images]
    metrics = _metrics()
    evaluator = Evaluator(metrics=metrics)
    evaluator.load()
    out: dict[str, dict[int, list[float]]] = {name: {q: [] for q in QUALITIES} for name in [*metrics, "difference"]}
    for path in paths:
        reference = load_image(path)
        scorer = evaluator.for_reference(reference)
        for quality in QUALITIES:
            buf = io.BytesIO()
            reference.to_pil().save(buf, format="JPEG", quality=quality)
            decoded = load_image(buf.getvalue())
            for name, arr in scorer.maps(decoded).items():
                out[name][quality].append(float(np.percentile(get_spec(name).damage(arr), 99.0)))
            difference = np.abs(reference.rgb - decoded.rgb).mean(axis=2)
            out["difference"][quality].append(float(np.percentile(difference, 99.0)))
    return out, metrics


def table(results: dict[str, dict[int, list[float]]]) -> str:
    header = (
        "| map | " + " | ".join(f"p99 at JPEG q{q}" for q in QUALITIES) + f" | scale (median p99 at q{SCALE_QUALITY}) |"
    )
    lines = [header, "|" + "---|" * (len(QUALITIES) + 2)]
    for name, per_quality in results.items():
        medians = [statistics.median(per_quality[q]) for q in QUALITIES]
        scale = medians[QUALITIES.index(SCALE_QUALITY)]
        lines.append(f"| {name} | " + " | ".join(f"{m:.4g}" for m in medians) + f" | {scale:.3g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="append the results to benchmarks/RESULTS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    results, metrics = measure(args.images)
    text = table(results)
    print(text)
    if args.write:
        section = (
            "\n## Heat-map scales (`measure_damage_scales.py`)\n\n"
            f"Command: `python benchmarks/measure_damage_scales.py --images {args.images} --write` ({date.today()}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs; {time.perf_counter() - started:.0f} s). Median over "
            f"{args.images} Kodak images of each damage map's 99th percentile, JPEG 4:2:0 at each quality "
            f"(metrics with maps whose weights are present: {', '.join(metrics)}).\n\n"
            + text
            + f"\n\nThe scale drawn brightest is the q{SCALE_QUALITY} column, rounded: `MetricSpec.damage_scale` in "
            "`optimizer/metrics/registry.py`, and `DIFFERENCE_SCALE` in `optimizer/heatmaps.py`.\n"
        )
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as handle:
            handle.write(section)


if __name__ == "__main__":
    main()
