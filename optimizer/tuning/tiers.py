"""Choosing preset tiers from a study's recorded trials.

``constrained``
    ``target``: the feasible trial with the fewest total bytes; plus optional extra tiers
    (``{"high": "ssimulacra2:90", "low": "ssimulacra2:70"}``), each the fewest-bytes answer to that tier's
    target among complete trials (a study tuned with those tiers solves each trial's quality for each of
    them; otherwise a trial's answer is its result when that meets the tier). A study tuned with tiers
    prunes against the loosest of them, so a looser tier is not starved of trials (with a tier on another
    metric nothing is pruned).
``tradeoff``
    ``best``: the trial with the best objective value.
``pareto``
    Every Pareto-front point over all measured points (each trial traces its settings' rate-quality curve),
    or the trials numbered, each named by the quality it reached.

Selection is deterministic (ties broken by trial number), so the same study gives the same tiers in any
process. The file format is :mod:`optimizer.tuning.presets`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..codecs import get_codec
from ..errors import PresetError
from .presets import BEST_TIER, DEFAULT_TIER, Expected, Preset, PresetTier
from .records import (
    ATTR_SETTINGS,
    Point,
    complete_trials,
    stored_definition,
    trial_aggregates,
    trial_answer,
    trial_points,
)
from .records import pareto_points as front_points
from .storage import redact_storage, storage_url
from .target import COMPOSITE, Target

if TYPE_CHECKING:
    import optuna

__all__ = ["build_preset"]


def build_preset(
    study: optuna.Study,
    *,
    tiers: Mapping[str, Target | str] | None = None,
    pareto_points: Sequence[int] | None = None,
    storage: str | None = None,
) -> Preset:
    """The preset of a finished study, from its stored definition and recorded trials (see the module docs).

    Args:
        study: An Optuna study created by optimizer.
        tiers: Extra named tiers of a constrained study (``{"high": "ssimulacra2:90"}``).
        pareto_points: Trial numbers to export as tiers (any mode).
        storage: The storage URL to record in the preset (password redacted; default: the study's own).

    Returns:
        The :class:`Preset`.

    Raises:
        PresetError: A tier has no qualifying trial (the message says the best quality reached).
    """
    definition = stored_definition(study)
    if definition is None:
        raise PresetError(f"study {study.study_name!r} was not created by optimizer (no stored definition)")
    goal = definition.target_obj
    widths = tuple(int(w) for w in definition.space.get("widths", []))
    reference_filter = str(definition.space.get("reference_filter", "lanczos"))
    complete = sorted((t for t in complete_trials(study) if ATTR_SETTINGS in t.user_attrs), key=lambda t: t.number)
    name = study.study_name

    chosen: list[tuple[str, Target, Point]] = []
    if pareto_points is not None:
        picked = [p for t in complete if t.number in set(pareto_points) for p in trial_points(t)[:1]]
        missing = sorted(set(pareto_points) - {p.trial for p in picked})
        if missing:
            raise PresetError(
                f"trial(s) {', '.join(map(str, missing))} of study {name!r} are not complete trials with "
                "recorded settings"
            )
        chosen = _named_points(picked, goal)
    elif definition.mode == "constrained":
        extra = {str(k): Target.parse(v) for k, v in (tiers or {}).items()}
        if DEFAULT_TIER in extra:
            raise PresetError(
                f"tier name {DEFAULT_TIER!r} is reserved for the study target ({goal}); name the extra tiers otherwise"
            )
        chosen.append((DEFAULT_TIER, goal, _smallest_meeting(complete, goal, definition.aggregate, name)))
        for tier_name, tier_target in extra.items():
            point = _smallest_meeting(complete, tier_target, definition.aggregate, name, tier_name)
            chosen.append((tier_name, tier_target, point))
    elif tiers:
        raise PresetError(f"named tiers need a constrained study; study {name!r} is {definition.mode}")
    elif definition.mode == "tradeoff":
        if not complete:
            raise PresetError(f"study {name!r} has no complete trial to build a preset from")
        best = min(complete, key=lambda t: (-float(t.values[0]), t.number))
        point = trial_points(best)[0]
        chosen.append((BEST_TIER, _reached_target(goal, point.aggregates.get(goal.metric, math.nan)), point))
    else:
        front = front_points(study, goal)
        if not front:
            raise PresetError(f"study {name!r} has no complete trial to build a preset from")
        chosen = _named_points(front, goal)

    built: list[PresetTier] = []
    versions: dict[str, dict[str, str]] = {}
    for tier_name, tier_target, point in chosen:
        codec = get_codec(point.settings.codec, require_available=False)
        lib = dict(sorted(codec.library_versions().items())) if codec.available() else {}
        versions[point.settings.codec] = lib
        built.append(
            PresetTier(
                name=tier_name,
                target=str(tier_target),
                settings=point.settings,
                expected=_expected(point, tier_target),
                trial_number=point.trial,
                widths=widths,
                reference_filter=reference_filter,
                library_versions=lib,
            )
        )

    default = _default_tier(built, goal, definition.mode)
    evaluator = {k: definition.evaluator.get(k) for k in ("profile", "weights", "metrics", "metric_versions")}
    corpus = {k: definition.corpus.get(k) for k in ("fingerprint", "images", "items", "pixels")}
    url = storage if storage is not None else storage_url(study)
    return Preset(
        tiers=built,
        default=default,
        study={"name": study.study_name, "storage": redact_storage(url) if url else None},
        mode=definition.mode,
        target=str(goal),
        aggregate=definition.aggregate,
        evaluator=evaluator,
        space=dict(definition.space),
        corpus=corpus,
        library_versions=dict(sorted(versions.items())),
    )


def _smallest_meeting(
    trials: list[optuna.trial.FrozenTrial], target: Target, how: str, study_name: str, tier: str | None = None
) -> Point:
    """The fewest-bytes point that answers ``target`` (each trial's answer for it; ties: earlier trial)."""
    label = f"tier {tier!r}: " if tier else ""
    recorded = {m for t in trials for m in trial_aggregates(t)}
    if trials and target.metric not in recorded:
        raise PresetError(
            f"{label}the study did not record {target.metric!r}; recorded metrics: {', '.join(sorted(recorded))}"
        )
    meeting = [p for t in trials if (p := trial_answer(t, target)) is not None and target.is_met(_quality(p, target))]
    if meeting:
        return min(meeting, key=lambda p: (p.total_bytes, p.trial))
    if not trials:
        raise PresetError(f"{label}study {study_name!r} has no complete trial, so no trial met the target {target}")
    sign = 1.0 if target.higher_is_better else -1.0
    scored = [p for t in trials for p in trial_points(t) if not math.isnan(_quality(p, target))]
    if not scored:
        raise PresetError(f"{label}no trial of study {study_name!r} met the target {target} ({how}); none was scored")
    best = max(scored, key=lambda p: (sign * _quality(p, target), -p.trial))
    raise PresetError(
        f"{label}no trial of study {study_name!r} met the target {target} ({how} over the corpus); the best "
        f"{how} {target.metric} reached was {_quality(best, target):.6g} (trial {best.trial}, "
        f"{len(trials)} complete trials): lower the target, widen the search space or run more trials"
    )


def _quality(point: Point, target: Target) -> float:
    """The point's recorded aggregate of ``target``'s metric (NaN when it was not recorded)."""
    return point.aggregates.get(target.metric, math.nan)


def _named_points(points: list[Point], goal: Target) -> list[tuple[str, Target, Point]]:
    """Tiers named by the quality each point reached (``ssim-0.9412``), in increasing bytes."""
    if not points:
        raise PresetError("pareto_points must name at least one trial")
    out: list[tuple[str, Target, Point]] = []
    used: set[str] = set()
    for point in sorted(points, key=lambda p: (p.total_bytes, p.trial)):
        quality = _quality(point, goal)
        if math.isnan(quality):
            raise PresetError(f"trial {point.trial} has no recorded {goal.metric} aggregate")
        name = f"{goal.metric}-{quality:.4g}"
        if name in used:
            name = f"{name}-t{point.trial}"
        used.add(name)
        out.append((name, _reached_target(goal, quality), point))
    return out


def _reached_target(goal: Target, quality: float) -> Target:
    """A target at the quality a trial reached, rounded (4 significant digits) towards the worse side."""
    if not math.isfinite(quality):
        return goal
    if quality == 0:
        return Target(goal.metric, 0.0)
    scale = 10 ** (math.floor(math.log10(abs(quality))) - 3)
    rounded = (math.floor if goal.higher_is_better else math.ceil)(quality / scale) * scale
    value = float(f"{rounded:.6g}")
    if goal.metric == COMPOSITE:
        value = min(max(value, 0.0), 1.0)
    return Target(goal.metric, value)


def _expected(point: Point, target: Target) -> Expected:
    return Expected(
        bits_per_pixel=point.bits_per_pixel,
        total_bytes=point.total_bytes,
        quality=_quality(point, target),
        aggregates=dict(point.aggregates),
    )


def _default_tier(tiers: list[PresetTier], goal: Target, mode: str) -> str:
    """Constrained: ``target``. Otherwise the smallest tier meeting the study target, else the best one."""
    names = [t.name for t in tiers]
    if DEFAULT_TIER in names:
        return DEFAULT_TIER
    meeting = [t for t in tiers if goal.is_met(t.expected.quality)]
    if meeting:
        return min(meeting, key=lambda t: (t.expected.total_bytes, t.trial_number or 0)).name
    if mode == "tradeoff" or len(tiers) == 1:
        return tiers[0].name
    sign = 1.0 if goal.higher_is_better else -1.0
    scored = [t for t in tiers if not math.isnan(t.expected.quality)]
    return max(scored, key=lambda t: sign * t.expected.quality).name if scored else tiers[0].name
