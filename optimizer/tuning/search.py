"""Which settings a study tries next, when the objective solves each trial's quality axis itself.

With the quality found inside each trial (:mod:`optimizer.tuning.objective`), what is left to search is a
small discrete space: format, chroma subsampling, speed or effort, resize filter, sharpening. It is
searched in an order that puts likely answers first:

1. settings carried over from another study (``--warm-start``), then each format at its usual settings
   (:meth:`SearchSpace.usual_params`), in the space's format order;
2. the neighbours of the best trials so far, best first: every other choice of a categorical parameter,
   the adjacent values of a numeric one (seeded order among the neighbours of one trial);
3. every remaining combination, in a seeded random order.

A combination is tried once: trials that exist (running, waiting, finished or failed) are never proposed
again. When every combination has been tried the space is *exhausted* and the study can stop: more trials
would only repeat measurements.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .records import (
    ATTR_QUALITY,
    ATTR_TOTAL_BYTES,
    WARM_START_ATTR,
    StudyDefinition,
    complete_trials,
    is_feasible,
    pareto_points,
    trial_number,
)
from .space import SearchSpace
from .target import Target

if TYPE_CHECKING:
    import optuna

__all__ = ["SettingsSearch", "enqueue_next", "params_key", "ranked_params", "ranked_trials", "settings_search"]

#: Above this many combinations the remaining ones are drawn at random instead of enumerated.
_ENUMERATE_LIMIT = 50_000


def params_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of a combination (floats rounded, so 0.1 + 0.2 equals 0.3)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


class SettingsSearch:
    """The order in which a study tries combinations of its non-quality settings (see the module doc)."""

    def __init__(self, space: SearchSpace, *, seed: int | None = None, first: Sequence[Mapping[str, Any]] = ()) -> None:
        self.space = space
        self.grid = space.grid(solve_quality=True)
        self.seed = seed
        formats = self.grid.get("format", list(space.formats))
        self._formats = [str(f) for f in formats]
        self._first = [dict(p) for p in first if self._valid(p)]
        self._first += [space.usual_params(fmt) for fmt in self._formats]

    # -- combinations ------------------------------------------------------------------------------

    def _axes(self, fmt: str) -> list[str]:
        """The grid axes that apply to a combination of format ``fmt`` (its own parameters, the transform)."""
        return [n for n in self.grid if n != "format" and ("." not in n or n.split(".", 1)[0] == fmt)]

    def _valid(self, params: Mapping[str, Any]) -> bool:
        fmt = str(params.get("format", self._formats[0] if self._formats else ""))
        if "format" in self.grid and params.get("format") not in self.grid["format"]:
            return False
        axes = self._axes(fmt)
        extra = set(params) - set(axes) - {"format"}
        return not extra and all(name in params and params[name] in self.grid[name] for name in axes)

    def accepts(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` is a combination of this space (warm-start settings from another study may
        name formats or values this one does not search)."""
        return self._valid(params)

    def size(self) -> int:
        """How many combinations the space holds."""
        return sum(math.prod(len(self.grid[a]) for a in self._axes(fmt)) for fmt in self._formats)

    def _all(self) -> Iterator[dict[str, Any]]:
        for fmt in self._formats:
            axes = self._axes(fmt)
            for values in itertools.product(*(self.grid[a] for a in axes)):
                combo = dict(zip(axes, values))
                if "format" in self.grid:
                    combo["format"] = fmt
                yield combo

    def _random(self, rng: random.Random) -> dict[str, Any]:
        fmt = rng.choice(self._formats)
        combo = {a: rng.choice(self.grid[a]) for a in self._axes(fmt)}
        if "format" in self.grid:
            combo["format"] = fmt
        return combo

    def neighbours(self, params: Mapping[str, Any], rng: random.Random | None = None) -> list[dict[str, Any]]:
        """Combinations that differ from ``params`` in one parameter: every other choice of a categorical
        one, the adjacent values of a numeric one (shuffled by ``rng`` when given)."""
        fmt = str(params.get("format", self._formats[0]))
        out: list[dict[str, Any]] = []
        for axis in self._axes(fmt):
            values = self.grid[axis]
            if axis not in params or params[axis] not in values:
                continue
            i = values.index(params[axis])
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            others = [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)] if numeric else values
            for value in others:
                if value != params[axis]:
                    out.append({**params, axis: value})
        if rng is not None:
            rng.shuffle(out)
        return out

    # -- the next combination ----------------------------------------------------------------------

    def next_params(
        self, taken: Iterable[Mapping[str, Any]], ranked: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any] | None:
        """The next combination to try, or None when every combination has been tried.

        Args:
            taken: The params of every trial the study holds (any state).
            ranked: The params of the trials worth exploring around, best first.

        Returns:
            Optuna params for ``study.enqueue_trial``, or None (the space is exhausted).
        """
        seen = {params_key(p) for p in taken}
        for params in self._first:
            if params_key(params) not in seen:
                return dict(params)
        rng = random.Random(self.seed)
        for base in ranked:
            for params in self.neighbours(base, rng):
                if params_key(params) not in seen:
                    return params
        if self.size() <= _ENUMERATE_LIMIT:
            remaining = [c for c in self._all() if params_key(c) not in seen]
            return rng.choice(remaining) if remaining else None
        for _ in range(10_000):
            combo = self._random(rng)
            if params_key(combo) not in seen:
                return combo
        return None


