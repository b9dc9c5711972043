"""The study objective: encode the corpus with a trial's settings, score it, trade quality against bytes.

Modes:

``constrained`` (default)
    Minimise total bytes subject to ``aggregate quality >= target``, through Optuna's trial constraints
    (``trial.set_constraint``), which TPE and NSGA-II use to steer towards feasible settings. Images are scored one at a time and the trial is pruned as soon as the target
    can no longer be met (it is then recorded as infeasible).
``tradeoff``
    Maximise ``normalised quality - lambda * bits per pixel`` (one objective).
``pareto``
    Two objectives, total bytes (minimise) and aggregate quality (its metric's direction); optionally
    total encode time as a third.

Every trial records, as user attributes, what the Optuna dashboard, the reports and the presets need:
per-image bytes, bits per pixel, every metric, encode/decode time, and the aggregates (also flat, as
``agg_<metric>``, so the dashboard can sort and filter by them).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import EncodeError, InvalidParameterError
from ..evaluator import Evaluator, ReferenceScorer
from ..jsonio import json_number, json_safe
from ..metrics.registry import get_spec
from ..statistics import statistic
from .corpus import Corpus, CorpusItem
from .records import (
    ATTR_AGGREGATES,
    ATTR_BPP,
    ATTR_CONSTRAINT,
    ATTR_ENCODE_SECONDS,
    ATTR_ERROR,
    ATTR_IMAGES,
    ATTR_PRUNED_AFTER,
    ATTR_QUALITY,
    ATTR_SETTINGS,
    ATTR_TOTAL_BYTES,
)
from .settings import EncodingSettings
from .space import SearchSpace
from .target import AGGREGATES, COMPOSITE, Target

if TYPE_CHECKING:
    import optuna

    from .records import StudyDefinition

__all__ = ["MODES", "Mode", "Objective", "TrialRecord", "directions_for"]

Mode = Literal["constrained", "tradeoff", "pareto"]
MODES: tuple[Mode, ...] = ("constrained", "tradeoff", "pareto")


def directions_for(mode: str, target: Target, *, time_objective: bool = False) -> list[Literal["minimize", "maximize"]]:
    """Optuna directions of a mode (the quality direction comes from the metric registry)."""
    if mode == "constrained":
        return ["minimize"]
    if mode == "tradeoff":
        return ["maximize"]
    if mode == "pareto":
        quality: Literal["minimize", "maximize"] = "maximize" if target.higher_is_better else "minimize"
        return ["minimize", quality] + (["minimize"] if time_objective else [])
    raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass
class TrialRecord:
    """What one trial measured so far (images may be fewer than the corpus when pruned)."""

    images: list[dict[str, Any]]
    total_bytes: int = 0
    pixels: int = 0
    encode_seconds: float = 0.0

    @property
    def bits_per_pixel(self) -> float:
        return self.total_bytes * 8.0 / self.pixels if self.pixels else math.nan


class Objective:
    """Callable objective for ``study.optimize``; reference-side work is cached once for the study."""

    def __init__(
        self,
        corpus: Corpus,
        space: SearchSpace,
        target: Target,
        evaluator: Evaluator,
        *,
        mode: str = "constrained",
        aggregate_by: str = "p10",
        tradeoff_lambda: float = 0.05,
        time_objective: bool = False,
        prune: bool = True,
        prune_target: Target | None = None,
        threads: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if aggregate_by not in AGGREGATES:
            raise InvalidParameterError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate_by!r}")
        target.check_computed(evaluator.metric_names)
        if tradeoff_lambda < 0:
            raise InvalidParameterError(f"tradeoff lambda must be >= 0, got {tradeoff_lambda}")
        self.corpus = corpus
        self.space = space
        self.target = target
        self.evaluator = evaluator
        self.mode = mode
        self.aggregate_by = aggregate_by
        self.tradeoff_lambda = tradeoff_lambda
        self.time_objective = time_objective
        # A trial is pruned once it cannot reach ``prune_target`` (default: the target itself; a looser bar
        # when extra preset tiers are chosen from the same trials).
        self.prune_target = prune_target or target
        self.prune = prune and mode == "constrained"
        #: encoder threads per encode (None: the library default); worker processes set their share
        self.threads = threads
        self._scorers: list[ReferenceScorer] | None = None
        self._scorers_lock = threading.Lock()
        # Shared by the trial threads of ``n_jobs``: a race only measures the same settings twice.
        self._memo: dict[tuple[str, str], dict[str, Any]] = {}

    @classmethod
    def from_definition(
        cls,
        definition: StudyDefinition,
        corpus: Corpus,
        *,
        evaluator: Evaluator | None = None,
        prune_target: Target | None = None,
    ) -> Objective:
        """The objective a stored study definition describes, on ``corpus`` (its images, loaded).

        ``evaluator`` defaults to the definition's; ``prune_target`` is the pruning bar (None: no pruning).
        """
        return cls(
            corpus,
            definition.space_obj,
            definition.target_obj,
            evaluator if evaluator is not None else definition.evaluator_obj(),
            mode=definition.mode,
            aggregate_by=definition.aggregate,
            tradeoff_lambda=definition.tradeoff_lambda,
            time_objective=definition.time_objective,
            prune=prune_target is not None,
            prune_target=prune_target,
        )

    @property
    def scorers(self) -> list[ReferenceScorer]:
        """One cached reference scorer per corpus item, built once on first use (by one thread)."""
        if self._scorers is None:
            with self._scorers_lock:
                if self._scorers is None:
                    self._scorers = [self.evaluator.for_reference(item.reference) for item in self.corpus.items]
        return self._scorers

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return directions_for(self.mode, self.target, time_objective=self.time_objective)

    # -- one trial ------------------------------------------------------------------------------------

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        import optuna

        settings = self.space.sample(trial)
        trial.set_user_attr(ATTR_SETTINGS, settings.to_dict())
        record = TrialRecord(images=[])
        qualities: list[float] = []
        prune_qualities: list[float] = []
        for index, (item, scorer) in enumerate(zip(self.corpus.items, self.scorers)):
            try:
                image = self._measure(item, scorer, settings)
            except EncodeError as exc:
                trial.set_user_attr(ATTR_ERROR, f"{item.name}: {exc}")
                raise
            qualities.append(_quality(image, self.target))
            prune_qualities.append(_quality(image, self.prune_target))
            record.images.append(image)
            record.total_bytes += image["bytes"]
            record.pixels += image["width"] * image["height"]
            record.encode_seconds += image["encode_seconds"]
            if self.prune and self._certainly_fails(prune_qualities):
                self._write(trial, record, qualities, complete=False)
                trial.set_user_attr(ATTR_PRUNED_AFTER, index + 1)
                trial.report(float(record.total_bytes), step=index)
                raise optuna.TrialPruned(
                    f"target {self.target} ({self.aggregate_by}) out of reach after {index + 1} of "
                    f"{len(self.corpus)} images"
                )
        agg = self._write(trial, record, qualities, complete=True)
        return self._values(record, agg)

    def _measure(self, item: CorpusItem, scorer: ReferenceScorer, settings: EncodingSettings) -> dict[str, Any]:
        """Encode, decode and score one corpus item; identical settings are measured once per study run
        (samplers often propose the same integer parameters again)."""
        item_settings = settings.at_width(item.width)
        key = (item.name, json.dumps(item_settings.to_dict(), sort_keys=True))
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        encoded = item_settings.encode(item.source, threads=self.threads)
        result = scorer.score(encoded.decoded)
        image = {
            "name": item.name,
            "width": encoded.width,
            "height": encoded.height,
            "bytes": encoded.bytes,
            "bits_per_pixel": encoded.bits_per_pixel,
            "scores": dict(result.scores),
            "composite": result.composite,
            "encode_seconds": encoded.encode_seconds,
            "decode_seconds": encoded.decode_seconds,
            "score_seconds": result.seconds,
        }
        self._memo[key] = image
        return image

    def measure_settings(self, settings: EncodingSettings | dict[str, Any]) -> dict[str, Any]:
        """Bytes and aggregate qualities of fixed ``settings`` on the whole corpus, outside any trial
        (baselines such as JPEG q85 to report savings against)."""
        if not isinstance(settings, EncodingSettings):
            settings = EncodingSettings.from_dict(settings)
        images = [self._measure(item, scorer, settings) for item, scorer in zip(self.corpus.items, self.scorers)]
        total = sum(img["bytes"] for img in images)
        pixels = sum(img["width"] * img["height"] for img in images)
        quality = self.target.aggregate([_quality(img, self.target) for img in images], self.aggregate_by)
        return {
            "settings": settings.to_dict(),
            "total_bytes": total,
            "bits_per_pixel": total * 8.0 / pixels,
            "quality": json_number(quality),
            "aggregates": json_safe(self._aggregates(images)),
        }

    def _values(self, record: TrialRecord, quality: float) -> float | tuple[float, ...]:
        if self.mode == "constrained":
            return float(record.total_bytes)
        if self.mode == "tradeoff":
            return self.normalised(quality) - self.tradeoff_lambda * record.bits_per_pixel
        values: tuple[float, ...] = (float(record.total_bytes), float(quality))
        return values + ((record.encode_seconds,) if self.time_objective else ())

    def normalised(self, quality: float) -> float:
        """Quality on the [0, 1] scale used by the trade-off objective."""
        return quality if self.target.metric == COMPOSITE else get_spec(self.target.metric).normalise(quality)

    def _write(self, trial: optuna.Trial, record: TrialRecord, qualities: list[float], *, complete: bool) -> float:
        agg = self.target.aggregate(qualities, self.aggregate_by)
        aggregates = self._aggregates(record.images)
        trial.set_user_attr(ATTR_IMAGES, json_safe(record.images))
        trial.set_user_attr(ATTR_TOTAL_BYTES, record.total_bytes)
        trial.set_user_attr(ATTR_BPP, json_number(record.bits_per_pixel))
        trial.set_user_attr(ATTR_QUALITY, json_number(agg))
        trial.set_user_attr(ATTR_AGGREGATES, json_safe(aggregates))
        for name, value in aggregates.items():  # flat copies: sortable and filterable in optuna-dashboard
            trial.set_user_attr(f"agg_{name}", json_number(value))
        trial.set_user_attr(ATTR_ENCODE_SECONDS, record.encode_seconds)
        constraint = _constraint(self.target, agg)
        if not complete:  # pruned trials are infeasible by construction
            constraint = max(constraint, 1e-9)
        trial.set_user_attr(ATTR_CONSTRAINT, constraint)
        if self.mode == "constrained":  # what Optuna's samplers and best_trial read
            trial.set_constraint("quality", constraint)
        return agg

    def _aggregates(self, images: list[dict[str, Any]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.evaluator.metric_names:
            values = [float(img["scores"][name]) for img in images]
            higher = get_spec(name).higher_is_better
            out[name] = statistic(values, self.aggregate_by, higher_is_better=higher)
        out[COMPOSITE] = statistic([img["composite"] for img in images], self.aggregate_by, higher_is_better=True)
        return out

    def _certainly_fails(self, qualities: list[float]) -> bool:
        """Whether the aggregate over the full corpus can no longer reach the target.

        Every aggregate is monotone in each image's quality, so the trial is hopeless exactly when even
        the best possible score on every remaining image leaves the aggregate short of the target.
        """
        if all(self.prune_target.is_met(q) for q in qualities):
            return False
        best = self.prune_target.best_value
        if self.prune_target.metric != COMPOSITE and math.isinf(best):
            return False  # an unbounded best (PSNR) can rescue any mean or percentile
        remaining = len(self.corpus) - len(qualities)
        best_case = self.prune_target.aggregate(list(qualities) + [best] * remaining, self.aggregate_by)
        return not self.prune_target.is_met(best_case)


def _quality(image: dict[str, Any], target: Target) -> float:
    """One image record's value of the quantity ``target`` is about."""
    return float(image["composite"] if target.metric == COMPOSITE else image["scores"][target.metric])


def _constraint(target: Target, quality: float) -> float:
    """Optuna's constraint value: feasible at or below 0. The distance to the bar in the metric's units; an
    infinite quality (PSNR of a lossless encode) is +-1, a NaN (a failed score) infeasible."""
    if math.isnan(quality):
        return 1.0
    margin = target.margin(quality)
    return -margin if math.isfinite(margin) else math.copysign(1.0, -margin)
