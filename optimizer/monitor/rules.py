"""Alert rules: per-observation thresholds and rolling-mean drift, both reading the metric's direction.

A distance (LPIPS, DISTS) breaches a threshold when it *rises above* it, a score (SSIMULACRA 2, SSIM, the
composite) when it *falls below* it; drift is measured in the direction of worse quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import InvalidParameterError
from ..metrics.registry import get_spec

__all__ = [
    "COMPOSITE",
    "RANK",
    "SEVERITIES",
    "DriftRule",
    "Severity",
    "Threshold",
    "check_metric",
    "check_number",
    "higher_is_better",
]

#: The name under which the composite score is tracked beside the registered metrics.
COMPOSITE = "composite"
Severity = Literal["warning", "critical"]
SEVERITIES: tuple[str, ...] = ("warning", "critical")
#: Severities in order (no alert ranks lowest), for comparisons.
RANK: dict[str | None, int] = {None: 0, "warning": 1, "critical": 2}


def higher_is_better(metric: str) -> bool:
    """The direction of a metric or of the composite.

    Args:
        metric: A registered metric name or ``"composite"``.

    Returns:
        True when a higher value is better.
    """
    return True if metric == COMPOSITE else get_spec(metric).higher_is_better


def check_metric(metric: str) -> str:
    """Check a metric name (a registered metric or ``"composite"``).

    Args:
        metric: The name.

    Returns:
        The name; otherwise :class:`InvalidParameterError` or :class:`UnknownNameError`.
    """
    if not isinstance(metric, str) or not metric:
        raise InvalidParameterError(f"metric must be a non-empty name, got {metric!r}")
    if metric != COMPOSITE:
        get_spec(metric)  # UnknownNameError lists the registered metrics
    return metric


def check_number(value: Any, what: str) -> float | None:
    """Check an optional finite number.

    Args:
        value: The value (None passes).
        what: Its name, for the error.

    Returns:
        The value as a float, or None.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameterError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Threshold:
    """Warning and critical limits on each observation of one metric (or ``"composite"``).

    For a score the critical value must be at or below the warning value; for a distance at or above it.
    """

    metric: str
    warning: float | None = None
    critical: float | None = None

    def __post_init__(self) -> None:
        check_metric(self.metric)
        warning = check_number(self.warning, f"threshold {self.metric}.warning")
        critical = check_number(self.critical, f"threshold {self.metric}.critical")
        if warning is None and critical is None:
            raise InvalidParameterError(f"threshold on {self.metric!r} needs a warning or a critical value")
        if warning is not None and critical is not None:
            higher = higher_is_better(self.metric)
            if (higher and critical > warning) or (not higher and critical < warning):
                word = (
                    "higher is better, so critical must be <= warning"
                    if higher
                    else ("lower is better, so critical must be >= warning")
                )
                raise InvalidParameterError(
                    f"threshold on {self.metric!r}: {word}; got warning {warning:g}, critical {critical:g}"
                )

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction, from the registry (True for the composite)."""
        return higher_is_better(self.metric)

    def breaches(self, value: float, limit: float | None) -> bool:
        """Whether ``value`` is on the wrong side of ``limit`` for this metric's direction.

        Args:
            value: An observation (NaN never breaches).
            limit: The limit, or None (never breached).

        Returns:
            True when the value breaches the limit.
        """
        if limit is None or math.isnan(value):
            return False
        return value < limit if self.higher_is_better else value > limit

    def severity(self, value: float) -> tuple[Severity, float] | None:
        """The most severe level ``value`` breaches.

        Args:
            value: An observation.

        Returns:
            (severity, limit), or None when within limits.
        """
        if self.breaches(value, self.critical):
            return "critical", float(self.critical)  # type: ignore[arg-type]
        if self.breaches(value, self.warning):
            return "warning", float(self.warning)  # type: ignore[arg-type]
        return None


@dataclass(frozen=True)
class DriftRule:
    """Alert when the rolling mean of ``metric`` is worse than ``baseline`` by more than an amount.

    Amounts are in the metric's units and positive; "worse" follows the metric's direction. Without a
    ``baseline`` the mean of the first full window is used.
    """

    metric: str
    warning: float | None = None
    critical: float | None = None
    baseline: float | None = None

    def __post_init__(self) -> None:
        check_metric(self.metric)
        warning = check_number(self.warning, f"drift {self.metric}.warning")
        critical = check_number(self.critical, f"drift {self.metric}.critical")
        check_number(self.baseline, f"drift {self.metric}.baseline")
        if warning is None and critical is None:
            raise InvalidParameterError(f"drift rule on {self.metric!r} needs a warning or a critical amount")
        for name, amount in (("warning", warning), ("critical", critical)):
            if amount is not None and amount <= 0:
                raise InvalidParameterError(f"drift {self.metric}.{name} must be > 0, got {amount:g}")
        if warning is not None and critical is not None and critical < warning:
            raise InvalidParameterError(
                f"drift on {self.metric!r}: critical must be >= warning, got warning {warning:g}, critical {critical:g}"
            )

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction, from the registry (True for the composite)."""
        return higher_is_better(self.metric)

    def drop(self, mean: float, baseline: float) -> float:
        """How much worse ``mean`` is than ``baseline``, in the metric's units.

        Args:
            mean: The rolling mean.
            baseline: The baseline.

        Returns:
            The drop (negative when better).
        """
        return baseline - mean if self.higher_is_better else mean - baseline

    def limit(self, severity: str, baseline: float) -> float:
        """The rolling mean at which ``severity`` fires.

        Args:
            severity: ``"warning"`` or ``"critical"``.
            baseline: The baseline.

        Returns:
            The mean at the limit.
        """
        amount = float(self.critical if severity == "critical" else self.warning)  # type: ignore[arg-type]
        return baseline - amount if self.higher_is_better else baseline + amount

    def level(self, drop: float, held: str | None, rearm: float) -> str | None:
        """The drift state for ``drop`` given the state held (hysteresis).

        Args:
            drop: How much worse the mean is than the baseline.
            held: The state held so far (None, ``"warning"``, ``"critical"``).
            rearm: A held state clears once the drop falls below ``rearm`` times its amount.

        Returns:
            The new state.
        """
        for severity, amount in (("critical", self.critical), ("warning", self.warning)):
            if amount is None:
                continue
            if drop > amount or (RANK[held] >= RANK[severity] and drop > amount * rearm):
                return severity
        return None
