"""Finding the smallest passing position on a monotone axis, in few probes: the pure root finder.

Shared by per-image compression (:mod:`optimizer.tuning.adaptive`) and the tuning search, it sees only
positions ``0 .. size - 1`` and a margin per position (measured quality minus the bar, positive when it
passes), expected to increase (noisily) with the position.

It starts from a guess, brackets the crossing by extrapolating from the probes so far (a secant, or a
slope given by the caller, such as the one seen on the previous image), then closes the bracket by
interpolation: the secant through the two latest probes when it lands inside the bracket (their slope is
the local one), else regula falsi with the Illinois modification; every interpolated position is rounded
up (towards higher quality, the safe side), and a bisection step is taken whenever two interpolation steps
fail to halve the bracket. Each position is probed at most once. The search ends when the passing position
``p`` has ``p - 1`` probed and failing (or ``p`` is the bottom of the axis): the answer is then minimal at
the axis's resolution. :func:`bisection_search` is the plain bisection the benchmarks compare against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InvalidParameterError

__all__ = ["SearchTrace", "adaptive_search", "bisection_search", "passes"]

#: An extrapolated step is at most this many times the span its secant was measured over.
_SPAN_CAP = 2


@dataclass
class SearchTrace:
    """What one search on one axis did: positions probed (in order), their margins, and the answer.

    ``answer`` is the lowest passing position found (``None`` when nothing passed). ``certified`` means the
    position just below the answer was probed and failed (or the answer is position 0): under monotonicity
    the answer is the smallest passing setting. ``exhausted``: ``max_probes`` ran out first. ``stopped``:
    the caller's ``stop`` asked to end early.
    """

    size: int
    order: list[int] = field(default_factory=list)
    margins: dict[int, float] = field(default_factory=dict)
    answer: int | None = None
    certified: bool = False
    exhausted: bool = False
    stopped: bool = False

    @property
    def probes(self) -> int:
        return len(self.order)

    def slope(self, window: int = 16) -> float | None:
        """Margin gained per position near the answer (least squares), for warm-starting the next search."""
        if self.answer is None:
            return None
        points = [(i, m) for i, m in self.margins.items() if abs(i - self.answer) <= window and math.isfinite(m)]
        if len(points) < 2:
            return None
        mean_i = sum(i for i, _ in points) / len(points)
        mean_m = sum(m for _, m in points) / len(points)
        var = sum((i - mean_i) ** 2 for i, _ in points)
        if var <= 0:
            return None
        slope = sum((i - mean_i) * (m - mean_m) for i, m in points) / var
        return slope if slope > 0 and math.isfinite(slope) else None


class _Prober:
    """Caches margins and enforces the probe budget and the caller's stop rule."""

    def __init__(
        self,
        margin_at: Callable[[int], float],
        size: int,
        max_probes: int | None,
        stop: Callable[[int, float], bool] | None,
    ) -> None:
        if size < 1:
            raise InvalidParameterError(f"a quality axis needs at least one position, got {size}")
        if max_probes is not None and max_probes < 1:
            raise InvalidParameterError(f"max_probes must be >= 1, got {max_probes}")
        self.margin_at = margin_at
        self.trace = SearchTrace(size)
        self.max_probes = max_probes
        self.stop = stop

    def __call__(self, position: int) -> float:
        trace = self.trace
        if position in trace.margins:
            return trace.margins[position]
        margin = float(self.margin_at(position))
        trace.order.append(position)
        trace.margins[position] = margin
        return margin

    @property
    def done(self) -> bool:
        """Whether the budget or the stop rule ends the search now."""
        trace = self.trace
        if self.stop is not None and trace.order:
            last = trace.order[-1]
            if self.stop(last, trace.margins[last]):
                trace.stopped = True
                return True
        if self.max_probes is not None and trace.probes >= self.max_probes:
            trace.exhausted = True
            return True
        return False

    def bracket(self) -> tuple[int | None, int | None]:
        """(highest failing position below the lowest pass, lowest passing position)."""
        margins = self.trace.margins
        passing = [i for i, m in margins.items() if passes(m)]
        hi = min(passing) if passing else None
        failing = [i for i, m in margins.items() if not passes(m) and (hi is None or i < hi)]
        lo = max(failing) if failing else None
        return lo, hi

    def finish(self) -> SearchTrace:
        lo, hi = self.bracket()
        trace = self.trace
        trace.answer = hi
        trace.certified = hi is not None and (hi == 0 or lo == hi - 1)
        return trace


