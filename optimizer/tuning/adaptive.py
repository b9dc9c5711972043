"""Per-image adaptive compression: for each image, the smallest encoding that meets a quality target.

A preset is one setting for a whole corpus, so it must be good enough for the hardest image and wastes
bytes on the easy ones. :func:`compress` instead searches each image's own quality axis
(:attr:`Codec.quality_param`) in every requested format and keeps the smallest file that meets the target.

Search
    Quality is (noisily) monotone in the codec's quality setting, so the search treats the *margin*
    (measured quality minus the target, in the metric's direction) as a function of a position on the axis
    and looks for its zero crossing. It starts from a guess (the answer for the previous image in the same
    format, else a per-codec prior for the target's level), brackets the crossing by extrapolating from the
    probes so far (a secant, or the slope seen on the previous image), then closes the bracket by
    interpolation: the secant through the two latest probes when it lands inside the bracket (their
    slope is the local one), else regula falsi with the Illinois modification; every interpolated position
    is rounded up (towards higher quality, the safe side), and a bisection step is taken whenever two
    interpolation steps fail to halve the bracket. Each position is encoded at most once. The search ends when the passing position ``p`` has ``p - 1``
    probed and failing (or ``p`` is the bottom of the axis): the answer is then minimal at the axis's
    resolution. :func:`bisection_search` is the plain bisection the benchmark compares against.

Guarantee
    The file written is the exact bytes that were scored, and it is checked once more after writing: it is
    read back from disk, decoded and scored. If that check fails, the search walks up the axis until a
    setting passes. When no setting of any format meets the target, the best-quality candidate is kept
    (or the original file, when it is smaller or when ``fallback="original"``), and the result says so with
    ``met=False`` and a reason. Unless ``keep_original_if_smaller=False``, a file larger than the original
    is never written: the original is copied instead, and the result says so.

Transparency
    An image with transparency is searched only in the requested formats that keep alpha (a format
    without alpha would flatten it onto white); when none of them keeps alpha, all are searched.

Axis direction comes from the codec (``quality_higher_is_better``; JPEG XL's ``distance`` is lower-is-better)
and the target's direction from the metric registry: nothing here branches on a codec's or a metric's name
(codec names only key the table of starting guesses).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_atomic
from ..codecs import get_codec
from ..codecs.base import Codec
from ..errors import InvalidParameterError, OptimizerError
from ..evaluator import EvaluationResult, Evaluator, ReferenceScorer
from ..imageio import Image, ImageSource, load_image
from ..jsonio import json_number
from ..metrics.registry import get_spec
from ..transforms import Transform
from .target import COMPOSITE, Target

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_FORMATS",
    "FALLBACKS",
    "CompressFailure",
    "CompressReport",
    "CompressResult",
    "FormatOutcome",
    "QualityAxis",
    "SearchTrace",
    "adaptive_search",
    "bisection_search",
    "compress",
]

#: Formats tried when none are named (those whose library is missing are skipped).
DEFAULT_FORMATS: tuple[str, ...] = ("avif", "webp", "jpeg")
#: What to keep when no format meets the target.
FALLBACKS: tuple[str, ...] = ("best", "original")

#: Positions on a float axis without a declared step (JPEG XL distance 0..25 gives steps of 0.05).
_FLOAT_AXIS_STEPS = 500
#: An extrapolated step is at most this many times the span its secant was measured over.
_SPAN_CAP = 2
#: Per-codec priors: (normalised target level, axis value) pairs, read as a piecewise-linear curve; only the
#: first image of a run starts from them. Levels read like SSIMULACRA 2 / 100 (see the metric registry);
#: the values are median per-image answers for SSIMULACRA 2 targets on 8 Kodak images (default settings).
#: Codecs without an entry start mid-axis.
_PRIORS: dict[str, tuple[tuple[float, float], ...]] = {
    "jpeg": ((0.3, 22.0), (0.5, 34.0), (0.7, 69.0), (0.8, 85.0), (0.9, 96.0), (1.0, 100.0)),
    "webp": ((0.3, 19.0), (0.5, 38.0), (0.7, 77.0), (0.8, 87.0), (0.9, 98.0), (1.0, 100.0)),
    "avif": ((0.3, 34.0), (0.5, 44.0), (0.7, 59.0), (0.8, 72.0), (0.9, 95.0), (1.0, 100.0)),
    "jxl": ((0.3, 7.4), (0.5, 4.5), (0.7, 2.35), (0.8, 1.45), (0.9, 0.62), (1.0, 0.0)),
}


# --------------------------------------------------------------------------------------------------
# The quality axis


@dataclass(frozen=True)
class QualityAxis:
    """A codec's quality setting as positions ``0 .. len - 1``, worst quality first.

    Working on positions makes the search independent of the setting's name, type and direction: position
    ``i + 1`` is always at least as good a setting as position ``i``.
    """

    codec: str
    param: str
    values: tuple[float, ...]
    higher_is_better: bool
    integer: bool = True

    @classmethod
    def for_codec(cls, codec: Codec, quality_range: tuple[float, float] | None = None) -> QualityAxis | None:
        """The axis of ``codec``, optionally restricted to ``quality_range``; ``None`` when it has none."""
        if codec.quality_param is None:
            return None
        param = codec.param(codec.quality_param)
        if param.kind not in ("int", "float"):
            return None
        low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
        if quality_range is not None:
            try:
                a, b = (param.validate(v, owner=codec.name) for v in quality_range)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, InvalidParameterError):
                    raise
                raise InvalidParameterError(
                    f"{codec.name}: a quality range is two values (low, high), got {quality_range!r}"
                ) from None
            low, high = float(min(a, b)), float(max(a, b))
        if param.kind == "int":
            raw = [float(v) for v in range(int(math.ceil(low)), int(math.floor(high)) + 1)]
        else:
            step = float(param.step) if param.step else (float(param.high) - float(param.low)) / _FLOAT_AXIS_STEPS  # type: ignore[arg-type]
            count = int(math.floor((high - low) / step + 1e-9)) + 1
            raw = [round(low + k * step, 6) for k in range(count)]
            if raw[-1] < high - 1e-9:
                raw.append(round(high, 6))
        values = tuple(raw if codec.quality_higher_is_better else reversed(raw))
        return cls(codec.name, param.name, values, codec.quality_higher_is_better, param.kind == "int")

    def __len__(self) -> int:
        return len(self.values)

    def value(self, position: int) -> int | float:
        """The setting at ``position`` (an ``int`` for integer params)."""
        v = self.values[position]
        return int(v) if self.integer else v

    def position(self, value: float) -> int:
        """The position whose setting is nearest to ``value``, rounded towards better quality on ties."""
        return min(range(len(self.values)), key=lambda i: (abs(self.values[i] - value), -i))

    def describe(self) -> str:
        """``quality 1..100`` or ``distance 25..0`` (worst to best)."""
        return f"{self.param} {self.value(0):g}..{self.value(len(self) - 1):g}"


def _prior_position(axis: QualityAxis, level: float) -> int:
    """Where to start on an axis for a target at normalised ``level`` (middle of the axis when unknown)."""
    curve = _PRIORS.get(axis.codec)
    if not curve or not math.isfinite(level):
        return len(axis) // 2
    level = min(max(level, curve[0][0]), curve[-1][0])
    for (l0, v0), (l1, v1) in zip(curve, curve[1:]):
        if l0 <= level <= l1:
            value = v0 + (v1 - v0) * (level - l0) / (l1 - l0) if l1 > l0 else v1
            return axis.position(value)
    return len(axis) // 2


def _prior_slope(axis: QualityAxis, target: Target) -> float | None:
    """Margin gained per position near the target's level, read off the prior curve (first image only).

    The prior gives position as a function of the normalised level; its inverse slope, scaled back to the
    target's units (the metric's norm range; 1 for the composite) and to :func:`_search_margin`'s log
    scale, is the expected margin per position.
    """
    curve = _PRIORS.get(axis.codec)
    level = _target_level(target)
    if not curve or not math.isfinite(level):
        return None
    low, high = max(curve[0][0], level - 0.05), min(curve[-1][0], level + 0.05)
    if high <= low:
        return None
    span = abs(_prior_position(axis, high) - _prior_position(axis, low))
    if span == 0:
        return None
    units = (
        1.0
        if target.metric == COMPOSITE
        else abs(get_spec(target.metric).norm_range[1] - get_spec(target.metric).norm_range[0])
    )
    slope = (high - low) * units / span
    bar_gap = abs(target.best_value - target.value)
    if math.isfinite(target.best_value) and bar_gap > 0:
        slope /= bar_gap  # in the units of _search_margin: d log(gap) = d gap / gap
    return slope


def _search_margin(target: Target, value: float) -> float:
    """The margin the search interpolates on: ``log(gap to best at the bar) - log(gap to best now)``.

    Scores saturate as they approach their best value (SSIM 1, SSIMULACRA 2 100, a distance 0), and the
    log of the remaining gap is much closer to linear in a codec's quality setting than the score itself,
    so interpolation lands closer. It has the same sign as :meth:`Target.margin` (pass/fail never
    changes); metrics without a finite best (PSNR) keep the plain margin.
    """
    raw = target.margin(value)
    best = target.best_value
    if math.isnan(raw) or not math.isfinite(best) or not math.isfinite(value):
        return raw
    bar_gap, gap = abs(best - target.value), abs(best - value)
    if bar_gap == 0.0:
        return raw
    if gap == 0.0:
        return math.inf
    transformed = math.log(bar_gap) - math.log(gap)
    if raw >= 0.0:
        return max(transformed, 0.0)
    return min(transformed, -1e-12)


def _target_level(target: Target) -> float:
    """The target on the normalised [0, 1] scale (SSIMULACRA 2 / 100 equivalent) used by the priors."""
    return target.value if target.metric == COMPOSITE else get_spec(target.metric).normalise(target.value)


# --------------------------------------------------------------------------------------------------
# The searches (pure: they see only positions and margins)


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
        passing = [i for i, m in margins.items() if _passes(m)]
        hi = min(passing) if passing else None
        failing = [i for i, m in margins.items() if not _passes(m) and (hi is None or i < hi)]
        lo = max(failing) if failing else None
        return lo, hi

    def finish(self) -> SearchTrace:
        lo, hi = self.bracket()
        trace = self.trace
        trace.answer = hi
        trace.certified = hi is not None and (hi == 0 or lo == hi - 1)
        return trace


def _passes(margin: float) -> bool:
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
    side_pass = _passes(margins[end])
    behind = [i for i in margins if (i - end) * direction < 0 and _passes(margins[i]) == side_pass]
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
        if _passes(probe(mid)):
            hi = mid
        else:
            lo = mid
    return probe.finish()


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FormatOutcome:
    """What the search found in one format for one image."""

    format: str
    axis: str
    probes: int
    met: bool
    setting: int | float | None = None
    params: Mapping[str, Any] | None = None
    bytes: int | None = None
    quality: float | None = None
    certified: bool = False
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "axis": self.axis,
            "probes": self.probes,
            "met": self.met,
            "setting": self.setting,
            "params": dict(self.params) if self.params is not None else None,
            "bytes": self.bytes,
            "quality": _json_float(self.quality),
            "certified": self.certified,
            "note": self.note,
        }


@dataclass(frozen=True)
class CompressResult:
    """One image: the file written, how good it is, and what the search spent.

    ``met`` is true when an encoding in a requested format met the target (the written file then meets it
    too, checked from disk). ``kept_original`` says the original file was written instead of an encoding
    (smaller, or the fallback); ``reason`` explains that and every ``met=False``. ``minimal``: the setting
    one step worse was probed and failed, so under monotonicity no smaller setting of that format meets
    the target.
    """

    input: str
    output: str | None
    format: str
    params: Mapping[str, Any]
    bytes: int
    original_bytes: int | None
    width: int
    height: int
    quality: float
    target: str
    met: bool
    kept_original: bool
    minimal: bool
    probes: Mapping[str, int]
    formats: tuple[FormatOutcome, ...]
    scores: Mapping[str, float]
    seconds: float
    reason: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def bits_per_pixel(self) -> float:
        return self.bytes * 8.0 / (self.width * self.height)

    @property
    def total_probes(self) -> int:
        return sum(self.probes.values())

    @property
    def setting(self) -> int | float | None:
        """The quality-axis value chosen (``None`` when the original was kept)."""
        for outcome in self.formats:
            if outcome.format == self.format and not self.kept_original:
                return outcome.setting
        return None

    @property
    def setting_label(self) -> str:
        """``jpeg quality=84``, ``jxl distance=1.35`` or ``original``."""
        if self.kept_original:
            return "original"
        for outcome in self.formats:
            if outcome.format == self.format and outcome.setting is not None:
                return f"{self.format} {outcome.axis}={outcome.setting:g}"
        return self.format

    @property
    def saved(self) -> float | None:
        """Fraction of the original's bytes saved (negative when larger)."""
        if not self.original_bytes:
            return None
        return 1.0 - self.bytes / self.original_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "format": self.format,
            "setting": self.setting,
            "params": dict(self.params),
            "bytes": self.bytes,
            "original_bytes": self.original_bytes,
            "width": self.width,
            "height": self.height,
            "bits_per_pixel": self.bits_per_pixel,
            "quality": _json_float(self.quality),
            "target": self.target,
            "met": self.met,
            "kept_original": self.kept_original,
            "minimal": self.minimal,
            "probes": dict(self.probes),
            "total_probes": self.total_probes,
            "formats": [o.to_dict() for o in self.formats],
            "scores": {k: _json_float(v) for k, v in self.scores.items()},
            "seconds": self.seconds,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class CompressFailure:
    """An input that could not be processed at all (unreadable, encoder error...)."""

    input: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason}


