"""Quality targets (``METRIC:VALUE``) and how per-image qualities aggregate over a corpus.

The same syntax is used by ``tune``, ``compress``, ``apply --verify`` and the Python API:
``ssimulacra2:80`` (a score, higher is better), ``lpips:0.1`` (a distance, lower is better),
``composite:0.9`` (the evaluator's composite). The direction always comes from the metric registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidParameterError
from ..metrics.registry import get_spec
from ..statistics import AGGREGATES, Aggregate, check_statistic, statistic

if TYPE_CHECKING:
    from ..evaluator import EvaluationResult

__all__ = ["AGGREGATES", "Aggregate", "COMPOSITE", "Target"]

COMPOSITE = "composite"


@dataclass(frozen=True)
class Target:
    """A quality bar on one metric or on the composite."""

    metric: str
    value: float

    def __post_init__(self) -> None:
        if self.metric != COMPOSITE:
            get_spec(self.metric)  # UnknownNameError lists the metrics
        if not math.isfinite(self.value):
            raise InvalidParameterError(f"target value must be finite, got {self.value}")
        if self.metric == COMPOSITE and not 0.0 <= self.value <= 1.0:
            raise InvalidParameterError(f"composite targets lie in [0, 1], got {self.value}")

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """``"ssimulacra2:80"`` -> ``Target("ssimulacra2", 80.0)``."""
        if isinstance(text, Target):
            return text
        metric, sep, value = str(text).partition(":")
        if not sep or not metric.strip() or not value.strip():
            raise InvalidParameterError(
                f"targets are written METRIC:VALUE (e.g. ssimulacra2:80, lpips:0.1, composite:0.9), got {text!r}"
            )
        try:
            number = float(value)
        except ValueError:
            raise InvalidParameterError(f"target value must be a number, got {value!r} in {text!r}") from None
        return cls(metric.strip().lower(), number)

    def __str__(self) -> str:
        return f"{self.metric}:{self.value:g}"

    @property
    def higher_is_better(self) -> bool:
        return True if self.metric == COMPOSITE else get_spec(self.metric).higher_is_better

    @property
    def best_value(self) -> float:
        """The best value the measured quantity can take (1 for the composite)."""
        return 1.0 if self.metric == COMPOSITE else get_spec(self.metric).best_value

    @property
    def metrics_needed(self) -> list[str]:
        """Metric names the evaluator must compute for this target (none extra for the composite)."""
        return [] if self.metric == COMPOSITE else [self.metric]

    def check_computed(self, metric_names: Sequence[str]) -> None:
        """Refuse an evaluator whose metrics (``metric_names``) leave this target unmeasured."""
        if self.metric != COMPOSITE and self.metric not in metric_names:
            raise InvalidParameterError(
                f"the target metric {self.metric!r} is not computed by the evaluator ({', '.join(metric_names)})"
            )

    def value_of(self, result: EvaluationResult) -> float:
        """The measured quantity of one evaluation."""
        return result.composite if self.metric == COMPOSITE else result.scores[self.metric]

    def is_met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.value if self.higher_is_better else value <= self.value

    def margin(self, value: float) -> float:
        """Signed distance to the bar, positive when met (in the metric's units)."""
        return value - self.value if self.higher_is_better else self.value - value

    def aggregate(self, values: Sequence[float], how: str) -> float:
        """``how`` (one of :data:`AGGREGATES`) over per-image values of this target's quantity, in its
        direction (:mod:`optimizer.statistics`)."""
        check_statistic(how, AGGREGATES)
        return statistic(values, how, higher_is_better=self.higher_is_better)

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "value": self.value, "higher_is_better": self.higher_is_better}
