"""Full-reference metrics at photo scale: time per megapixel and peak memory, new against a baseline revision.

    python benchmarks/bench_metrics_scale.py [--sizes small,3mp,15mp] [--metrics ssimulacra2,default]
        [--rounds 3] [--repeats 2] [--threads 2] [--baseline-rev 6a9a60d] [--idle-wait 600] [--write]

For each image size and each metric set (SSIMULACRA 2 alone, the ``default`` profile), a fresh Python process
builds the pair, prepares the reference (``Evaluator.for_reference``) and scores the distorted image
``--rounds`` times after one warm-up score. It reports the median milliseconds per megapixel of ``score`` and
the growth of peak RSS (VmHWM, reset just before ``for_reference``) over the RSS at that point, per megapixel
of the pair: the bytes per pixel the scorer needs, including the two float32 tensors the evaluator makes of
the decoded images (24 bytes per pixel of the pair). The same configurations run with the package as it was at
``--baseline-rev`` (extracted with ``git archive`` into a temporary directory), alternating baseline and new
``--repeats`` times; both sides' scores are printed, so the table also shows how far the new scores moved.

Images: ``small`` is Kodak 768x512 (kodim05, kodim13, kodim23, one process each); ``3mp`` is a 3x3 mosaic of
distinct Kodak images at 2304x1536; ``15mp`` is a 7x6 mosaic of the 24 Kodak images (portrait ones rotated,
the second appearance of an image mirrored) cropped to 5120x2880. Mosaics are not photographs, but they carry
real photographic content at every scale, unlike an upscaled image. Distorted images are JPEG quality 90
(Pillow, 4:2:0).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", ROOT.parent / "shared" / "datasets"))
KODAK = DATASETS / "kodak"
SIZES = ("small", "3mp", "15mp")
#: ``default`` is the profile (SSIMULACRA 2, MS-SSIM, SSIM, PSNR); any other name is that metric alone.
DEFAULT_METRIC_SETS = ("ssimulacra2", "default")
SMALL_IMAGES = ("kodim05.png", "kodim13.png", "kodim23.png")


# ----------------------------------------------------------------------------------------------- images


def _kodak(name: str) -> np.ndarray:
    from PIL import Image

    arr = np.asarray(Image.open(KODAK / name).convert("RGB"))
    return np.ascontiguousarray(np.rot90(arr)) if arr.shape[0] > arr.shape[1] else arr


def mosaic(cols: int, rows: int, width: int, height: int) -> np.ndarray:
    """``cols x rows`` Kodak tiles (768x512), cycling through the 24 images, cropped to ``width x height``."""
    names = sorted(p.name for p in KODAK.glob("kodim*.png"))
    out = np.zeros((rows * 512, cols * 768, 3), dtype=np.uint8)
    for i in range(rows * cols):
        tile = _kodak(names[i % len(names)])
        if (i // len(names)) % 2:
            tile = tile[:, ::-1]
        r, c = divmod(i, cols)
        out[r * 512 : (r + 1) * 512, c * 768 : (c + 1) * 768] = tile
    return np.ascontiguousarray(out[:height, :width])


def build_reference(size: str, index: int = 0) -> np.ndarray:
    if size == "small":
        return _kodak(SMALL_IMAGES[index % len(SMALL_IMAGES)])
    if size == "3mp":
        return mosaic(3, 3, 2304, 1536)
    if size == "15mp":
        return mosaic(7, 6, 5120, 2880)
    raise SystemExit(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")


def jpeg(arr: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# ----------------------------------------------------------------------------------------------- worker


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(size: str, metric_set: str, rounds: int, threads: int, index: int) -> dict[str, Any]:
    """Runs in a fresh process, with the package under test first on ``sys.path``."""
    import torch

    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image

    torch.set_num_threads(threads)
    ref_arr = build_reference(size, index)
    ref, dist = load_image(ref_arr), load_image(jpeg(ref_arr))
    del ref_arr
    evaluator = (Evaluator("default") if metric_set == "default" else Evaluator(metrics=[metric_set])).load()
    gc.collect()
    rss_before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:  # reset VmHWM to the current RSS
        handle.write("5")
    scorer = evaluator.for_reference(ref)
    result = scorer.score(dist)  # warm-up: first-touch of scratch buffers
    seconds, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = scorer.score(dist)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    peak = _status_kb("VmHWM")
    megapixels = ref.width * ref.height / 1e6
    return {
        "ms_per_mp": statistics.median(seconds) * 1000.0 / megapixels,
        "cpu_ms_per_mp": statistics.median(cpu) * 1000.0 / megapixels,
        "growth_bytes": (peak - rss_before) * 1024,
        "megapixels": megapixels,
        "scores": result.scores,
        "package": str(Path(sys.modules["optimizer"].__file__ or "").parent),
    }


# ----------------------------------------------------------------------------------------------- driver


def wait_for_idle(limit_s: float) -> float:
    """Wait (up to ``limit_s``) until the other processes leave the CPUs idle: less than 5 % of the machine
    busy over one second. The machines are shared; this keeps other people's work out of the timings.
    Returns the seconds waited."""
    started = time.monotonic()

    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    while time.monotonic() - started < limit_s:
        b0, t0 = busy_and_total()
        time.sleep(1.0)
        b1, t1 = busy_and_total()
        if t1 > t0 and (b1 - b0) / (t1 - t0) < 0.05:
            break
    return time.monotonic() - started


def run_worker(tree: Path, size: str, metric_set: str, rounds: int, threads: int, index: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    args = [sys.executable, __file__, "--worker", size, metric_set, str(rounds), str(threads), str(index)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"worker {size} {metric_set} ({tree}) failed:\n{done.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not data["package"].startswith(str(tree)):
        raise SystemExit(f"worker imported {data['package']}, expected the package under {tree}")
    return data


def extract_baseline(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "optimizer"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument(
        "--metrics", default=",".join(DEFAULT_METRIC_SETS), help="comma-separated: 'default' (the profile) or metrics"
    )
    parser.add_argument(
        "--idle-wait", type=float, default=0.0, help="before each process, wait up to this many seconds for idle CPUs"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="processes per configuration and side, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-rev", default="6a9a60d")
    parser.add_argument("--no-baseline", action="store_true", help="measure the new package only")
    parser.add_argument("--write", action="store_true", help="append the section to benchmarks/RESULTS.md")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        size, metric_set, rounds, threads, index = args.worker
        print(json.dumps(worker(size, metric_set, int(rounds), int(threads), int(index))))
        return

    sizes = [s for s in args.sizes.split(",") if s]
    metric_sets = [m for m in args.metrics.split(",") if m]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = None if args.no_baseline else extract_baseline(args.baseline_rev, Path(tmp))
        for size in sizes:
            for metric_set in metric_sets:
                runs: dict[str, list[dict[str, Any]]] = {"new": [], "baseline": []}
                repeats = max(args.repeats, len(SMALL_IMAGES) if size == "small" else 1)
                for k in range(repeats):
                    sides = [("new", ROOT)] + ([("baseline", baseline)] if baseline is not None else [])
                    for side, tree in sides if k % 2 == 0 else sides[::-1]:
                        waited = wait_for_idle(args.idle_wait) if args.idle_wait else 0.0
                        runs[side].append(run_worker(tree, size, metric_set, args.rounds, args.threads, k))
                        runs[side][-1]["waited_s"] = waited
                        last = runs[side][-1]
                        print(
                            f"{size:>5} {metric_set:<11} {side:<8} {last['ms_per_mp']:7.1f} ms/MP "
                            f"(CPU {last['cpu_ms_per_mp']:7.1f}) "
                            f"{last['growth_bytes'] / (last['megapixels'] * 1e6):6.1f} B/px "
                            f"(waited {waited:.0f} s for idle CPUs) {last['scores']}",
                            flush=True,
                        )
                rows.append((size, metric_set, runs))
    text = render(rows, args)
    print(text)
    if args.write:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as handle:
            handle.write("\n" + text)


def _summary(runs: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Median wall and CPU ms per megapixel over the processes, largest bytes per pixel."""
    ms = statistics.median(r["ms_per_mp"] for r in runs)
    cpu = statistics.median(r["cpu_ms_per_mp"] for r in runs)
    bpp = max(r["growth_bytes"] / (r["megapixels"] * 1e6) for r in runs)
    return ms, cpu, bpp