@dataclass
class CompressReport:
    """Every image's result, the inputs that failed, and totals."""

    results: list[CompressResult]
    failures: list[CompressFailure]
    target: str
    formats: tuple[str, ...]
    evaluator: dict[str, Any]
    seconds: float = 0.0

    @property
    def all_met(self) -> bool:
        """Every input was processed and every written file met the target with an encoding."""
        return not self.failures and all(r.met for r in self.results)

    @property
    def unmet(self) -> list[CompressResult]:
        return [r for r in self.results if not r.met]

    def totals(self) -> dict[str, Any]:
        results = self.results
        total_bytes = sum(r.bytes for r in results)
        known = [r for r in results if r.original_bytes]
        original = sum(r.original_bytes or 0 for r in known)
        pixels = sum(r.width * r.height for r in results)
        probes = sum(r.total_probes for r in results)
        by_format: dict[str, int] = {}
        for r in results:
            for name, count in r.probes.items():
                by_format[name] = by_format.get(name, 0) + count
        return {
            "images": len(results),
            "failed": len(self.failures),
            "met": sum(1 for r in results if r.met),
            "unmet": sum(1 for r in results if not r.met),
            "kept_original": sum(1 for r in results if r.kept_original),
            "bytes": total_bytes,
            "original_bytes": original if known else None,
            "saved": (1.0 - sum(r.bytes for r in known) / original) if original else None,
            "bits_per_pixel": total_bytes * 8.0 / pixels if pixels else None,
            "probes": probes,
            "probes_per_image": probes / len(results) if results else None,
            "probes_by_format": by_format,
            "chosen_formats": {
                f: sum(1 for r in results if r.format == f) for f in sorted({r.format for r in results})
            },
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "formats": list(self.formats),
            "evaluator": self.evaluator,
            "totals": self.totals(),
            "results": [r.to_dict() for r in self.results],
            "failures": [f.to_dict() for f in self.failures],
        }

    def to_json(self, path: str | Path | None = None, **kwargs: Any) -> str:
        import json

        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_dataframe(self) -> pd.DataFrame:
        """One row per image (failures included, with their reason)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for r in self.results:
            row = {
                "input": r.input,
                "output": r.output,
                "format": r.format,
                "setting": r.setting,
                "bytes": r.bytes,
                "original_bytes": r.original_bytes,
                "bits_per_pixel": r.bits_per_pixel,
                "quality": r.quality,
                "target": r.target,
                "met": r.met,
                "kept_original": r.kept_original,
                "minimal": r.minimal,
                "total_probes": r.total_probes,
                "seconds": r.seconds,
                "reason": r.reason,
            }
            row.update({f"probes_{name}": count for name, count in r.probes.items()})
            rows.append(row)
        for f in self.failures:
            rows.append({"input": f.input, "met": False, "reason": f.reason})
        return pd.DataFrame(rows)


def _json_float(value: float | None) -> float | str | None:
    return None if value is None else json_number(value)


# --------------------------------------------------------------------------------------------------
# compress()


@dataclass(frozen=True)
class _Input:
    label: str
    source: ImageSource | Image
    out_stem: Path
    original: Path | None


@dataclass(frozen=True)
class _Format:
    codec: Codec
    axis: QualityAxis
    fixed: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.codec.name

    def params_at(self, position: int) -> dict[str, Any]:
        return self.codec.validate_params({**self.fixed, self.axis.param: self.axis.value(position)})


@dataclass(frozen=True)
class _Candidate:
    format: _Format
    position: int
    params: Mapping[str, Any]
    data: bytes
    value: float
    margin: float
    search_margin: float

    @property
    def setting(self) -> int | float:
        return self.format.axis.value(self.position)

    def label(self) -> str:
        return f"{self.format.name} {self.format.axis.param}={self.setting:g}"


@dataclass
class _WarmStart:
    """Per format: the previous image's answer and the margin slope measured around it."""

    value: float | None = None
    slope: float | None = None


