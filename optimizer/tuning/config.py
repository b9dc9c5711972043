"""The options of a tuning study, validated once: what the CLI, the Python API and the worker coordinator
build before creating or resuming a study."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InvalidParameterError
from ..evaluator import Evaluator
from ..statistics import AGGREGATES, Aggregate
from .objective import MODES, Mode
from .space import SearchSpace
from .target import Target

__all__ = ["DEFAULT_TRIALS", "SAMPLERS", "Sampler", "TuneConfig", "as_space"]

Sampler = Literal["tpe", "nsga2", "random"]
SAMPLERS: tuple[Sampler, ...] = ("tpe", "nsga2", "random")
#: The trial budget of ``tune`` and ``optimizer tune`` when none is given.
DEFAULT_TRIALS = 40


@dataclass(frozen=True)
class TuneConfig:
    """Every option that decides what a study optimises and how it searches, validated once.

    The CLI, the Python API and the local worker coordinator all build one of these; the parts that
    define the experiment are stored with the study (:class:`StudyDefinition`), the rest (budget, sampler,
    seed, storage, name, tiers) may change on a resume.

    Attributes:
        space: The search space (a :class:`SearchSpace`, a mapping, or a ``.toml``/``.yaml``/``.json`` file).
        target: The quality bar, ``METRIC:VALUE`` (``ssimulacra2:80``, ``lpips:0.1``, ``composite:0.85``).
        mode: ``constrained`` (smallest bytes meeting the target), ``tradeoff`` or ``pareto``.
        aggregate: How per-image qualities combine over the corpus: ``mean``, ``p10`` or ``worst``.
        profile: Evaluator profile for the composite and the recorded metrics (``default`` when None).
        tradeoff_lambda: Trade-off mode: normalised quality lost per bit per pixel.
        time_objective: Pareto mode: encode time as a third objective.
        prune: Stop a constrained trial as soon as its target is out of reach.
        tiers: Extra preset tiers of a constrained study, ``{"high": "ssimulacra2:90"}``.
        n_trials: The study's budget of finished (complete or pruned) trials.
        sampler: ``tpe``, ``nsga2`` (pareto mode) or ``random``.
        seed: Seed for a reproducible search.
        storage: An Optuna storage URL (None: ``sqlite:///studies/NAME.db``).
        study_name: The study's name (None: derived from the corpus and the space).
        warm_start: Another study to learn from (its best settings are tried first and its quality answers
            start each format's search), by name.
        warm_start_storage: That study's storage URL (None: ``sqlite:///studies/NAME.db``).
    """

    space: SearchSpace = field(default_factory=SearchSpace)
    target: Target = field(default_factory=lambda: Target.parse("ssimulacra2:80"))
    mode: Mode = "constrained"
    aggregate: Aggregate = "p10"
    profile: str | None = None
    tradeoff_lambda: float = 0.05
    time_objective: bool = False
    prune: bool = True
    tiers: Mapping[str, Target] = field(default_factory=dict)
    n_trials: int = DEFAULT_TRIALS
    sampler: Sampler = "tpe"
    seed: int | None = None
    storage: str | None = None
    study_name: str | None = None
    warm_start: str | None = None
    warm_start_storage: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", as_space(self.space))
        object.__setattr__(self, "target", Target.parse(self.target))
        object.__setattr__(self, "tiers", {str(k): Target.parse(v) for k, v in (self.tiers or {}).items()})
        if self.mode not in MODES:
            raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.aggregate not in AGGREGATES:
            raise InvalidParameterError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise InvalidParameterError(f"n_trials must be an integer >= 1, got {self.n_trials!r}")
        if self.sampler not in SAMPLERS:
            raise InvalidParameterError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.sampler == "nsga2" and self.mode != "pareto":
            raise InvalidParameterError("the nsga2 sampler is for the pareto mode; use tpe otherwise")
        if not math.isfinite(self.tradeoff_lambda) or self.tradeoff_lambda < 0:
            raise InvalidParameterError(f"tradeoff lambda must be a number >= 0, got {self.tradeoff_lambda}")

    @property
    def prune_target(self) -> Target | None:
        """The bar below which a trial may be pruned: the loosest of the study target and the extra tiers.

        Extra tiers are chosen from complete trials, so a trial pruned for missing the study target could
        have served a looser tier. With a tier on another metric nothing can be pruned safely (None).
        """
        if not self.prune:
            return None
        targets = [self.target, *self.tiers.values()]
        if any(t.metric != self.target.metric for t in targets):
            return None
        return min(targets, key=lambda t: t.value if t.higher_is_better else -t.value)

    def evaluator(self) -> Evaluator:
        """The evaluator of this configuration: the profile's metrics plus the target's."""
        return Evaluator(profile=self.profile or "default", metrics=self.target.metrics_needed or None)


def as_space(space: SearchSpace | Mapping[str, Any] | str | Path | None) -> SearchSpace:
    if space is None:
        return SearchSpace()
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return SearchSpace.from_mapping(space)
    return SearchSpace.from_file(space)
