"""The study objective: what one trial measures, and what it reports to Optuna.

Modes:

``constrained`` (default)
    Minimise total bytes subject to ``aggregate quality >= target``. The sampler chooses every setting but
    the quality (format, chroma subsampling, speed or effort, resize filter, sharpening); the trial then
    *solves* the quality axis on the corpus aggregate with the root finder ``compress`` uses
    (:func:`~optimizer.tuning.rootfind.adaptive_search`), so a completed trial is the smallest quality of
    its settings that meets the target (``minimal`` when the setting one step below was measured and
    failed), or proven infeasible at the top of the range. Each probe measures the hardest images first
    and stops as soon as the target is out of reach, so most failing probes cost a fraction of the corpus
    (exactly: a probe reported failing fails on the whole corpus); a passing probe measures every image.
    The first probe starts where the closest earlier trial of the same format found its answer, with the
    slope it measured (else the codec's prior for the target's level). Extra preset tiers are solved the
    same way from the probes already made. The trial reports its bytes at the answer and its constraint
    through Optuna's trial constraints (``trial.set_constraint``).
``tradeoff``
    Maximise ``normalised quality - lambda * bits per pixel`` (one objective); the sampler chooses the
    quality too.
``pareto``
    Two objectives, total bytes (minimise) and aggregate quality (its metric's direction), optionally total
    encode time as a third. A trial traces its settings' rate-quality curve at a few qualities; every point
    is recorded, and the study's front is taken over all of them.

Every trial records, as user attributes, what the Optuna dashboard, the reports and the presets need
(:mod:`optimizer.tuning.records`): the settings and per-image records at its answer, bytes, bits per
pixel, the aggregates (also flat, as ``agg_<metric>``, so the dashboard can sort and filter by them),
and every probe (quality setting, bytes, aggregates) so rate-quality curves keep their data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import EncodeError, InvalidParameterError
from ..evaluator import Evaluator, ReferenceScorer
from ..jsonio import json_number, json_safe, number_from_json
from ..metrics.registry import get_spec
from .corpus import Corpus
from .measure import CorpusMeter, Probe, image_quality
from .quality_axis import QualityAxis, prior_position, prior_slope, search_margin, target_level
from .records import (
    ATTR_AGGREGATES,
    ATTR_ANSWERS,
    ATTR_BPP,
    ATTR_CONSTRAINT,
    ATTR_ENCODE_SECONDS,
    ATTR_ERROR,
    ATTR_IMAGES,
    ATTR_MINIMAL,
    ATTR_PROBES,
    ATTR_PRUNED_AFTER,
    ATTR_QUALITY,
    ATTR_SETTINGS,
    ATTR_TOTAL_BYTES,
    WARM_START_ATTR,
)
from .rootfind import SearchTrace, adaptive_search
from .settings import EncodingSettings
from .space import SearchSpace
from .target import AGGREGATES, COMPOSITE, Target

if TYPE_CHECKING:
    import optuna

    from .records import StudyDefinition

__all__ = ["MODES", "Mode", "Objective", "directions_for"]

Mode = Literal["constrained", "tradeoff", "pareto"]
MODES: tuple[Mode, ...] = ("constrained", "tradeoff", "pareto")
#: Points a pareto trial measures on its quality axis (evenly spread from its low end to its top).
PARETO_POINTS = 5


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
class _Start:
    """Where a trial's search starts: a position guess, the margin slope per position, the image order."""

    guess: int | None = None
    slope: float | None = None
    order: list[int] = field(default_factory=list)


