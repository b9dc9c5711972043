"""Adaptive mode on Kodak: probes per image against plain bisection, bytes against one corpus-wide setting.

For each target and format, in one run on the same images:

* **adaptive**: :func:`optimizer.tuning.adaptive.compress` with that format alone (files written to a
  scratch folder and checked from disk, as the CLI does), then every written file is re-scored
  independently with a fresh evaluator;
* **bisection**: plain bisection over the same quality range (the jpeg-recompress method), which needs
  ``ceil(log2(range + 1))`` probes whatever the image; it finds the same answers;
* **corpus preset**: the single quality that every image meets the target with, i.e. the stand-in for a
  preset tuned on this corpus with the ``worst`` aggregate: starting from the largest per-image answer it
  steps up until every image passes, and its bytes are summed;
* **best format per image**: ``compress`` over all the formats together (with its format pruning, as the
  CLI runs it) against the smallest corpus preset of any single format.

Scores are memoised by decoded pixels inside this script, so bisection and the preset check re-use the
adaptive run's encodes instead of recomputing them: that saves time, never probes (each search counts its
own). Torch runs on one thread (``--threads``): on a busy 2-core machine, its default of 2 threads made
every score ~10x slower.

Usage: ``python benchmarks/bench_adaptive.py [--images 24] [--target ssimulacra2:80 --target composite:0.8]
[--formats jpeg,webp] [--range 1-100]``. Prints per-image lines and a markdown section for
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", REPO.parent / "shared" / "datasets"))


# --------------------------------------------------------------------------------------------------
# Scores memoised by decoded pixels (exact: equal pixels have equal scores)


def memo_evaluator(**kwargs: Any) -> Any:
    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image

    class MemoScorer:
        def __init__(self, scorer: Any) -> None:
            self.scorer = scorer
            self.memo: dict[tuple[bytes, tuple[str, ...] | None], Any] = {}
            self.reference = scorer.reference

        def score(self, distorted: Any, *, metrics: Iterable[str] | None = None) -> Any:
            image = load_image(distorted)
            key = (hashlib.sha1(image.rgb.tobytes()).digest(), tuple(metrics) if metrics is not None else None)
            if key not in self.memo:
                self.memo[key] = self.scorer.score(image, metrics=metrics)
            return self.memo[key]

    class MemoEvaluator(Evaluator):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self._scorers: dict[bytes, MemoScorer] = {}

        def for_reference(self, reference: Any, *, name: str | None = None) -> Any:
            image = load_image(reference, name=name)
            key = hashlib.sha1(image.rgb.tobytes() + repr(image.size).encode()).digest()
            if key not in self._scorers:
                self._scorers[key] = MemoScorer(super().for_reference(image))
            return self._scorers[key]

    return MemoEvaluator(**kwargs)


def evaluator_options(target: Any) -> dict[str, Any]:
    return {"profile": "default"} if target.metric == "composite" else {"metrics": [target.metric]}


# --------------------------------------------------------------------------------------------------
# One target


def run_target(
    paths: list[Path], target_text: str, formats: list[str], quality_range: tuple[int, int]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-adaptive-") as scratch:
        return _run_target(paths, target_text, formats, quality_range, Path(scratch))


def _run_target(
    paths: list[Path], target_text: str, formats: list[str], quality_range: tuple[int, int], scratch: Path
) -> dict[str, Any]:
    from optimizer.codecs import get_codec
    from optimizer.evaluator import Evaluator
    from optimizer.imageio import load_image
    from optimizer.tuning.adaptive import compress
    from optimizer.tuning.quality_axis import QualityAxis
    from optimizer.tuning.rootfind import bisection_search
    from optimizer.tuning.target import Target

    target = Target.parse(target_text)
    evaluator = memo_evaluator(**evaluator_options(target))
    fresh = Evaluator(**evaluator_options(target)).load()
    images = {p.name: load_image(p) for p in paths}
    out: dict[str, Any] = {"target": str(target), "formats": {}}
    for name in formats:
        codec = get_codec(name)
        axis = QualityAxis.for_codec(codec, quality_range)
        started = time.perf_counter()
        report = compress(
            paths,
            target=target,
            formats=[name],
            out_dir=scratch / name,
            evaluator=evaluator,
            quality_range=quality_range,
        )
        adaptive_seconds = time.perf_counter() - started
        if report.failures:
            raise SystemExit(f"failures: {report.failures}")
        rows = []
        for path, result in zip(paths, report.results):
            independent = target.value_of(fresh.evaluate(images[path.name], Path(result.output)))
            scorer = evaluator.for_reference(images[path.name])

            def margin(i: int, image: Any = images[path.name], scorer: Any = scorer) -> float:
                data = codec.encode(image, {axis.param: axis.value(i)})
                return target.margin(
                    target.value_of(scorer.score(codec.decode(data), metrics=target.metrics_needed or None))
                )

            bisect = bisection_search(margin, len(axis))
            rows.append(
                {
                    "image": path.name,
                    "met": result.met,
                    "kept_original": result.kept_original,
                    "verified": target.is_met(independent),
                    "quality": independent,
                    "setting": result.setting,
                    "bisection_setting": axis.value(bisect.answer) if bisect.answer is not None else None,
                    "probes": result.total_probes,
                    "bisection_probes": bisect.probes,
                    "bytes": result.bytes,
                    "pixels": result.width * result.height,
                }
            )
        preset, preset_bytes, preset_probes = corpus_preset(rows, images, codec, axis, target, evaluator)
        for row, size in zip(rows, preset_bytes):
            row["preset_bytes"] = size
        out["formats"][name] = {
            "rows": rows,
            "preset": preset,
            "preset_extra_probes": preset_probes,
            "adaptive_seconds": adaptive_seconds,
            "range": axis.describe(),
        }
    started = time.perf_counter()
    combined = compress(
        paths, target=target, formats=formats, out_dir=scratch / "all", evaluator=evaluator, quality_range=quality_range
    )
    out["combined"] = {
        "bytes": sum(r.bytes for r in combined.results),
        "met": sum(1 for r in combined.results if r.met),
        "verified": sum(
            1
            for p, r in zip(paths, combined.results)
            if target.is_met(target.value_of(fresh.evaluate(images[p.name], Path(r.output))))
        ),
        "probes": [r.total_probes for r in combined.results],
        "chosen": {
            f: sum(1 for r in combined.results if r.format == f) for f in sorted({r.format for r in combined.results})
        },
        "seconds": time.perf_counter() - started,
    }
    return out


def corpus_preset(
    rows: list[dict[str, Any]], images: dict[str, Any], codec: Any, axis: Any, target: Any, evaluator: Any
) -> tuple[Any, list[int], int]:
    """The smallest setting, from the largest per-image answer upwards, at which every image passes."""
    answers = [axis.position(r["setting"]) for r in rows if r["met"] and r["setting"] is not None]
    position = max(answers) if answers else len(axis) - 1
    probes = 0
    while True:
        value = axis.value(position)
        sizes, passed = [], True
        for row in rows:
            image = images[row["image"]]
            data = codec.encode(image, {axis.param: value})
            scored = evaluator.for_reference(image).score(codec.decode(data), metrics=target.metrics_needed or None)
            probes += 1
            sizes.append(len(data))
            passed = passed and target.is_met(target.value_of(scored))
        if passed or position == len(axis) - 1:
            return (value if passed else None), sizes, probes
        position += 1


# --------------------------------------------------------------------------------------------------
# Output


def summarise(result: dict[str, Any]) -> list[str]:
    lines = []
    for name, data in result["formats"].items():
        rows = data["rows"]
        a = [r["probes"] for r in rows]
        b = [r["bisection_probes"] for r in rows]
        same = sum(1 for r in rows if r["setting"] == r["bisection_setting"])
        adaptive_bytes = sum(r["bytes"] for r in rows)
        preset_bytes = sum(r["preset_bytes"] for r in rows)
        lines.append(
            f"| {result['target']} | {name} ({data['range']}) | {sum(r['met'] and r['verified'] for r in rows)}/{len(rows)} "
            f"| {statistics.mean(a):.2f} (max {max(a)}) | {statistics.mean(b):.2f} (max {max(b)}) "
            f"| {1 - sum(a) / sum(b):.0%} | {same}/{len(rows)} | {adaptive_bytes:,} "
            f"| {data['preset']} | {preset_bytes:,} | {1 - adaptive_bytes / preset_bytes:.1%} |"
        )
    return lines


def per_image(result: dict[str, Any]) -> None:
    for name, data in result["formats"].items():
        print(f"\n{result['target']} {name}: preset {data['preset']}; adaptive {data['adaptive_seconds']:.1f} s")
        print(
            f"{'image':<12} {'q':>6} {'bisect q':>8} {'probes':>6} {'bisect':>6} {'bytes':>8} {'preset':>8} {'quality':>8} ok"
        )
        for r in data["rows"]:
            print(
                f"{r['image']:<12} {r['setting']!s:>6} {r['bisection_setting']!s:>8} {r['probes']:>6} "
                f"{r['bisection_probes']:>6} {r['bytes']:>8} {r['preset_bytes']:>8} {r['quality']:>8.3f} "
                f"{'yes' if r['met'] and r['verified'] else 'NO'}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images (default all 24)")
    parser.add_argument(
        "--target", action="append", help="METRIC:VALUE (repeatable); default ssimulacra2:80 and composite:0.8"
    )
    parser.add_argument("--formats", default="jpeg,webp")
    parser.add_argument("--range", default="1-100", help="quality range searched by both methods")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    paths = sorted((DATASETS / "kodak").glob("kodim*.png"))[: args.images]
    if not paths:
        raise SystemExit(f"no Kodak images under {DATASETS / 'kodak'}")
    low, high = (int(v) for v in args.range.split("-"))
    targets = args.target or ["ssimulacra2:80", "composite:0.8"]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    started = time.perf_counter()
    results = []
    for target in targets:
        result = run_target(paths, target, formats, (low, high))
        per_image(result)
        results.append(result)
    seconds = time.perf_counter() - started

    command = "python benchmarks/bench_adaptive.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print("\n<!-- paste into benchmarks/RESULTS.md -->")
    print("## Adaptive mode: probes per image and bytes against a corpus preset\n")
    print(
        f"`{command.strip()}`: Kodak, {len(paths)} images (768x512 / 512x768), quality range {low}..{high} for "
        f"both searches, torch on {args.threads} thread(s), {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; {seconds / 60:.1f} min in all.\n"
    )
    print(
        "| target | format (range) | met, re-scored from disk | adaptive probes / image | bisection probes / image "
        "| fewer probes | same answer | adaptive bytes | corpus preset | preset bytes | bytes saved |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for line in summarise(result):
            print(line)
    print()
    for result in results:
        c = result["combined"]
        best_preset = min((sum(r["preset_bytes"] for r in d["rows"]), name) for name, d in result["formats"].items())
        print(
            f"- {result['target']}, best of {'/'.join(formats)} per image (format pruning on): "
            f"{c['met']}/{len(paths)} met ({c['verified']} re-scored from disk), {c['bytes']:,} bytes against "
            f"{best_preset[0]:,} for the best single-format preset ({best_preset[1]}): "
            f"{1 - c['bytes'] / best_preset[0]:.1%} fewer; {statistics.mean(c['probes']):.2f} probes per image "
            f"for all formats together (max {max(c['probes'])}); formats chosen {c['chosen']}."
        )
    print(
        "- Probes count encodes scored by each search (the final check of the written file is extra: one "
        "decode and score per image). Bisection keeps (lo, hi] from the virtual ends, so it needs "
        f"ceil(log2({high - low + 2})) = {math.ceil(math.log2(high - low + 2))} probes on this range whatever the image."
    )
    print(
        "- Corpus preset: the smallest single quality at which every image meets the target (the `worst` "
        "aggregate), found upwards from the largest per-image answer."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
