"""What a study stores: its definition, the attribute names on trials, and how to read trials back.

A study carries, as Optuna user attributes, its :class:`StudyDefinition` (what it optimises: compared when
resuming or joining), the pruning bar workers read, and the measured baseline. Every trial carries its
settings, per-image records, bytes, bits per pixel and aggregates (:data:`ATTR_SETTINGS` and friends).
Numbers follow the package's JSON policy (:mod:`optimizer.jsonio`): a non-finite float is stored as the
string ``"inf"``, ``"-inf"`` or ``"nan"``; the readers here turn them back into floats, so every module
reads trials the same way.

What a storage holds may be damaged or written by something else: the readers check the shape of what
they read and raise :class:`~optimizer.errors.StudyStorageError` naming the record (the storage layer adds
the file), and :func:`check_records` reads every record of a study once, when it is opened, so that the
code after it can trust what it reads.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..codecs import get_codec
from ..errors import OptimizerError, StudyStorageError
from ..jsonio import number_from_json
from .space import SearchSpace
from .target import Target

if TYPE_CHECKING:
    import optuna

    from ..evaluator import Evaluator
    from .settings import EncodingSettings

__all__ = [
    "ATTR_AGGREGATES",
    "ATTR_ANSWERS",
    "ATTR_MINIMAL",
    "ATTR_PROBES",
    "TIERS_ATTR",
    "WARM_START_ATTR",
    "ATTR_BPP",
    "ATTR_CONSTRAINT",
    "ATTR_ENCODE_SECONDS",
    "ATTR_ERROR",
    "ATTR_IMAGES",
    "ATTR_PRUNED_AFTER",
    "ATTR_QUALITY",
    "ATTR_SETTINGS",
    "ATTR_SURPLUS",
    "ATTR_TOTAL_BYTES",
    "ATTR_WORKER",
    "BASELINE_ATTR",
    "DEFINITION_ATTR",
    "PRUNE_ATTR",
    "Point",
    "StudyCounts",
    "StudyDefinition",
    "check_records",
    "check_trial",
    "complete_trials",
    "feasible_trials",
    "finished_trials",
    "is_feasible",
    "pareto_points",
    "pareto_trials",
    "trial_answer",
    "stored_definition",
    "study_counts",
    "trial_aggregate",
    "trial_aggregates",
    "trial_number",
    "trial_points",
    "trial_settings",
]

#: study attribute holding the :class:`StudyDefinition`
DEFINITION_ATTR = "optimizer_definition"
#: study attribute holding the measured baseline (JPEG quality 85) the savings are stated against
BASELINE_ATTR = "optimizer_baseline"
#: study attribute holding the target below which trials are pruned (None: no pruning)
PRUNE_ATTR = "optimizer_prune_target"
#: study attribute holding the extra preset tiers whose answers each trial also finds (target strings)
TIERS_ATTR = "optimizer_tier_targets"
#: study attribute holding what another study taught this one: settings to try first, and per format where
#: its quality answers were (``{"source": ..., "first": [params...], "starts": {codec: {"value", "slope"}}}``)
WARM_START_ATTR = "optimizer_warm_start"

#: trial user attributes written by the objective
ATTR_IMAGES = "images"
ATTR_TOTAL_BYTES = "total_bytes"
ATTR_BPP = "bits_per_pixel"
ATTR_QUALITY = "quality"
ATTR_AGGREGATES = "aggregates"
ATTR_SETTINGS = "settings"
ATTR_ENCODE_SECONDS = "encode_seconds"
ATTR_CONSTRAINT = "constraint"
ATTR_PRUNED_AFTER = "pruned_after"
ATTR_ERROR = "error"
#: every measurement of a trial: quality setting, completeness, bytes, aggregate (and all aggregates)
ATTR_PROBES = "probes"
#: the probe index that answers each target (the study target and any extra tier), by target string
ATTR_ANSWERS = "answers"
#: whether the answer is the smallest passing setting (the one below was measured and failed)
ATTR_MINIMAL = "minimal"
#: trial user attribute naming the worker (host:pid) that ran a trial
ATTR_WORKER = "worker"
#: trial user attribute set on a trial that found the budget already taken by other workers
ATTR_SURPLUS = "surplus"

#: the parts of a definition that must match for trials to be comparable
_COMPARED = ("space", "target", "mode", "aggregate", "tradeoff_lambda", "time_objective", "evaluator", "corpus")
_REQUIRED = _COMPARED
#: the type each stored part must have, and the rule in words
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "space": ((Mapping,), "a mapping"),
    "target": ((str,), "a METRIC:VALUE string"),
    "mode": ((str,), "a string"),
    "aggregate": ((str,), "a string"),
    "tradeoff_lambda": ((numbers.Real,), "a number"),
    "time_objective": ((bool,), "true or false"),
    "evaluator": ((Mapping,), "a mapping"),
    "corpus": ((Mapping,), "a mapping"),
    "n_trials": ((numbers.Integral,), "a whole number"),
    "created": ((str,), "a date string"),
    "optimizer_version": ((str,), "a string"),
    "library_versions": ((Mapping,), "a mapping"),
}


@dataclass(frozen=True)
class StudyDefinition:
    """What a study optimises; stored with the study and compared when resuming or joining."""

    space: dict[str, Any]
    target: str
    mode: str
    aggregate: str
    tradeoff_lambda: float
    time_objective: bool
    evaluator: dict[str, Any]
    corpus: dict[str, Any]
    n_trials: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    optimizer_version: str = __version__
    library_versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "target": self.target,
            "mode": self.mode,
            "aggregate": self.aggregate,
            "tradeoff_lambda": self.tradeoff_lambda,
            "time_objective": self.time_objective,
            "evaluator": self.evaluator,
            "corpus": self.corpus,
            "n_trials": self.n_trials,
            "created": self.created,
            "optimizer_version": self.optimizer_version,
            "library_versions": self.library_versions,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyDefinition:
        """The definition as a study stores it; :class:`StudyStorageError` naming the part that is missing or
        of the wrong type, or the space or target that cannot be parsed."""
        if not isinstance(data, Mapping):
            raise StudyStorageError(f"the stored study definition is not a mapping: {_short(data)}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise StudyStorageError(f"the stored study definition lacks {', '.join(missing)}")
        for key, (kinds, rule) in _KINDS.items():
            value = data.get(key)
            if key not in data or (value is None and key == "n_trials"):
                continue
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise StudyStorageError(f"the stored study definition's {key} must be {rule}, got {_short(value)}")
        definition = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        for part, parse in (("space", lambda: definition.space_obj), ("target", lambda: definition.target_obj)):
            try:
                parse()
            except OptimizerError as exc:
                raise StudyStorageError(f"the stored study definition's {part} cannot be read: {exc}") from None
        return definition

    def comparable(self) -> dict[str, Any]:
        """The parts that must match for trials to be comparable (names of corpus files excluded)."""
        data = self.to_dict()
        out = {k: data[k] for k in _COMPARED}
        out["corpus"] = {"fingerprint": self.corpus.get("fingerprint"), "items": self.corpus.get("items")}
        out["evaluator"] = {k: self.evaluator.get(k) for k in ("weights", "metrics", "metric_versions")}
        return out

    def differences(self, other: StudyDefinition) -> list[str]:
        """Names of the compared parts that differ between ``self`` and ``other``."""
        mine, theirs = self.comparable(), other.comparable()
        return [k for k in _COMPARED if mine[k] != theirs[k]]

    @property
    def space_obj(self) -> SearchSpace:
        return SearchSpace.from_mapping(self.space)

    @property
    def target_obj(self) -> Target:
        return Target.parse(self.target)

    def evaluator_obj(self, device: str | None = None) -> Evaluator:
        from ..evaluator import Evaluator

        return Evaluator(weights=self.evaluator["weights"], metrics=self.evaluator["metrics"], device=device)


def stored_definition(study: optuna.Study) -> StudyDefinition | None:
    """The definition stored with ``study`` (``None`` for a study optimizer did not create);
    :class:`StudyStorageError` when what is stored is not a definition."""
    stored = study.user_attrs.get(DEFINITION_ATTR)
    return StudyDefinition.from_dict(stored) if stored is not None else None


def check_records(study: optuna.Study) -> StudyDefinition | None:
    """Read every record of ``study`` once: its definition, the study attributes workers and reports read,
    and every trial's attributes (:func:`check_trial`).

    Returns:
        The stored definition (``None`` for a study optimizer did not create).

    Raises:
        StudyStorageError: A record of the wrong shape, naming it (the caller adds where the study lives).
    """
    definition = stored_definition(study)
    attrs = study.user_attrs
    tiers = attrs.get(TIERS_ATTR) or []
    if not isinstance(tiers, list):
        raise StudyStorageError(f"the study's {TIERS_ATTR} must be a list of targets, got {_short(tiers)}")
    for text in [attrs.get(PRUNE_ATTR), *tiers]:
        if text is None:
            continue
        if not isinstance(text, str):
            raise StudyStorageError(f"the study's stored targets must be METRIC:VALUE strings, got {_short(text)}")
        try:
            Target.parse(text)
        except OptimizerError as exc:
            raise StudyStorageError(f"the study's stored target {text!r} cannot be read: {exc}") from None
    for name in (BASELINE_ATTR, WARM_START_ATTR):
        if not isinstance(attrs.get(name) or {}, Mapping):
            raise StudyStorageError(f"the study's {name} must be a mapping, got {_short(attrs.get(name))}")
    for trial in study.get_trials(deepcopy=False):
        check_trial(trial)
    return definition


def check_trial(trial: optuna.trial.FrozenTrial) -> None:
    """Read every attribute the objective records on a trial through the readers here (settings, bytes,
    quality, aggregates, probes, answers, per-image records); :class:`StudyStorageError` names the first
    one of the wrong shape."""
    trial_points(trial)
    for name in (ATTR_BPP, ATTR_QUALITY, ATTR_CONSTRAINT, ATTR_ENCODE_SECONDS):
        trial_number(trial, name)
    answers = trial.user_attrs.get(ATTR_ANSWERS)
    if answers is not None and not (isinstance(answers, Mapping) and all(_is_count(v) for v in answers.values())):
        raise _bad(trial, ATTR_ANSWERS, answers, "a mapping of target to probe index")
    images = trial.user_attrs.get(ATTR_IMAGES)
    if images is not None and not (
        isinstance(images, list) and all(isinstance(r, Mapping) and isinstance(r.get("name"), str) for r in images)
    ):
        raise _bad(trial, ATTR_IMAGES, images, "a list of per-image records")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(trial: optuna.trial.FrozenTrial, name: str, value: Any, rule: str) -> StudyStorageError:
    return StudyStorageError(f"trial {trial.number}: its {name!r} must be {rule}, got {_short(value)}")


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and int(value) >= 0


def _number(trial: optuna.trial.FrozenTrial, name: str, value: Any) -> float:
    try:
        return number_from_json(value)
    except (TypeError, ValueError):
        raise _bad(trial, name, value, "a number") from None


def _mapping(trial: optuna.trial.FrozenTrial, name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(trial, name, value, "a mapping")
    return value


# -- reading trials ---------------------------------------------------------------------------------------


def trial_number(trial: optuna.trial.FrozenTrial, name: str, default: float = math.nan) -> float:
    """A numeric user attribute of ``trial`` as a float (``default`` when absent)."""
    value = trial.user_attrs.get(name)
    return default if value is None else _number(trial, name, value)


def trial_aggregates(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """Every aggregate the trial recorded (each metric and the composite), as floats."""
    recorded = _mapping(trial, ATTR_AGGREGATES, trial.user_attrs.get(ATTR_AGGREGATES))
    return {str(k): _number(trial, f"{ATTR_AGGREGATES}.{k}", v) for k, v in recorded.items() if v is not None}


def trial_aggregate(trial: optuna.trial.FrozenTrial, metric: str) -> float:
    """The trial's recorded aggregate of ``metric`` (or ``"composite"``); NaN when it was not recorded."""
    return trial_aggregates(trial).get(metric, math.nan)