@dataclass
class _Run:
    """Everything fixed for one compress() call."""

    target: Target
    evaluator: Evaluator
    formats: list[_Format]
    out_dir: Path | None
    transform: Transform | None
    max_probes: int | None
    keep_original_if_smaller: bool
    fallback: str
    prune: bool
    warm: dict[str, _WarmStart] = field(default_factory=dict)
    last_winner: str | None = None

    @property
    def probe_metrics(self) -> list[str] | None:
        """Metrics scored while searching: the target's alone, or all of them for the composite."""
        return None if self.target.metric == COMPOSITE else [self.target.metric]


def compress(
    inputs: Iterable[ImageSource | Image] | ImageSource | Image,
    *,
    target: Target | str,
    formats: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    evaluator: Evaluator | None = None,
    profile: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    transform: Transform | None = None,
    quality_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    max_probes: int | None = None,
    keep_original_if_smaller: bool = True,
    fallback: str = "best",
    prune: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> CompressReport:
    """For each image, the smallest encoding over ``formats`` that meets ``target``; see the module doc.

    ``inputs``: image files, folders (searched recursively; the output keeps the relative layout),
    bytes, arrays or :class:`Image` objects. ``formats`` defaults to :data:`DEFAULT_FORMATS` (those
    installed). ``out_dir``: where files are written (``None``: nothing is written; each result keeps its
    bytes in ``data``). ``params``: fixed non-quality settings per format (``{"avif": {"speed": 6}}``).
    ``quality_range``: ``(low, high)`` on every format's quality axis, or a mapping per format, in the
    axis's own units (JPEG XL: distance). ``max_probes``: encodes per image and format. ``fallback``:
    when nothing meets the target, keep the ``"best"``-quality candidate (or the original when that is
    smaller) or always the ``"original"``. ``prune``: stop searching a format once its failing settings
    are already larger than another format's passing file. Inputs that cannot be processed are reported
    in ``failures``; they do not stop the run.
    """
    started = time.perf_counter()
    goal = Target.parse(target)
    if fallback not in FALLBACKS:
        raise InvalidParameterError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if max_probes is not None and (not isinstance(max_probes, int) or isinstance(max_probes, bool) or max_probes < 1):
        raise InvalidParameterError(f"max_probes must be an integer >= 1, got {max_probes!r}")
    if transform is not None and not isinstance(transform, Transform):
        raise InvalidParameterError(f"transform must be a Transform, got {type(transform).__name__}")
    evaluator = _evaluator_for(goal, evaluator, profile)
    run = _Run(
        target=goal,
        evaluator=evaluator,
        formats=_formats_for(formats, params, quality_range),
        out_dir=Path(out_dir) if out_dir is not None else None,
        transform=transform,
        max_probes=max_probes,
        keep_original_if_smaller=keep_original_if_smaller,
        fallback=fallback,
        prune=prune,
    )
    jobs, failures = _collect_inputs(inputs)
    evaluator.load()
    results: list[CompressResult] = []
    for done, job in enumerate(jobs, start=1):
        try:
            results.append(_compress_one(job, run))
        except (OptimizerError, OSError) as exc:
            failures.append(CompressFailure(job.label, str(exc) or type(exc).__name__))
        if progress is not None:
            progress(done, len(jobs), job.label)
    return CompressReport(
        results=results,
        failures=failures,
        target=str(goal),
        formats=tuple(f.name for f in run.formats),
        evaluator=evaluator.describe(),
        seconds=time.perf_counter() - started,
    )


def _evaluator_for(target: Target, evaluator: Evaluator | None, profile: str | None) -> Evaluator:
    if evaluator is not None:
        if profile is not None:
            raise InvalidParameterError("give either a profile or an evaluator, not both")
        target.check_computed(evaluator.metric_names)
        return evaluator
    if target.metric == COMPOSITE:
        return Evaluator(profile=profile or "default")
    if profile is not None:
        return Evaluator(profile=profile, metrics=[target.metric])
    return Evaluator(metrics=[target.metric])


def _formats_for(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    quality_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None,
) -> list[_Format]:
    """Resolve formats, their quality axes and fixed params; refuse what cannot be searched."""
    if isinstance(names, str):
        names = [names]
    explicit = names is not None
    codecs: list[Codec] = []
    for name in names if names is not None else DEFAULT_FORMATS:
        codec = get_codec(name, require_available=explicit)
        if not codec.available():
            continue
        if codec not in codecs:
            codecs.append(codec)
    if not codecs:
        raise InvalidParameterError(
            "no format to search: "
            + (
                "give at least one format"
                if explicit
                else f"none of the default formats ({', '.join(DEFAULT_FORMATS)}) is installed"
            )
        )
    chosen = {c.name for c in codecs}
    by_codec = _per_format("params", params or {}, chosen)
    ranges = _per_format("quality_range", quality_range, chosen) if isinstance(quality_range, Mapping) else {}
    out: list[_Format] = []
    skipped: list[str] = []
    for codec in codecs:
        axis_range = ranges.get(codec.name) if isinstance(quality_range, Mapping) else quality_range
        axis = QualityAxis.for_codec(codec, axis_range)  # type: ignore[arg-type]
        if axis is None:
            skipped.append(codec.name)
            continue
        fixed = dict(by_codec.get(codec.name, {}))
        checked = codec.validate_params(fixed)
        if axis.param in fixed or checked[axis.param] != codec.defaults()[axis.param]:
            raise InvalidParameterError(
                f"{codec.name}: {axis.param} is the axis the search scans; restrict it with quality_range "
                f"instead of fixing it in params (got {dict(fixed)})"
            )
        if codec.is_lossless(checked):
            raise InvalidParameterError(
                f"{codec.name}: these params encode losslessly ({dict(fixed)}), which leaves no quality to search"
            )
        out.append(_Format(codec, axis, fixed))
    if not out:
        raise InvalidParameterError(
            f"none of the formats has a quality axis to search ({', '.join(skipped)}); try avif, webp, jpeg or jxl"
        )
    return out


def _per_format(what: str, mapping: Mapping[str, Any], chosen: set[str]) -> dict[str, Any]:
    """Key a per-format mapping by canonical codec name; keys for formats not searched are refused."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = get_codec(key, require_available=False).name
        if name not in chosen:
            raise InvalidParameterError(
                f"{what} given for format {key!r}, which is not among the formats searched ({', '.join(sorted(chosen))})"
            )
        if what == "params" and not isinstance(value, Mapping):
            raise InvalidParameterError(f"params for {key!r} must be a mapping of name to value, got {value!r}")
        out[name] = value
    return out


def _collect_inputs(
    inputs: Iterable[ImageSource | Image] | ImageSource | Image,
) -> tuple[list[_Input], list[CompressFailure]]:
    """Expand folders, name outputs after inputs (relative layout kept), and disambiguate equal names."""
    from ..batch import iter_image_files

    if isinstance(inputs, (str, Path, bytes, bytearray, memoryview, Image)) or not isinstance(inputs, Iterable):
        items: list[Any] = [inputs]
    elif hasattr(inputs, "shape"):  # one array, not a sequence of images
        items = [inputs]
    else:
        items = list(inputs)
    jobs: list[_Input] = []
    failures: list[CompressFailure] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                found = list(iter_image_files(path))
                if not found:
                    failures.append(CompressFailure(str(path), "no image files in this folder"))
                for file in found:
                    jobs.append(_Input(str(file), file, file.relative_to(path).with_suffix(""), file))
            elif path.is_file():
                jobs.append(_Input(str(path), path, Path(path.stem), path))
            else:
                failures.append(CompressFailure(str(path), "no such file or folder"))
        else:
            source = getattr(item, "source", None) if isinstance(item, Image) else None
            stem = Path(source).stem if source else f"image{index:03d}"
            jobs.append(_Input(source or stem, item, Path(stem), None))
    counts = Counter(job.out_stem for job in jobs)
    unique: list[_Input] = []
    taken: set[Path] = set()
    for job in jobs:
        stem = job.out_stem
        if counts[stem] > 1 and job.original is not None:
            stem = stem.with_name(job.original.name)  # photo.png and photo.jpg: photo.png.webp, photo.jpg.webp
        chosen, n = stem, 2
        while chosen in taken:  # still equal (same name from two folders): photo-2, photo-3...
            chosen, n = stem.with_name(f"{stem.name}-{n}"), n + 1
        taken.add(chosen)
        unique.append(_Input(job.label, job.source, chosen, job.original))
    return unique, failures


def _reference_and_input(image: Image, transform: Transform | None) -> tuple[Image, Image]:
    """(scoring reference, encoder input). A resize's reference uses a fixed high-quality filter."""
    if transform is None or transform.is_identity:
        return image, image
    encoder_input = transform.apply(image)
    if not transform.resizes:
        return image, encoder_input
    fixed = Transform(
        width=transform.width,
        height=transform.height,
        scale=transform.scale,
        filter="lanczos",
        linear_light=transform.linear_light,
    )
    return fixed.apply(image), encoder_input


def _compress_one(job: _Input, run: _Run) -> CompressResult:
    started = time.perf_counter()
    image = load_image(job.source, name=job.label)
    reference, encoder_input = _reference_and_input(image, run.transform)
    scorer = run.evaluator.for_reference(reference)
    comparable = job.original is not None and (run.transform is None or not run.transform.resizes)
    original_bytes = job.original.stat().st_size if comparable and job.original is not None else None

    formats = run.formats
    if encoder_input.has_alpha:  # transparent: formats that would flatten it only when no other was asked for
        formats = [fmt for fmt in formats if fmt.codec.supports_alpha] or formats
    searches = [_FormatSearch(fmt, encoder_input, scorer, run) for fmt in formats]
    # The previous image's winner goes first: its file size then lets the other formats stop early.
    best_bytes: int | None = None
    for search in sorted(searches, key=lambda s: s.format.name != run.last_winner):
        search.run(best_bytes if run.prune else None)
        winner = search.answer
        if winner is not None and (best_bytes is None or len(winner.data) < best_bytes):
            best_bytes = len(winner.data)

    context = _Context(job, run, scorer, searches, original_bytes, encoder_input.width, encoder_input.height, started)
    while True:
        live = [(len(s.answer.data), i, s, s.answer) for i, s in enumerate(searches) if s.answer is not None]
        if not live:
            break
        _, _, search, candidate = min(live, key=lambda item: item[:2])
        if run.keep_original_if_smaller and original_bytes is not None and original_bytes <= len(candidate.data):
            reason = (
                f"the original ({original_bytes:,} bytes) is no larger than the smallest encoding that "
                f"meets the target ({candidate.label()}, {len(candidate.data):,} bytes); original kept"
            )
            return context.keep_original(met=True, reason=reason, chosen=search)
        written = context.write_and_verify(candidate, search)
        if written is not None:
            run.last_winner = search.format.name
            return written
        search.walk_up(candidate)  # the written file failed its check: the next better setting that passes
    return context.fallback()


class _FormatSearch:
    """One format's search on one image, with its probe cache."""

    def __init__(self, fmt: _Format, image: Image, scorer: ReferenceScorer, run: _Run) -> None:
        self.format = fmt
        self.image = image
        self.scorer = scorer
        self.run_state = run
        self.cache: dict[int, _Candidate] = {}
        self.trace: SearchTrace | None = None
        self.extra_probes = 0
        self.answer: _Candidate | None = None
        self.walked = False
        self.note: str | None = None

    @property
    def probes(self) -> int:
        return (self.trace.probes if self.trace is not None else 0) + self.extra_probes

    def probe(self, position: int) -> _Candidate:
        cached = self.cache.get(position)
        if cached is not None:
            return cached
        fmt = self.format
        params = fmt.params_at(position)
        data = fmt.codec.encode(self.image, params)
        result = self.scorer.score(fmt.codec.decode(data), metrics=self.run_state.probe_metrics)
        target = self.run_state.target
        value = target.value_of(result)
        candidate = _Candidate(fmt, position, params, data, value, target.margin(value), _search_margin(target, value))
        self.cache[position] = candidate
        return candidate

    def run(self, best_bytes: int | None) -> None:
        run, fmt = self.run_state, self.format
        warm = run.warm.setdefault(fmt.name, _WarmStart())
        if warm.value is not None:
            guess = fmt.axis.position(warm.value)
        else:
            guess = _prior_position(fmt.axis, _target_level(run.target))

        def stop(position: int, margin: float) -> bool:
            data = self.cache[position].data
            return best_bytes is not None and not _passes(margin) and len(data) >= best_bytes

        trace = adaptive_search(
            lambda p: self.probe(p).search_margin,
            len(fmt.axis),
            guess=guess,
            slope=warm.slope if warm.slope is not None else _prior_slope(fmt.axis, run.target),
            max_probes=run.max_probes,
            stop=stop if run.prune else None,
        )
        self.trace = trace
        self.answer = self.cache[trace.answer] if trace.answer is not None else None
        if trace.answer is not None:
            warm.value = fmt.axis.values[trace.answer]
            warm.slope = trace.slope() or warm.slope
        if trace.stopped:
            self.note = f"search stopped: its failing settings were already no smaller than {best_bytes:,} bytes"
        elif trace.exhausted and not trace.certified:
            self.note = f"search budget of {run.max_probes} probes ran out"
        elif trace.answer is None:
            self.note = f"no setting in {fmt.axis.describe()} meets {run.target}"

    def walk_up(self, candidate: _Candidate) -> _Candidate | None:
        """The next better setting that passes its probe (after a failed check of ``candidate``)."""
        self.walked = True
        position = candidate.position + 1
        while position < len(self.format.axis):
            fresh = position not in self.cache
            nxt = self.probe(position)
            self.extra_probes += int(fresh)
            if _passes(nxt.margin):
                self.answer = nxt
                return nxt
            position += 1
        self.answer = None
        self.note = f"no setting above {candidate.label()} passed the check of the written file"
        return None

    def outcome(self) -> FormatOutcome:
        trace = self.trace
        best = self.answer
        if best is None and self.cache:
            best = max(self.cache.values(), key=lambda c: (_sort_margin(c.margin), -len(c.data)))
        return FormatOutcome(
            format=self.format.name,
            axis=self.format.axis.param,
            probes=self.probes,
            met=self.answer is not None,
            setting=best.setting if best is not None else None,
            params=dict(best.params) if best is not None else None,
            bytes=len(best.data) if best is not None else None,
            quality=best.value if best is not None else None,
            certified=bool(trace is not None and trace.certified and not self.walked and self.answer is not None),
            note=self.note,
        )


def _sort_margin(margin: float) -> float:
    return -math.inf if math.isnan(margin) else margin


class _Context:
    """Writes, verifies and reports one image's outcome."""

    def __init__(
        self,
        job: _Input,
        run: _Run,
        scorer: ReferenceScorer,
        searches: list[_FormatSearch],
        original_bytes: int | None,
        width: int,
        height: int,
        started: float,
    ) -> None:
        self.job = job
        self.run = run
        self.scorer = scorer
        self.searches = searches
        self.original_bytes = original_bytes
        self.width = width
        self.height = height
        self.started = started

    def _path(self, extension: str) -> Path | None:
        if self.run.out_dir is None:
            return None
        return self.run.out_dir / self.job.out_stem.with_name(self.job.out_stem.name + extension)

    def _write_checked(
        self, data: bytes, path: Path | None, *, must_meet: bool = False
    ) -> tuple[EvaluationResult, bool]:
        """Write ``data``, read the file back, decode and score those bytes: (scores, whether kept).

        The file goes through a temporary name and takes its final name only once scored, and, with
        ``must_meet``, only when it meets the target (otherwise nothing is left on disk). Without an output
        folder the in-memory bytes are decoded and scored instead.
        """
        target = self.run.target

        def acceptable(result: EvaluationResult) -> bool:
            return not must_meet or target.is_met(target.value_of(result))

        if path is None:
            result = self.scorer.score(load_image(data, name=self.job.label))
            return result, acceptable(result)
        original = self.job.original
        if original is not None and path.resolve() == original.resolve():
            if original.read_bytes() != data:
                raise InvalidParameterError(
                    f"refusing to overwrite the input {original} with its compressed version; "
                    "choose another output folder"
                )
            result = self.scorer.score(load_image(path))
            return result, acceptable(result)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_bytes(data)
        try:
            result = self.scorer.score(load_image(temporary.read_bytes(), name=str(path)))
            if not acceptable(result):
                temporary.unlink()
                return result, False
            temporary.replace(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return result, True

    def write_and_verify(self, candidate: _Candidate, search: _FormatSearch) -> CompressResult | None:
        """Write ``candidate`` if the written file meets the target; ``None`` (nothing written) otherwise."""
        path = self._path(candidate.format.codec.extension)
        result, kept = self._write_checked(candidate.data, path, must_meet=True)
        if not kept:
            return None
        reason = None
        if self.original_bytes is not None and len(candidate.data) > self.original_bytes:
            reason = f"the output is larger than the original ({len(candidate.data):,} > {self.original_bytes:,} bytes)"
        return self._result(
            candidate.format.name,
            dict(candidate.params),
            candidate.data,
            path,
            result,
            met=True,
            kept_original=False,
            reason=reason,
            chosen=search,
        )

    def keep_original(self, *, met: bool, reason: str, chosen: _FormatSearch | None) -> CompressResult:
        original = self.job.original
        if original is None:  # pragma: no cover - callers check original_bytes first
            raise InvalidParameterError("there is no original file to keep")
        data = original.read_bytes()
        path = self._path(original.suffix)
        result, _ = self._write_checked(data, path)
        return self._result(
            _format_of(original), {}, data, path, result, met=met, kept_original=True, reason=reason, chosen=chosen
        )

    def fallback(self) -> CompressResult:
        """Nothing met the target: keep the best-quality candidate, or the original, and say why."""
        run = self.run
        candidates = [c for s in self.searches for c in s.cache.values()]
        best = max(candidates, key=lambda c: (_sort_margin(c.margin), -len(c.data))) if candidates else None
        notes = "; ".join(f"{s.format.name}: {s.note}" for s in self.searches if s.note)
        head = f"no setting of {', '.join(s.format.name for s in self.searches)} met {run.target}"
        if best is not None:
            head += f" (best: {best.label()} scored {best.value:.4g})"
        if notes:
            head += f" [{notes}]"
        owner = next((s for s in self.searches if best is not None and s.format is best.format), None)
        use_original = self.original_bytes is not None and (
            run.fallback == "original" or best is None or self.original_bytes <= len(best.data)
        )
        if use_original:
            why = (
                "the original was kept"
                if run.fallback == "original" or best is None
                else (f"the original was kept, being no larger ({self.original_bytes:,} bytes) than the best candidate")
            )
            return self.keep_original(met=False, reason=f"{head}; {why}", chosen=owner)
        if best is None:  # pragma: no cover - every search probes at least once
            raise InvalidParameterError(f"{self.job.label}: nothing was encoded")
        path = self._path(best.format.codec.extension)
        result, _ = self._write_checked(best.data, path)
        return self._result(
            best.format.name,
            dict(best.params),
            best.data,
            path,
            result,
            met=False,
            kept_original=False,
            reason=f"{head}; the best-quality candidate was kept",
            chosen=owner,
        )

    def _result(
        self,
        fmt: str,
        params: dict[str, Any],
        data: bytes,
        path: Path | None,
        result: EvaluationResult,
        *,
        met: bool,
        kept_original: bool,
        reason: str | None,
        chosen: _FormatSearch | None,
    ) -> CompressResult:
        outcomes = tuple(s.outcome() for s in self.searches)
        minimal = bool(met and not kept_original and chosen is not None and chosen.outcome().certified)
        return CompressResult(
            input=self.job.label,
            output=str(path) if path is not None else None,
            format=fmt,
            params=params,
            bytes=len(data),
            original_bytes=self.original_bytes,
            width=self.width,
            height=self.height,
            quality=self.run.target.value_of(result),
            target=str(self.run.target),
            met=met,
            kept_original=kept_original,
            minimal=minimal,
            probes={s.format.name: s.probes for s in self.searches},
            formats=outcomes,
            scores=dict(result.scores),
            seconds=time.perf_counter() - self.started,
            reason=reason,
            data=data if path is None else None,
        )


def _format_of(path: Path) -> str:
    """The codec name for a file's extension, or the bare extension when no codec writes it."""
    from ..codecs import codec_for_extension

    try:
        return codec_for_extension(path.suffix, require_available=False).name
    except OptimizerError:
        return path.suffix.lstrip(".").lower() or "original"