def render(rows: list[tuple[str, str, dict[str, list[dict[str, Any]]]]], args: argparse.Namespace) -> str:
    command = (
        f"python benchmarks/bench_metrics_scale.py --sizes {args.sizes} --metrics {args.metrics} --rounds {args.rounds} "
        f"--repeats {args.repeats} --threads {args.threads} --baseline-rev {args.baseline_rev}"
        + (f" --idle-wait {args.idle_wait:g}" if args.idle_wait else "")
    )
    waited = [r.get("waited_s", 0.0) for _, _, runs in rows for side in runs.values() for r in side]
    out = io.StringIO()
    out.write("## Metrics at photo scale (`bench_metrics_scale.py`)\n\n")
    out.write(
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, torch threads {args.threads}). "
        "`Evaluator.for_reference(ref).score(dist)` per megapixel: median wall time over the rounds and processes, "
        "and median CPU time (both threads together; less sensitive to other users of the machine). Peak RSS "
        "growth from `for_reference` on, per pixel of the pair (it includes the evaluator's two float32 input "
        "tensors, 24 B/px), the largest over the processes. Baseline: the package at "
        f"`{args.baseline_rev}`, run in alternation with the new one. Images: Kodak 768x512 (kodim05, 13, 23); "
        "a 3x3 mosaic of distinct Kodak images (2304x1536, 3.5 MP); a 7x6 mosaic of the 24 Kodak images (second "
        "appearances mirrored) cropped to 5120x2880 (14.7 MP); distorted: JPEG q90.\n\n"
    )
    if args.idle_wait:
        out.write(
            f"Each process first waited up to {args.idle_wait:g} s for idle CPUs (the machines are shared); the "
            f"waits took {min(waited):.0f} to {max(waited):.0f} s"
            + (", so some timings ran beside other work.\n\n" if max(waited) >= args.idle_wait else ".\n\n")
        )
    out.write(
        "| size | metrics | baseline ms/MP | new ms/MP | speed-up | baseline CPU ms/MP | new CPU ms/MP | CPU ratio "
        "| baseline B/px | new B/px | largest score change |\n"
    )
    out.write("|---|---|---|---|---|---|---|---|---|---|---|\n")
    labels = {"small": "768x512", "3mp": "2304x1536", "15mp": "5120x2880"}
    for size, metric_set, runs in rows:
        new_ms, new_cpu, new_bpp = _summary(runs["new"])
        label = labels.get(size, size)
        if runs["baseline"]:
            base_ms, base_cpu, base_bpp = _summary(runs["baseline"])
            detail = ", ".join(
                f"{m} {max(abs(n['scores'][m] - b['scores'][m]) for n, b in zip(runs['new'], runs['baseline'])):.1e}"
                for m in runs["new"][0]["scores"]
            )
            out.write(
                f"| {label} | {metric_set} | {base_ms:.0f} | {new_ms:.0f} | **{base_ms / new_ms:.1f}x** | {base_cpu:.0f} "
                f"| {new_cpu:.0f} | {base_cpu / new_cpu:.1f}x | {base_bpp:.0f} | {new_bpp:.0f} | {detail} |\n"
            )
        else:
            out.write(f"| {label} | {metric_set} | | {new_ms:.0f} | | | {new_cpu:.0f} | | | {new_bpp:.0f} | |\n")
    return out.getvalue()


if __name__ == "__main__":
    main()