def trial_settings(trial: optuna.trial.FrozenTrial) -> EncodingSettings | None:
    """The encoding settings a trial measured (``None`` for a trial that failed before sampling)."""
    from .settings import EncodingSettings

    stored = trial.user_attrs.get(ATTR_SETTINGS)
    if stored is None:
        return None
    if not isinstance(stored, Mapping):
        raise _bad(trial, ATTR_SETTINGS, stored, "a mapping")
    try:
        settings = EncodingSettings.from_dict(stored)
        get_codec(settings.codec, require_available=False).validate_params(settings.params)
    except (OptimizerError, KeyError, TypeError, ValueError) as exc:
        raise StudyStorageError(f"trial {trial.number}: its settings cannot be read: {exc}") from None
    return settings


@dataclass(frozen=True)
class Point:
    """One measured setting of a trial: its answer, or another complete probe on its quality axis."""

    trial: int
    settings: EncodingSettings
    total_bytes: int
    bits_per_pixel: float
    quality: float
    aggregates: Mapping[str, float]
    answer: bool = False


def trial_points(trial: optuna.trial.FrozenTrial) -> list[Point]:
    """Every complete measurement a trial recorded: its answer first, then its other complete probes
    (trials from before probes were recorded give their answer alone)."""
    settings = trial_settings(trial)
    if settings is None or ATTR_TOTAL_BYTES not in trial.user_attrs:
        return []
    answer = Point(
        trial.number,
        settings,
        _bytes(trial, ATTR_TOTAL_BYTES, trial.user_attrs[ATTR_TOTAL_BYTES]),
        trial_number(trial, ATTR_BPP),
        trial_number(trial, ATTR_QUALITY),
        trial_aggregates(trial),
        answer=True,
    )
    points = [answer]
    param = get_codec(settings.codec, require_available=False).quality_param
    for i, probe in enumerate(_probes(trial)):
        value = probe.get("setting")
        if not probe.get("complete") or value is None or param is None or value == settings.params.get(param):
            continue
        where = f"{ATTR_PROBES}[{i}]"
        try:
            at = settings.with_param(param, value)
        except (OptimizerError, TypeError, ValueError):
            raise _bad(trial, f"{where}.setting", value, f"a valid {param}") from None
        points.append(
            Point(
                trial.number,
                at,
                _bytes(trial, f"{where}.total_bytes", probe.get("total_bytes")),
                _number(trial, f"{where}.bits_per_pixel", probe.get("bits_per_pixel")),
                _number(trial, f"{where}.quality", probe.get("quality")),
                {
                    str(k): _number(trial, f"{where}.aggregates.{k}", v)
                    for k, v in _mapping(trial, f"{where}.aggregates", probe.get("aggregates")).items()
                },
            )
        )
    return points


