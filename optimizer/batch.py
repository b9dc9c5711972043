"""Batch evaluation of folders: pairing, parallel scoring, summaries and JSON/CSV reports.

Folders are paired by relative path and stem, so ``a/b.png`` in the reference folder pairs with
``a/b.webp`` in the processed folder. Files that cannot be paired or read are listed in the report with a
reason and never stop the batch. A batch asked to stop (Ctrl-C in the CLI) finishes the pairs being scored
and returns what finished, the other pairs listed as ``interrupted``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compat import renamed
from ._files import write_atomic
from .errors import InvalidParameterError, OptimizerError
from .evaluator import EvaluationResult, Evaluator
from .heatmaps import heatmap, write_maps
from .imageio import load_image
from .jsonio import dumps, json_number, json_safe
from .metrics.registry import get_spec
from .statistics import statistic

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BatchReport",
    "IMAGE_EXTENSIONS",
    "PairIssue",
    "PairResult",
    "evaluate_folders",
    "heatmap",
    "index_folder",
    "iter_image_files",
    "pair_folders",
    "write_maps",
]

IMAGE_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".webp",
        ".avif",
        ".jxl",
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pnm",
        ".tga",
    }
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class PairResult:
    """One scored pair with its file sizes."""

    key: str
    reference_path: str
    distorted_path: str
    result: EvaluationResult
    reference_bytes: int
    distorted_bytes: int

    @property
    def bits_per_pixel(self) -> float:
        return self.distorted_bytes * 8.0 / (self.result.width * self.result.height)

    @property
    def byte_ratio(self) -> float:
        """Processed bytes / original bytes."""
        return self.distorted_bytes / self.reference_bytes if self.reference_bytes else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "reference": self.reference_path,
            "distorted": self.distorted_path,
            "reference_bytes": self.reference_bytes,
            "distorted_bytes": self.distorted_bytes,
            "bits_per_pixel": self.bits_per_pixel,
            "byte_ratio": json_number(self.byte_ratio),
            **{k: v for k, v in self.result.to_dict().items() if k not in ("reference", "distorted")},
        }


@dataclass(frozen=True)
class PairIssue:
    """A file that was not scored, and why."""

    path: str
    reason: str
    kind: str  # "unpaired" | "failed" | "interrupted" (not scored: the batch was stopped first)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "kind": self.kind}


@dataclass
class BatchReport:
    """Per-pair results, the files left out, and a summary over the scored pairs."""

    pairs: list[PairResult]
    issues: list[PairIssue]
    evaluator: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    #: the batch was stopped before every pair was scored (the rest are issues of kind ``interrupted``)
    interrupted: bool = False

    @property
    def unpaired(self) -> list[PairIssue]:
        return [i for i in self.issues if i.kind == "unpaired"]

    @property
    def failed(self) -> list[PairIssue]:
        return [i for i in self.issues if i.kind == "failed"]

    @property
    def not_scored(self) -> list[PairIssue]:
        """Pairs left unscored because the batch was stopped."""
        return [i for i in self.issues if i.kind == "interrupted"]

    @property
    def metric_names(self) -> list[str]:
        return list(self.evaluator.get("metrics", []))

    def summary(self) -> dict[str, Any]:
        """Count, mean, median, p10/p90 and worst per metric and for the composite; levels; bytes."""
        out: dict[str, Any] = {
            "count": len(self.pairs),
            "unpaired": len(self.unpaired),
            "failed": len(self.failed),
            "interrupted": len(self.not_scored),
        }
        stats: dict[str, Any] = {}
        for name in [*self.metric_names, "composite"]:
            values = [(p.result.composite if name == "composite" else p.result.scores.get(name)) for p in self.pairs]
            keyed = [(v, p.key) for v, p in zip(values, self.pairs) if v is not None and not math.isnan(v)]
            if not keyed:
                continue
            higher = True if name == "composite" else get_spec(name).higher_is_better
            stats[name] = _describe(keyed, higher)
        out["metrics"] = stats
        levels = Counter(p.result.level for p in self.pairs)
        order = list(self.evaluator.get("levels", {})) + ["very_poor"]
        out["levels"] = {name: levels.get(name, 0) for name in dict.fromkeys(order + list(levels))}
        if self.pairs:
            ref_total = sum(p.reference_bytes for p in self.pairs)
            dist_total = sum(p.distorted_bytes for p in self.pairs)
            pixels = sum(p.result.width * p.result.height for p in self.pairs)
            out["bytes"] = {
                "reference_total": ref_total,
                "distorted_total": dist_total,
                "ratio": dist_total / ref_total if ref_total else None,
                "bits_per_pixel": dist_total * 8.0 / pixels,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "interrupted": self.interrupted,
            "evaluator": self.evaluator,
            "summary": json_safe(self.summary()),
            "pairs": [p.to_dict() for p in self.pairs],
            "issues": [i.to_dict() for i in self.issues],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        text = dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_dataframe(self) -> pd.DataFrame:
        """One row per scored pair: paths, bytes, bits per pixel, every metric, composite, level."""
        import pandas as pd

        rows = []
        for p in self.pairs:
            row: dict[str, Any] = {
                "key": p.key,
                "reference": p.reference_path,
                "distorted": p.distorted_path,
                "width": p.result.width,
                "height": p.result.height,
                "reference_bytes": p.reference_bytes,
                "distorted_bytes": p.distorted_bytes,
                "bits_per_pixel": p.bits_per_pixel,
                "byte_ratio": p.byte_ratio,
            }
            row.update(p.result.scores)
            row["composite"] = p.result.composite
            row["level"] = p.result.level
            rows.append(row)
        columns = [
            "key",
            "reference",
            "distorted",
            "width",
            "height",
            "reference_bytes",
            "distorted_bytes",
            "bits_per_pixel",
            "byte_ratio",
            *self.metric_names,
            "composite",
            "level",
        ]
        return pd.DataFrame(rows, columns=columns)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.to_dataframe().to_csv(index=False))


def _describe(keyed: Sequence[tuple[float, str]], higher_is_better: bool) -> dict[str, Any]:
    values = [v for v, _ in keyed]
    out: dict[str, Any] = {
        stat: statistic(values, stat, higher_is_better=higher_is_better) for stat in ("mean", "median", "p10", "p90")
    }
    worst_value, worst_key = (min if higher_is_better else max)(keyed, key=lambda kv: kv[0])
    out.update(worst=float(worst_value), worst_pair=worst_key)
    return out


# --------------------------------------------------------------------------------------------------
# Pairing


def index_folder(root: Path) -> tuple[dict[str, Path], list[PairIssue]]:
    """Map relative path without extension -> image file (:func:`iter_image_files`); several files with one
    stem (``b.png`` and ``b.jpg``) are ``unpaired`` issues, not entries."""
    found: dict[str, list[Path]] = {}
    for path in iter_image_files(root):
        found.setdefault(path.relative_to(root).with_suffix("").as_posix(), []).append(path)
    index: dict[str, Path] = {}
    issues: list[PairIssue] = []
    for key, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                issues.append(
                    PairIssue(str(p), f"ambiguous: several files share the stem {key!r} ({names})", "unpaired")
                )
        else:
            index[key] = paths[0]
    return index, issues


def pair_folders(
    reference_dir: str | os.PathLike[str], distorted_dir: str | os.PathLike[str]
) -> tuple[list[tuple[str, Path, Path]], list[PairIssue]]:
    """Pair two folders by relative path and stem; returns ``(key, ref, dist)`` pairs and the issues."""
    ref_root, dist_root = Path(reference_dir), Path(distorted_dir)
    for root in (ref_root, dist_root):
        if not root.is_dir():
            raise InvalidParameterError(f"{root} is not a folder")
    refs, issues = index_folder(ref_root)
    dists, dist_issues = index_folder(dist_root)
    issues += dist_issues
    pairs = [(key, refs[key], dists[key]) for key in sorted(refs.keys() & dists.keys())]
    for key in sorted(refs.keys() - dists.keys()):
        issues.append(PairIssue(str(refs[key]), f"no processed file for {key!r} in {dist_root}", "unpaired"))
    for key in sorted(dists.keys() - refs.keys()):
        issues.append(PairIssue(str(dists[key]), f"no reference file for {key!r} in {ref_root}", "unpaired"))
    return pairs, issues


# --------------------------------------------------------------------------------------------------
# Scoring


def _score_pair(evaluator: Evaluator, key: str, ref: Path, dist: Path, maps_dir: Path | None) -> PairResult | PairIssue:
    try:
        scorer = evaluator.for_reference(ref)
        distorted = load_image(dist, color="keep")  # decoded once, for the score and the maps (sRGB)
        result = scorer.score(distorted)
        if maps_dir is not None:
            write_maps(scorer.maps(distorted), maps_dir, key)
        return PairResult(key, str(ref), str(dist), result, ref.stat().st_size, dist.stat().st_size)
    except (OptimizerError, OSError) as exc:
        return PairIssue(str(dist), str(exc), "failed")


_worker_evaluator: Evaluator | None = None


def _init_worker(config: dict[str, Any], threads: int) -> None:
    import torch

    global _worker_evaluator
    # Ctrl-C is the parent's to handle (it stops the batch after the pairs in progress); a terminal sends
    # it to the whole process group, which would otherwise kill the workers mid-pair.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _worker_evaluator = Evaluator(**config)


def _score_in_worker(key: str, ref: str, dist: str, maps_dir: str | None) -> PairResult | PairIssue:
    if _worker_evaluator is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker evaluator was not initialised")
    return _score_pair(_worker_evaluator, key, Path(ref), Path(dist), Path(maps_dir) if maps_dir else None)


def evaluate_folders(
    reference_dir: str | os.PathLike[str],
    distorted_dir: str | os.PathLike[str],
    *,
    evaluator: Evaluator | None = None,
    profile: str | None = None,
    metrics: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    resize_to_reference: bool = False,
    jobs: int = 1,
    workers: int | None = None,
    maps_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> BatchReport:
    """Score every paired file of two folders; see the module docstring for pairing rules.

    Args:
        reference_dir: The folder of originals.
        distorted_dir: The folder of processed images (paired by relative path and stem).
        evaluator: The evaluator to score with (or give ``profile``/``metrics``/``weights``).
        profile: Composite profile name.
        metrics: Metrics to compute (default: the profile's).
        weights: Custom composite weights.
        resize_to_reference: Resize a processed image of another size to its reference's before scoring.
        jobs: Pairs scored in parallel processes (each loads its own models once).
        workers: Deprecated spelling of ``jobs``.
        maps_dir: Write a heat map per metric and pair here (named and scaled as :mod:`optimizer.heatmaps`
            says).
        progress: Called as ``progress(done, total)`` after each pair.
        stop: Set it (from a signal handler or another thread) to stop after the pairs being scored: the
            report then holds the pairs scored so far, lists the others as issues of kind ``interrupted``
            and has ``interrupted`` set.

    Returns:
        The :class:`BatchReport`: scored pairs, the files left out with reasons, and a summary.
    """
    if evaluator is not None and (profile or metrics or weights or resize_to_reference):
        raise InvalidParameterError("give either an evaluator or profile/metrics/weights/resize_to_reference, not both")
    workers = renamed(jobs, workers, old="workers", new="jobs", default=1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidParameterError(f"jobs must be an integer >= 1, got {workers!r}")
    if evaluator is None:
        evaluator = Evaluator(profile, metrics=metrics, weights=weights, resize_to_reference=resize_to_reference)
    pairs, issues = pair_folders(reference_dir, distorted_dir)
    maps_path = Path(maps_dir) if maps_dir is not None else None
    if maps_path is not None:
        maps_path.mkdir(parents=True, exist_ok=True)
    total = len(pairs)
    stop = stop or threading.Event()
    done: dict[int, PairResult | PairIssue] = {}
    if workers == 1 or total <= 1:
        evaluator.load()
        for n, (key, ref, dist) in enumerate(pairs):
            if stop.is_set():
                break
            done[n] = _score_pair(evaluator, key, ref, dist, maps_path)
            if progress:
                progress(len(done), total)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        initargs = (evaluator.config(), threads)
        # spawn, not fork: forking a process that already runs torch threads can deadlock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
            futures = {
                pool.submit(_score_in_worker, key, str(ref), str(dist), str(maps_path) if maps_path else None): n
                for n, (key, ref, dist) in enumerate(pairs)
            }
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                done[futures[future]] = future.result()
                if progress:
                    progress(len(done), total)
                if stop.is_set():
                    for waiting in futures:
                        waiting.cancel()  # the pairs being scored finish; the queued ones never start
    interrupted = len(done) < total
    outcomes = [
        done.get(n) or PairIssue(str(dist), "not scored: the batch was interrupted first", "interrupted")
        for n, (_, _, dist) in enumerate(pairs)
    ]  # pair order, whatever order the workers finished in
    results = [o for o in outcomes if isinstance(o, PairResult)]
    issues += [o for o in outcomes if isinstance(o, PairIssue)]
    return BatchReport(pairs=results, issues=issues, evaluator=evaluator.describe(), interrupted=interrupted)


# --------------------------------------------------------------------------------------------------
# Files


def iter_image_files(root: Path) -> Iterable[Path]:
    """Image files under ``root`` (recursive, sorted, hidden files skipped)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS:
            yield path
