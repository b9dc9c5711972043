"""Peak memory of scoring, per pixel: the figures the service admits requests by (``optimizer/service/admission.py``).

Each measurement runs in a fresh process: load the evaluator (learned backbones get random weights of the
same shapes, which cost the same memory as the published ones and need no download), score a small pair
to warm up, trim the heap, note the resident size, then decode and score one pair of random-noise PNGs of
``side x side`` (or compress one image with two probes per format) and read the process's peak resident
size. ``(peak - before) / pixels`` is the figure; it includes decoding both images, their tensors and every
metric's planes. Prints a markdown section for ``benchmarks/RESULTS.md`` with the tables' values beside.

Usage: ``python benchmarks/bench_service_memory.py [--sides 1000,2000]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import ctypes, gc, io, json, resource, sys
import numpy as np
from PIL import Image
import psutil
from optimizer.evaluator import Evaluator, get_profile
from optimizer.imageio import load_image

kind, name, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
names = list(get_profile(name).weights) if kind != "metric" else [name]
options = {}
if "lpips" in names or "dists" in names:
    import torchvision
    if "lpips" in names:
        options["lpips"] = {"backbone_weights": torchvision.models.alexnet().state_dict()}
    if "dists" in names:
        options["dists"] = {"backbone_weights": torchvision.models.vgg16().state_dict()}
evaluator = (Evaluator(metrics=[name], metric_options=options) if kind == "metric"
             else Evaluator(name, metric_options=options)).load()
rng = np.random.default_rng(0)

def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()

small = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
evaluator.evaluate(load_image(small), load_image(small // 2 * 2))
pixels = (rng.random((side, side, 3)) * 255).astype(np.uint8)
original, processed = png(pixels), png(pixels // 8 * 8)
del pixels
if kind == "compress":
    from optimizer.tuning.adaptive import compress
    compress(load_image(small), target="ssim:0.9", formats=["jpeg"], evaluator=evaluator, max_probes=2,
             keep_original_if_smaller=False)
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
before = psutil.Process().memory_info().rss
if kind == "compress":
    compress(load_image(original), target="ssim:0.9", formats=["avif", "webp", "jpeg"], evaluator=evaluator,
             max_probes=2, keep_original_if_smaller=False)
else:
    evaluator.for_reference(load_image(original, max_pixels=10**9)).score(load_image(processed, max_pixels=10**9))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"per_pixel": (peak - before) / (side * side), "peak_mb": peak / 2**20, "before_mb": before / 2**20}))
"""


def _measure(kind: str, name: str, side: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPTIMIZER_ALLOW_DOWNLOAD": "0", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, name, str(side)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["per_pixel"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="1000,2000", help="square sides to measure at")
    args = parser.parse_args()
    sides = [int(s) for s in args.sides.split(",")]

    from optimizer.evaluator import get_profile
    from optimizer.service.admission import (
        COMPRESS_BYTES_PER_PIXEL,
        METRIC_BYTES_PER_PIXEL,
        PAIR_BYTES_PER_PIXEL,
        work_bytes,
    )

    rows = []
    for kind, names, table in (
        ("profile", ["fast", "default", "perceptual", "seed"], PAIR_BYTES_PER_PIXEL),
        ("compress", ["fast", "default"], COMPRESS_BYTES_PER_PIXEL),
        ("metric", list(METRIC_BYTES_PER_PIXEL), METRIC_BYTES_PER_PIXEL),
    ):
        for name in names:
            measured = [_measure(kind, name, side) for side in sides]
            rows.append((kind, name, measured, table.get(name)))
    print("## Web service: peak memory of scoring, per pixel (`benchmarks/bench_service_memory.py`)\n")
    print(f"Command: `python benchmarks/bench_service_memory.py --sides {args.sides}`\n")
    print(
        "Peak resident size over the size before the pair, per pixel of one image, in a fresh process per cell "
        "(decoding both PNGs, tensors, every metric's planes; learned backbones with random weights of the "
        "published shapes). `profile` scores a pair, `compress` searches avif, webp and jpeg with 2 probes "
        "each, `metric` scores with that metric alone. The last column is the figure `admission.py` uses.\n"
    )
    header = " | ".join(f"{side}x{side}" for side in sides)
    print(f"| what | name | {header} | table |")
    print("|---|---|" + "---:|" * len(sides) + "---:|")
    for kind, name, measured, table in rows:
        cells = " | ".join(f"{value:.0f}" for value in measured)
        print(f"| {kind} | {name} | {cells} | {table if table is not None else ''} |")
    for name in ("perceptual", "seed"):
        summed = work_bytes(get_profile(name).__class__(f"{name}-unmeasured", get_profile(name).weights), 1)
        print(f"\n- `{name}` estimated from its metrics alone (the rule for unmeasured profiles): {summed} B/px.")


if __name__ == "__main__":
    main()