def _bytes(trial: optuna.trial.FrozenTrial, name: str, value: Any) -> int:
    if not _is_count(value):
        raise _bad(trial, name, value, "a whole number of bytes")
    return int(value)


def _probes(trial: optuna.trial.FrozenTrial) -> list[Mapping[str, Any]]:
    probes = trial.user_attrs.get(ATTR_PROBES) or []
    if not isinstance(probes, list) or not all(isinstance(p, Mapping) for p in probes):
        raise _bad(trial, ATTR_PROBES, probes, "a list of probe records")
    return probes


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """A complete trial whose aggregate quality met the target (constraint <= 0)."""
    return trial.state.name == "COMPLETE" and trial_number(trial, ATTR_CONSTRAINT, 1.0) <= 0.0


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete and pruned trials (the ones that count towards the budget)."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials (not pruned, failed or running), in trial order."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials whose aggregate quality meets the study target."""
    return [t for t in complete_trials(study) if is_feasible(t)]


def pareto_trials(study: optuna.Study, target: Target) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated complete trials on (total bytes, aggregate quality in ``target``'s direction), by
    increasing bytes."""
    done = [t for t in complete_trials(study) if ATTR_QUALITY in t.user_attrs]
    sign = 1.0 if target.higher_is_better else -1.0
    points = sorted(done, key=lambda t: (trial_number(t, ATTR_TOTAL_BYTES), -sign * trial_number(t, ATTR_QUALITY)))
    front, best = [], -math.inf
    for t in points:
        q = sign * trial_number(t, ATTR_QUALITY)
        if q > best:
            front.append(t)
            best = q
    return front