def passes(margin: float) -> bool:
    """Whether a margin passes (NaN, a failed measurement, never does)."""
    return not math.isnan(margin) and margin >= 0.0


def adaptive_search(
    margin_at: Callable[[int], float],
    size: int,
    *,
    guess: int | None = None,
    slope: float | None = None,
    max_probes: int | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> SearchTrace:
    """The smallest position ``p`` in ``0 .. size - 1`` with ``margin_at(p) >= 0``, in few probes.

    ``margin_at`` is expected to increase (noisily) with the position. ``guess`` is where to start (the
    middle by default); ``slope`` is the expected margin gained per position, used for the first step (for
    example the slope measured on the previous image). Bracketing by extrapolation, then interpolation
    inside the bracket (latest-probes secant, else Illinois regula falsi) on integer positions rounded up
    (the safe side), with a bisection step whenever two steps do not halve the bracket. The search ends
    when ``p`` passes and ``p - 1`` fails, when the last position fails, or on ``max_probes``/``stop``.
    """
    probe = _Prober(margin_at, size, max_probes, stop)
    start = size // 2 if guess is None else min(max(int(guess), 0), size - 1)
    prior_slope = slope if slope is not None and math.isfinite(slope) and slope > 0 else None
    probe(start)
    illinois = _Illinois()
    default_step = max(1, size // 12)
    same_side_steps = 0
    while True:
        lo, hi = probe.bracket()
        if hi is not None and (hi == 0 or lo == hi - 1):
            break
        margins = probe.trace.margins
        if hi is None and max(margins) == size - 1:
            break  # the best setting fails: nothing on this axis meets the target
        if probe.done:
            break
        if hi is None:  # everything so far fails: extrapolate upwards
            nxt = _extrapolate(margins, max(margins), +1, prior_slope, default_step, same_side_steps, size)
            same_side_steps += 1
        elif lo is None:  # everything so far passes: extrapolate downwards
            nxt = _extrapolate(margins, hi, -1, prior_slope, default_step, same_side_steps, size)
            same_side_steps += 1
        else:
            nxt = illinois.next(margins, lo, hi, probe.trace.order)
        probe(nxt)
    return probe.finish()


def _local_slope(margins: Mapping[int, float], end: int, direction: int) -> tuple[float, int] | None:
    """Secant slope through ``end`` and the nearest probe behind it on the same side of the crossing,
    with the distance between the two."""
    side_pass = passes(margins[end])
    behind = [i for i in margins if (i - end) * direction < 0 and passes(margins[i]) == side_pass]
    if not behind:
        return None
    other = max(behind, key=lambda i: (i - end) * direction)
    m0, m1 = margins[other], margins[end]
    if not (math.isfinite(m0) and math.isfinite(m1)):
        return None
    slope = (m1 - m0) / (end - other)
    return (slope, abs(end - other)) if slope > 0 else None


def _extrapolate(
    margins: Mapping[int, float],
    end: int,
    direction: int,
    prior_slope: float | None,
    default_step: int,
    same_side_steps: int,
    size: int,
) -> int:
    """The next position when the crossing is not bracketed yet: aim at it from ``end``.

    Upwards from a failure the aim is the predicted answer (rounded up); downwards from a pass it is the
    position just below the predicted answer (rounded down), so a correct prediction brackets in one step.
    A secant's step is capped at twice the span it was measured over (a slope measured where the curve
    is flat would otherwise throw the probe across the axis). Without any slope the step doubles with each
    further step on the same side.
    """
    margin = margins[end]
    local = _local_slope(margins, end, direction)
    slope, cap = (local[0], _SPAN_CAP * local[1]) if local is not None else (prior_slope, size)
    if slope is not None and math.isfinite(margin):
        distance = abs(margin) / slope
        step = math.ceil(distance) if direction > 0 else math.floor(distance) + 1
        step = min(max(step, 1), max(cap, default_step))
    else:
        step = default_step * (2**same_side_steps)
    step = min(step, size)  # never further than the axis
    return min(max(end + direction * step, 0), size - 1)


class _Illinois:
    """Regula falsi inside a bracket with the Illinois rule, on integer positions, with a bisection guard.

    The Illinois rule halves the weight of a bracket end that survives two steps in a row, so a curved
    margin cannot pin the interpolation to one side. The guard bisects when two steps have not halved the
    bracket. Interpolated positions are rounded up: towards better quality, the safe side.
    """

    def __init__(self) -> None:
        self.widths: list[int] = []
        self.survivors: list[str] = []
        self.weights: dict[int, float] = {}
        self.last: tuple[int, int] | None = None

    def next(self, margins: Mapping[int, float], lo: int, hi: int, recent: Sequence[int] = ()) -> int:
        if self.last is not None:
            survivor = "lo" if lo == self.last[0] else ("hi" if hi == self.last[1] else "")
            self.survivors.append(survivor)
            if survivor and len(self.survivors) >= 2 and self.survivors[-2] == survivor:
                end = lo if survivor == "lo" else hi
                self.weights[end] = self.weights.get(end, margins[end]) / 2.0
        self.last = (lo, hi)
        width = hi - lo
        self.widths.append(width)
        w_lo = self.weights.get(lo, margins[lo])
        w_hi = self.weights.get(hi, margins[hi])
        stalled = len(self.widths) >= 3 and self.widths[-1] * 2 > self.widths[-3]
        secant = None if stalled else _secant(margins, recent, lo, hi)
        if secant is not None:
            nxt = secant
        elif stalled or not (math.isfinite(w_lo) and math.isfinite(w_hi)) or w_hi - w_lo <= 0:
            nxt = (lo + hi + 1) // 2
        else:
            crossing = lo + (0.0 - w_lo) * width / (w_hi - w_lo)
            nxt = math.ceil(crossing - 1e-9)
        return min(max(nxt, lo + 1), hi - 1)


def _secant(margins: Mapping[int, float], recent: Sequence[int], lo: int, hi: int) -> int | None:
    """The secant step through the two latest probes (Dekker), when it lands strictly inside the bracket.

    The latest probes sit closest to the crossing, so their slope is the local one; regula falsi through
    the bracket ends instead averages the slope over the whole bracket, which creeps on curved margins.
    """
    if len(recent) < 2:
        return None
    a, b = recent[-2], recent[-1]
    ma, mb = margins[a], margins[b]
    if a == b or not (math.isfinite(ma) and math.isfinite(mb)):
        return None
    slope = (mb - ma) / (b - a)
    if slope <= 0:
        return None
    nxt = math.ceil(b - mb / slope - 1e-9)
    return nxt if lo < nxt < hi else None


def bisection_search(
    margin_at: Callable[[int], float],
    size: int,
    *,
    max_probes: int | None = None,
    stop: Callable[[int, float], bool] | None = None,
) -> SearchTrace:
    """Plain bisection over ``0 .. size - 1`` (the jpeg-recompress method), for comparison.

    It keeps ``(lo, hi]`` holding the answer, starting from the virtual ends ``-1`` and ``size``, so it
    needs about ``log2(size + 1)`` probes whatever the image; its answer is certified like the adaptive one.
    """
    probe = _Prober(margin_at, size, max_probes, stop)
    lo, hi = -1, size
    while hi - lo > 1 and not (probe.trace.order and probe.done):
        mid = (lo + hi) // 2
        if passes(probe(mid)):
            hi = mid
        else:
            lo = mid
    return probe.finish()