def ranked_params(study: optuna.Study, mode: str, target: Target) -> list[dict[str, Any]]:
    """The params of a study's complete trials, the ones worth exploring around first (:func:`ranked_trials`)."""
    return [dict(t.params) for t in ranked_trials(study, mode, target)]


def ranked_trials(study: optuna.Study, mode: str, target: Target) -> list[optuna.trial.FrozenTrial]:
    """A study's complete trials, best first.

    Constrained: the trials that met the target by increasing bytes, then the others by how close they
    came. Pareto: trials with a point on the front by increasing bytes, then the rest by bytes.
    """
    trials = complete_trials(study)
    if mode == "pareto":
        on_front = {p.trial for p in pareto_points(study, target)}
        order = sorted(trials, key=lambda t: (t.number not in on_front, trial_number(t, ATTR_TOTAL_BYTES), t.number))
    else:
        sign = 1.0 if target.higher_is_better else -1.0

        def key(t: optuna.trial.FrozenTrial) -> tuple[bool, float, int]:
            if is_feasible(t):
                return (False, trial_number(t, ATTR_TOTAL_BYTES), t.number)
            quality = trial_number(t, ATTR_QUALITY)
            return (True, -sign * quality if not math.isnan(quality) else math.inf, t.number)

        order = sorted(trials, key=key)
    return order


def settings_search(study: optuna.Study, definition: StudyDefinition, seed: int | None) -> SettingsSearch | None:
    """The search a study's trials follow (None in the trade-off mode, where the sampler chooses the
    quality too); settings carried over from a warm start go first."""
    if definition.mode not in ("constrained", "pareto"):
        return None
    hints = study.user_attrs.get(WARM_START_ATTR) or {}
    return SettingsSearch(definition.space_obj, seed=seed, first=hints.get("first") or ())


def enqueue_next(study: optuna.Study, search: SettingsSearch, definition: StudyDefinition, count: int = 1) -> int:
    """Queue up to ``count`` untried combinations as the study's next trials; returns how many were queued
    (0: the space is exhausted)."""
    taken = [t.params for t in study.get_trials(deepcopy=False)]
    ranked = ranked_params(study, definition.mode, definition.target_obj)
    queued = 0
    for _ in range(count):
        params = search.next_params(taken, ranked)
        if params is None:
            break
        study.enqueue_trial(params, skip_if_exists=True)
        taken.append(params)
        queued += 1
    return queued