class Objective:
    """Callable objective for ``study.optimize``; reference-side work and encodes are cached for the study."""

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
        tier_targets: Sequence[Target] = (),
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
        self.tier_targets = [t for t in tier_targets if t != target]
        #: the quality axis is solved inside each trial (constrained and pareto) rather than sampled
        self.solve_quality = mode in ("constrained", "pareto")
        self.meter = CorpusMeter(corpus, evaluator, target, aggregate_by, threads=threads)

    @classmethod
    def from_definition(
        cls,
        definition: StudyDefinition,
        corpus: Corpus,
        *,
        evaluator: Evaluator | None = None,
        prune_target: Target | None = None,
        tier_targets: Sequence[Target] = (),
    ) -> Objective:
        """The objective a stored study definition describes, on ``corpus`` (its images, loaded).

        ``evaluator`` defaults to the definition's; ``prune_target`` is the pruning bar (None: no pruning);
        ``tier_targets`` are the extra preset tiers whose answers each trial also finds.
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
            tier_targets=tier_targets,
        )

    @property
    def scorers(self) -> list[ReferenceScorer]:
        """One cached reference scorer per corpus item, built once on first use."""
        return self.meter.scorers

    @property
    def threads(self) -> int | None:
        """Encoder threads per encode (None: the library default)."""
        return self.meter.threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        self.meter.threads = value

    @property
    def encodes(self) -> int:
        """Fresh encodes of one corpus item so far (the unit of cost)."""
        return self.meter.encodes

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        return directions_for(self.mode, self.target, time_objective=self.time_objective)

    # -- one trial ------------------------------------------------------------------------------------

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        settings = self.space.sample(trial, solve_quality=self.solve_quality)
        trial.set_user_attr(ATTR_SETTINGS, settings.to_dict())
        axis = self.space.quality_axis(settings.codec) if self.solve_quality else None
        try:
            if self.mode == "pareto":
                return self._trace(trial, settings, axis)
            if self.mode == "constrained":
                return self._solve(trial, settings, axis)
            probe = self.meter.measure(settings, order=self._start(trial, settings, axis).order)
            return self._finish(trial, probe, [probe], {}, minimal=False)
        except EncodeError as exc:
            trial.set_user_attr(ATTR_ERROR, str(exc))
            raise

    def _solve(self, trial: optuna.Trial, settings: EncodingSettings, axis: QualityAxis | None) -> float:
        """Constrained mode: the smallest quality of ``settings`` that meets the target (see the module doc)."""
        import optuna

        start = self._start(trial, settings, axis)
        probes: list[Probe] = []
        if axis is None:  # nothing to solve: one measurement
            probe = self.meter.measure(settings, order=start.order, bar=self.prune_target if self.prune else None)
            probes.append(probe)
            if not probe.complete:
                self._record_pruned(trial, probe, probes)
                raise optuna.TrialPruned(f"target {self.target} out of reach")
            return self._bytes(self._finish(trial, probe, probes, {str(self.target): 0}, minimal=True))
        answers: dict[str, int] = {}
        main = self._find(axis, settings, self.target, start, probes)
        if main.answer is not None:
            answers[str(self.target)] = _index_of(probes, axis, main.answer, complete=True)
        for tier in self.tier_targets:
            found = self._find(axis, settings, tier, _Start(main.answer, start.slope, start.order), probes)
            if found.answer is not None:
                answers[str(tier)] = _index_of(probes, axis, found.answer, complete=True)
        if main.answer is not None:
            answer = probes[answers[str(self.target)]]
            return self._bytes(self._finish(trial, answer, probes, answers, minimal=main.certified))
        # Infeasible at the top of the range: recorded at the best quality measured.
        top = max(probes, key=lambda p: (_setting_position(axis, p), p.complete))
        if self.prune and not answers:
            self._record_pruned(trial, top, probes)
            raise optuna.TrialPruned(f"target {self.prune_target} not met even at {axis.describe()}'s best end")
        if not top.complete:  # no pruning asked for: the trial's result is the whole corpus at the top
            top = self.meter.measure(top.settings, order=start.order)
            probes.append(top)
        return self._bytes(self._finish(trial, top, probes, answers, minimal=False))

    @staticmethod
    def _bytes(values: float | tuple[float, ...]) -> float:
        """The constrained mode's one value (total bytes)."""
        assert not isinstance(values, tuple)  # constrained mode reports one value
        return values

    def _find(
        self, axis: QualityAxis, settings: EncodingSettings, bar: Target, start: _Start, probes: list[Probe]
    ) -> SearchTrace:
        """Root-find ``bar`` on ``axis`` for ``settings``; every measurement is appended to ``probes``.

        Cheap before dear: the bracket is found on the hardest images alone (a probe stops as soon as the
        bar is out of reach, exact, or, after the images that decide the aggregate, as soon as it would be
        met even if the rest scored their best, an estimate); the answer is then confirmed on the whole
        corpus, and the search goes on with whole-corpus probes above it if the estimate was wrong.
        """
        slope = start.slope if start.slope is not None else prior_slope(axis, bar)
        guess = start.guess if start.guess is not None else prior_position(axis, target_level(bar))
        deciding = self.meter.deciding_images()
        failing: set[int] = set()  # positions proven to fail on the whole corpus

        def margin_at(position: int, estimate: bool) -> float:
            probe = self.meter.measure(
                settings.with_param(axis.param, axis.value(position)),
                order=start.order,
                bar=bar,
                optimistic_after=deciding if estimate else None,
            )
            probes.append(probe)
            margin = search_margin(bar, _quality_for(probe, bar, self))
            if not probe.complete and not probe.optimistic:  # stopped early: certainly failing
                failing.add(position)
                return min(margin, -1e-12)
            if probe.complete and not bar.is_met(probe.quality):
                failing.add(position)
            return margin

        if deciding < len(self.corpus):
            trace = adaptive_search(lambda p: margin_at(p, True), len(axis), guess=guess, slope=slope)
            if trace.answer is None:
                return trace  # the top of the axis fails even on its hardest images: certainly infeasible
            confirmed = margin_at(trace.answer, False)
            if confirmed >= 0.0:
                trace.certified = trace.answer == 0 or (trace.answer - 1) in failing
                return trace
            guess, slope = trace.answer + 1, trace.slope()
            if guess >= len(axis):
                trace.answer, trace.certified = None, False
                return trace

        def whole(position: int) -> float:
            return -1.0 if position in failing else margin_at(position, False)

        return adaptive_search(whole, len(axis), guess=guess, slope=slope)

    def _trace(self, trial: optuna.Trial, settings: EncodingSettings, axis: QualityAxis | None) -> tuple[float, ...]:
        """Pareto mode: the settings' rate-quality curve at a few qualities; reports its best point for the
        target (the smallest that meets it, else the best quality)."""
        start = self._start(trial, settings, axis)
        positions = [0] if axis is None else _spread(len(axis), PARETO_POINTS)
        probes = [
            self.meter.measure(
                settings if axis is None else settings.with_param(axis.param, axis.value(p)), order=start.order
            )
            for p in positions
        ]
        meeting = [p for p in probes if self.target.is_met(p.quality)]
        chosen = min(meeting, key=lambda p: p.total_bytes) if meeting else max(probes, key=lambda p: self._sign(p))
        answers = {str(self.target): probes.index(chosen)} if meeting else {}
        values = self._finish(trial, chosen, probes, answers, minimal=False)
        assert isinstance(values, tuple)
        return values

    def _sign(self, probe: Probe) -> float:
        return probe.quality if self.target.higher_is_better else -probe.quality

    # -- where a trial starts ------------------------------------------------------------------------

    def _start(self, trial: optuna.Trial, settings: EncodingSettings, axis: QualityAxis | None) -> _Start:
        """Start from the closest earlier trial of the same format (its answer and slope), else the warm
        start stored with the study, else the codec's prior; order the images hardest first."""
        import optuna

        try:
            done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        except AttributeError:  # a FixedTrial or a bare ask(): no study history
            done = []
        mine = settings.to_dict()
        similar = [t for t in done if (t.user_attrs.get(ATTR_SETTINGS) or {}).get("codec") == settings.codec]
        start = _Start()
        if similar and axis is not None:
            best = max(similar, key=lambda t: (_similarity(mine, t.user_attrs[ATTR_SETTINGS], axis.param), t.number))
            start = self._from_trial(best, axis)
        elif axis is not None:
            study_attrs = getattr(getattr(trial, "study", None), "user_attrs", {})
            hint = (study_attrs.get(WARM_START_ATTR) or {}).get("starts", {}).get(settings.codec)
            if hint and hint.get("value") is not None:
                start.guess = axis.position(float(hint["value"]))
                start.slope = hint.get("slope")
        source = similar[-1] if similar else (done[-1] if done else None)
        start.order = self._hardest_first(source)
        return start

    def _from_trial(self, trial: optuna.trial.FrozenTrial, axis: QualityAxis) -> _Start:
        start = _Start()
        value = ((trial.user_attrs.get(ATTR_SETTINGS) or {}).get("params") or {}).get(axis.param)
        if value is not None:
            start.guess = axis.position(float(value))
        margins: dict[int, float] = {}
        for probe in trial.user_attrs.get(ATTR_PROBES) or []:
            if probe.get("complete") and probe.get("setting") is not None:
                quality = number_from_json(probe["quality"])
                margins[axis.position(float(probe["setting"]))] = search_margin(self.target, quality)
        if start.guess is not None and margins:
            trace = SearchTrace(len(axis), order=list(margins), margins=margins, answer=start.guess)
            start.slope = trace.slope()
        return start

    def _hardest_first(self, trial: optuna.trial.FrozenTrial | None) -> list[int]:
        """Corpus indices, the images an earlier trial scored worst (relative to the target) first."""
        indices = list(range(len(self.corpus)))
        records = (trial.user_attrs.get(ATTR_IMAGES) or []) if trial is not None else []
        margin = {}
        for record in records:
            try:
                margin[record["name"]] = self.target.margin(image_quality(record, self.target))
            except (KeyError, TypeError, ValueError):
                continue
        names = [item.name for item in self.corpus.items]
        return sorted(indices, key=lambda i: (margin.get(names[i], math.inf), i))

    # -- recording ----------------------------------------------------------------------------------

    def _finish(
        self,
        trial: optuna.Trial,
        probe: Probe,
        probes: list[Probe],
        answers: dict[str, int],
        *,
        minimal: bool,
    ) -> float | tuple[float, ...]:
        """Record ``probe`` as the trial's result (and every probe), and return the trial's values."""
        self._write(trial, probe, probes, answers, complete=True)
        trial.set_user_attr(ATTR_MINIMAL, minimal)
        if self.mode == "constrained":
            return float(probe.total_bytes)
        if self.mode == "tradeoff":
            return self.normalised(probe.quality) - self.tradeoff_lambda * probe.bits_per_pixel
        values: tuple[float, ...] = (float(probe.total_bytes), float(probe.quality))
        return values + ((probe.encode_seconds,) if self.time_objective else ())

    def _record_pruned(self, trial: optuna.Trial, probe: Probe, probes: list[Probe]) -> None:
        self._write(trial, probe, probes, {}, complete=False)
        trial.set_user_attr(ATTR_PRUNED_AFTER, len(probe.images))
        trial.report(float(probe.total_bytes), step=len(probe.images) - 1)

    def _write(
        self, trial: optuna.Trial, probe: Probe, probes: list[Probe], answers: dict[str, int], *, complete: bool
    ) -> None:
        names = [item.name for item in self.corpus.items]
        images = sorted(probe.images, key=lambda r: names.index(r["name"]))
        aggregates = self.meter.aggregates(images)
        trial.set_user_attr(ATTR_SETTINGS, probe.settings.to_dict())
        trial.set_user_attr(ATTR_IMAGES, json_safe(images))
        trial.set_user_attr(ATTR_TOTAL_BYTES, probe.total_bytes)
        trial.set_user_attr(ATTR_BPP, json_number(probe.bits_per_pixel))
        trial.set_user_attr(ATTR_QUALITY, json_number(probe.quality))
        trial.set_user_attr(ATTR_AGGREGATES, json_safe(aggregates))
        for name, value in aggregates.items():  # flat copies: sortable and filterable in optuna-dashboard
            trial.set_user_attr(f"agg_{name}", json_number(value))
        trial.set_user_attr(ATTR_ENCODE_SECONDS, probe.encode_seconds)
        trial.set_user_attr(ATTR_PROBES, [self._probe_record(p) for p in probes])
        trial.set_user_attr(ATTR_ANSWERS, answers)
        constraint = _constraint(self.target, probe.quality if probe.complete else math.nan)
        if not complete:  # pruned trials are infeasible by construction
            constraint = max(constraint, 1e-9)
        trial.set_user_attr(ATTR_CONSTRAINT, constraint)
        if self.mode == "constrained":  # what Optuna's samplers and best_trial read
            trial.set_constraint("quality", constraint)

    def _probe_record(self, probe: Probe) -> dict[str, Any]:
        axis = self.space.quality_axis(probe.settings.codec) if self.solve_quality else None
        record: dict[str, Any] = {
            "setting": probe.settings.params.get(axis.param) if axis is not None else None,
            "complete": probe.complete,
            "optimistic": probe.optimistic,
            "images": len(probe.images),
            "total_bytes": probe.total_bytes,
            "bits_per_pixel": json_number(probe.bits_per_pixel),
            "quality": json_number(probe.quality),
        }
        if probe.complete:
            record["aggregates"] = json_safe(self.meter.aggregates(probe.images))
        return record

    # -- outside trials -------------------------------------------------------------------------------

    def measure_settings(self, settings: EncodingSettings | dict[str, Any]) -> dict[str, Any]:
        """Bytes and aggregate qualities of fixed ``settings`` on the whole corpus, outside any trial
        (baselines such as JPEG q85 to report savings against)."""
        if not isinstance(settings, EncodingSettings):
            settings = EncodingSettings.from_dict(settings)
        probe = self.meter.measure(settings)
        return {
            "settings": settings.to_dict(),
            "total_bytes": probe.total_bytes,
            "bits_per_pixel": json_number(probe.bits_per_pixel),
            "quality": json_number(probe.quality),
            "aggregates": json_safe(self.meter.aggregates(probe.images)),
        }

    def normalised(self, quality: float) -> float:
        """Quality on the [0, 1] scale used by the trade-off objective."""
        return quality if self.target.metric == COMPOSITE else get_spec(self.target.metric).normalise(quality)


