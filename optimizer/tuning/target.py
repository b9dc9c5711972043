"""Quality targets (``METRIC:VALUE``) and how per-image qualities aggregate over a corpus.

The same syntax is used by ``tune``, ``compress``, ``apply --verify`` and the Python API:
``ssimulacra2:80`` (a score, higher is better), ``lpips:0.1`` (a distance, lower is better),
``composite:0.9`` (the evaluator's composite). The direction always comes from the metric registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import InvalidParameterError
from ..metrics.registry import get_spec

if TYPE_CHECKING:
    from ..evaluator import EvaluationResult

__all__ = ["AGGREGATES", "Aggregate", "COMPOSITE", "Target", "aggregate"]

COMPOSITE = "composite"
Aggregate = Literal["mean", "p10", "worst"]
AGGREGATES: tuple[str, ...] = ("mean", "p10", "worst")


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

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "value": self.value, "higher_is_better": self.higher_is_better}


def aggregate(values: Sequence[float], how: str, higher_is_better: bool) -> float:
    """Aggregate per-image qualities: ``mean``, ``p10`` (the 10 % worst edge) or ``worst``.

    For a distance (lower is better) ``p10`` is the 90th percentile and ``worst`` the maximum, so the
    aggregate always describes the hard images.
    """
    import numpy as np

    if how not in AGGREGATES:
        raise InvalidParameterError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    if len(values) == 0:
        raise InvalidParameterError("cannot aggregate an empty list of qualities")
    arr = np.asarray(values, dtype=np.float64)
    if np.isnan(arr).any():
        return math.nan
    if how == "mean":
        return float(arr.mean())
    if how == "worst":
        return float(arr.min() if higher_is_better else arr.max())
    q = 10.0 if higher_is_better else 90.0
    if np.isfinite(arr).all():
        return float(np.percentile(arr, q))
    # numpy interpolates between two equal infinities as inf - inf = NaN (PSNR of lossless encodes):
    # interpolate by hand, keeping a shared infinity as it is.
    ordered = np.sort(arr)
    pos = (len(ordered) - 1) * q / 100.0
    i = math.floor(pos)
    lo, hi = ordered[i], ordered[min(i + 1, len(ordered) - 1)]
    return float(lo if pos == i or lo == hi else lo + (hi - lo) * (pos - i))
