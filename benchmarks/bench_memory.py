"""Peak memory per pixel of loading images and of scoring a pair with each metric (CPU).

The memory budget (``optimizer/imageio/limits.py``: ``DECODE_BYTES_PER_PIXEL``, ``SCORING_BYTES_PER_PIXEL``)
is set from these numbers. Each measurement runs in a fresh process: the peak resident set (``VmHWM``) is
reset through ``/proc/self/clear_refs`` after setup, the operation runs, and the growth of the peak over the
resident set before it is the operation's cost. Two image sizes are measured and the cost per pixel is the
slope between them, so fixed costs (libraries, network weights) drop out; the larger size's own ratio is
printed too. The learned metrics use randomly initialised backbones (the ImageNet weights cannot be
downloaded here): memory depends on the architecture, not on the weights.

Usage (Linux only)::

    PYTHONPATH=. python benchmarks/bench_memory.py [--sizes 1000000,4000000] [--learned-sizes 250000,1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("psnr", "ssim", "ms_ssim", "ssimulacra2", "lpips", "stlpips", "dists")
#: The profiles' metric sets (default, fast, perceptual, seed), measured together to check that the estimate
#: (the sum of the single-metric costs) stays above the real peak.
PROFILES = ("ssimulacra2+ms_ssim+ssim+psnr", "ssim+psnr", "lpips+ssimulacra2+ms_ssim", "lpips+ssim+dists+psnr")
LEARNED = {"lpips", "stlpips", "dists"}

_CHILD = r"""
import io, json, sys
import numpy as np
from PIL import Image as PILImage

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

kind, name, pixels, kodak = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
side = int(round((pixels * 1.5) ** 0.5))
w, h = side, int(round(pixels / side))
tile = np.asarray(PILImage.open(kodak).convert("RGB"))
reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
arr = np.ascontiguousarray(np.tile(tile, reps)[:h, :w])
from optimizer.imageio import load_image

if kind == "decode":
    buf = io.BytesIO()
    if name == "png":
        PILImage.fromarray(arr).save(buf, "PNG", compress_level=1)
    elif name == "png-rgba":
        PILImage.fromarray(np.dstack([arr, arr[..., :1]])).save(buf, "PNG", compress_level=1)
    elif name == "png-16bit":
        import imagecodecs
        buf.write(imagecodecs.png_encode(arr.astype(np.uint16) * 257, level=1))
    elif name == "jpeg":
        PILImage.fromarray(arr).save(buf, "JPEG", quality=90)
    elif name == "webp":
        PILImage.fromarray(arr).save(buf, "WEBP", quality=80, method=0)
    data = buf.getvalue()
    del buf
    before = status("VmRSS")
    reset_peak()
    image = load_image(data, max_memory=0)
    peak = status("VmHWM")
    print(json.dumps({"pixels": w * h, "peak": peak - before - len(data) * 0, "file": len(data)}))
else:
    import torch
    torch.set_num_threads(2)
    from optimizer.evaluator import Evaluator
    names = name.split("+")
    options = {}
    for learned in ("lpips", "dists"):
        if learned in names:
            import torchvision
            torch.manual_seed(0)
            net = torchvision.models.vgg16(weights=None) if learned == "dists" else torchvision.models.alexnet(weights=None)
            options[learned] = {"backbone_weights": net.state_dict()}
            del net
    evaluator = Evaluator(metrics=names, metric_options=options).load()
    ref = load_image(arr, max_memory=0)
    noisy = np.clip(arr.astype(np.int16) + np.random.default_rng(0).integers(-8, 9, arr.shape), 0, 255)
    dist = load_image(noisy.astype(np.uint8), max_memory=0)
    del noisy
    before = status("VmRSS")
    reset_peak()
    scorer = evaluator.for_reference(ref, max_memory=0)
    prepared, retained = status("VmHWM"), status("VmRSS")
    reset_peak()
    scorer.score(dist)
    scored = status("VmHWM")
    peak = max(prepared, scored)
    print(json.dumps({"pixels": w * h, "peak": peak - before, "retained": retained - before,
                      "transient": max(prepared, scored) - retained}))
"""


def _measure(kind: str, name: str, pixels: int, kodak: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, name, str(pixels), str(kodak)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
        timeout=1800,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} {name} at {pixels:,} px failed:\n{done.stderr[-3000:]}")
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,4000000", help="two pixel counts for decoding and classic metrics")
    parser.add_argument("--learned-sizes", default="250000,1000000", help="two pixel counts for LPIPS/DISTS/ST-LPIPS")
    parser.add_argument("--kodak", default=str(ROOT.parent / "shared" / "datasets" / "kodak" / "kodim23.png"))
    parser.add_argument("--only", default="", help="comma-separated subset (decode:png, score:ssim, ...)")
    args = parser.parse_args()
    kodak = Path(args.kodak)
    jobs = [("decode", n) for n in ("png", "png-rgba", "png-16bit", "jpeg", "webp")] + [
        ("score", m) for m in METRICS + PROFILES
    ]
    if args.only:
        wanted = set(args.only.split(","))
        jobs = [j for j in jobs if f"{j[0]}:{j[1]}" in wanted]
    print(
        f"{'operation':36} {'small px':>10} {'large px':>11} {'slope B/px':>11} {'large B/px':>11} {'retained':>9} {'transient':>9}"
    )
    for kind, name in jobs:
        sizes = args.learned_sizes if LEARNED & set(name.split("+")) else args.sizes
        small, large = (int(s) for s in sizes.split(","))
        a, b = _measure(kind, name, small, kodak), _measure(kind, name, large, kodak)
        slope = (b["peak"] - a["peak"]) / (b["pixels"] - a["pixels"])
        ratio = b["peak"] / b["pixels"]
        parts = ""
        if "retained" in a:
            span = b["pixels"] - a["pixels"]
            retained = (b["retained"] - a["retained"]) / span
            transient = (b["transient"] - a["transient"]) / span
            parts = f" {math.ceil(retained):>9} {math.ceil(transient):>9}"
        print(
            f"{kind + ' ' + name:36} {a['pixels']:>10,} {b['pixels']:>11,} {math.ceil(slope):>11} "
            f"{math.ceil(ratio):>11}{parts}",
            flush=True,
        )


if __name__ == "__main__":
    main()