def _quality_for(probe: Probe, bar: Target, objective: Objective) -> float:
    """The probe's aggregate of ``bar``'s quantity (the target's is cached on the probe)."""
    if bar.metric == objective.target.metric:
        return probe.quality
    return bar.aggregate([image_quality(r, bar) for r in probe.images], objective.aggregate_by)


def _index_of(probes: list[Probe], axis: QualityAxis, position: int, *, complete: bool) -> int:
    """The latest probe at ``position`` (complete when asked)."""
    value = axis.value(position)
    for i in range(len(probes) - 1, -1, -1):
        if probes[i].settings.params.get(axis.param) == value and (probes[i].complete or not complete):
            return i
    raise LookupError(f"no probe at {axis.param}={value}")  # pragma: no cover - the search measured it


def _setting_position(axis: QualityAxis, probe: Probe) -> int:
    return axis.position(float(probe.settings.params[axis.param]))


def _spread(size: int, count: int) -> list[int]:
    """``count`` positions evenly spread over the upper 90 % of an axis of ``size`` positions, top included."""
    if size <= count:
        return list(range(size))
    low = size // 10
    return sorted({round(low + (size - 1 - low) * k / (count - 1)) for k in range(count)})


def _similarity(mine: dict[str, Any], theirs: dict[str, Any], quality_param: str) -> int:
    """How many settings (quality aside) two trials share."""
    a = {k: v for k, v in (mine.get("params") or {}).items() if k != quality_param}
    b = {k: v for k, v in (theirs.get("params") or {}).items() if k != quality_param}
    same = sum(1 for k in a if b.get(k) == a[k])
    return same + (mine.get("transform") == theirs.get("transform"))


def _constraint(target: Target, quality: float) -> float:
    """Optuna's constraint value: feasible at or below 0. The distance to the bar in the metric's units; an
    infinite quality (PSNR of a lossless encode) is +-1, a NaN (a failed or partial score) infeasible."""
    if math.isnan(quality):
        return 1.0
    margin = target.margin(quality)
    return -margin if math.isfinite(margin) else math.copysign(1.0, -margin)
