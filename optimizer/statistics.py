"""Statistics over per-image values, with one meaning everywhere: batch summaries, the quality gate, the
monitor, tuning aggregates, presets and reports all call this module.

Direction matters. Every statistic that describes *how good* a set of images is reads the metric's
direction (``higher_is_better`` from the metric registry; ``True`` for the composite, ``False`` for bytes):

``p10``
    The worst-10 % edge: the quality that 90 % of the images reach. For a score (SSIMULACRA 2, SSIM) it is
    the 10th percentile; for a distance (LPIPS, DISTS) or a size it is the 90th percentile.
``p90``
    The best-10 % edge: the quality only 10 % of the images exceed (the 90th percentile of a score, the
    10th of a distance).
``median``
    The 50th percentile (the same in either direction).
``worst``
    The minimum of a score, the maximum of a distance.
``min`` / ``max``
    The plain numeric minimum and maximum, whatever the direction (``lpips max <= 0.2``).
``mean``
    The arithmetic mean of the finite values: an identical pair's infinite PSNR carries no number to
    average, so it neither lifts the mean to infinity nor hides the other images. When every value is
    infinite, that infinity (PSNR 30/35/inf has mean 32.5; inf/inf has mean inf).

Percentiles interpolate linearly (numpy's default) and keep infinities: two equal infinite neighbours
give that infinity (not NaN), a finite neighbour next to an infinite one gives the infinity. Any NaN among
the values (a failed measurement) makes every statistic NaN, and an empty list has NaN statistics: a
missing measurement never passes silently. Callers that treat some values as absent filter them first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from .errors import InvalidParameterError

__all__ = [
    "AGGREGATES",
    "STATISTICS",
    "Aggregate",
    "Statistic",
    "check_statistic",
    "percentile",
    "statistic",
    "window_statistics",
]

Statistic = Literal["mean", "median", "p10", "p90", "min", "max", "worst"]
#: Every statistic :func:`statistic` computes.
STATISTICS: tuple[Statistic, ...] = ("mean", "median", "p10", "p90", "min", "max", "worst")
Aggregate = Literal["mean", "p10", "worst"]
#: The statistics a corpus-wide quality bar is stated on (tuning, ``apply --verify``, presets).
AGGREGATES: tuple[Aggregate, ...] = ("mean", "p10", "worst")

#: Direction-aware quantiles: the percentile of a higher-is-better quantity each name stands for.
_QUANTILES = {"median": 50.0, "p10": 10.0, "p90": 90.0}


def check_statistic(name: str, allowed: Sequence[str] = STATISTICS) -> str:
    """``name`` when it is one of ``allowed``; otherwise an :class:`InvalidParameterError` listing them."""
    if name not in allowed:
        raise InvalidParameterError(f"statistic must be one of {', '.join(allowed)}, got {name!r}")
    return name


def percentile(values: Sequence[float], q: float) -> float:
    """The plain ``q``-th percentile (linear interpolation) that keeps infinities (see the module doc)."""
    ordered = sorted(float(v) for v in values)
    if not ordered or any(math.isnan(v) for v in ordered):
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise InvalidParameterError(f"a percentile lies in [0, 100], got {q}")
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    a, b = ordered[lo], ordered[min(lo + 1, len(ordered) - 1)]
    if pos == lo or a == b:
        return a
    if math.isinf(a) or math.isinf(b):
        return b if math.isinf(b) else a
    return a + (b - a) * (pos - lo)


def statistic(values: Sequence[float], name: str, *, higher_is_better: bool = True) -> float:
    """One of :data:`STATISTICS` over ``values`` in the direction given (see the module doc)."""
    check_statistic(name)
    data = [float(v) for v in values]
    if not data or any(math.isnan(v) for v in data):
        return math.nan
    if name == "mean":
        finite = [v for v in data if math.isfinite(v)]
        if finite:
            return math.fsum(finite) / len(finite)
        return data[0] if all(v == data[0] for v in data) else math.nan
    if name in _QUANTILES:
        q = _QUANTILES[name]
        return percentile(data, q if higher_is_better else 100.0 - q)
    if name == "worst":
        name = "min" if higher_is_better else "max"
    return min(data) if name == "min" else max(data)


def window_statistics(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """Mean, least-squares slope per observation, and population standard deviation of a rolling window
    of finite values (the monitor's trend and stability); ``None`` where there are too few values."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
    if n < 2:
        return mean, None, std
    x_mean = (n - 1) / 2.0
    sxx = n * (n * n - 1) / 12.0  # sum of (i - x_mean)^2 for i = 0..n-1
    sxy = math.fsum((i - x_mean) * (v - mean) for i, v in enumerate(values))
    return mean, sxy / sxx, std