def pareto_points(study: optuna.Study, target: Target) -> list[Point]:
    """Non-dominated points of complete trials (answers and complete probes) on (total bytes, aggregate
    quality in ``target``'s direction), by increasing bytes; ties go to the earlier trial."""
    sign = 1.0 if target.higher_is_better else -1.0
    every = [p for t in complete_trials(study) for p in trial_points(t) if not math.isnan(p.quality)]
    every.sort(key=lambda p: (p.total_bytes, -sign * p.quality, p.trial, not p.answer))
    front: list[Point] = []
    best = -math.inf
    for point in every:
        if sign * point.quality > best:
            front.append(point)
            best = sign * point.quality
    return front


def trial_answer(trial: optuna.trial.FrozenTrial, target: Target | str) -> Point | None:
    """The point of ``trial`` that answers ``target``: its recorded answer for that target (the smallest
    quality of its settings meeting it), or, for trials without recorded answers, its result when it meets
    the target."""
    points = trial_points(trial)
    if not points:
        return None
    answers = trial.user_attrs.get(ATTR_ANSWERS)
    goal = Target.parse(target)
    if answers is not None and not isinstance(answers, Mapping):
        raise _bad(trial, ATTR_ANSWERS, answers, "a mapping of target to probe index")
    if answers is None:
        main = points[0]
        quality = main.aggregates.get(goal.metric, math.nan)
        return main if goal.is_met(quality) else None
    index = answers.get(str(goal))
    if index is None:  # a target the trial did not solve: its smallest measured point that meets it
        meeting = [p for p in points if goal.is_met(p.aggregates.get(goal.metric, math.nan))]
        return min(meeting, key=lambda p: p.total_bytes) if meeting else None
    probes = _probes(trial)
    if not _is_count(index):
        raise _bad(trial, f"{ATTR_ANSWERS}.{goal}", index, "a probe index")
    setting = probes[index].get("setting") if index < len(probes) else None
    for point in points:
        param = get_codec(point.settings.codec, require_available=False).quality_param
        if param is None or point.settings.params.get(param) == setting:
            return point
    return None


@dataclass(frozen=True)
class StudyCounts:
    """Trials of a study by state (``finished`` = complete + pruned: what the budget counts)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def study_counts(study: optuna.Study) -> StudyCounts:
    """How many trials of ``study`` are in each state."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return StudyCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )
