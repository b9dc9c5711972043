"""A codec's quality setting as an ordered axis, where the search starts on it, and the margin it uses.

Working on positions makes the search independent of the setting's name, type and direction: position
``i + 1`` is always at least as good a setting as position ``i`` (JPEG XL's ``distance`` is lower-is-better;
its axis runs from 25 down to 0). Nothing here branches on a codec's or a metric's name (codec names only
key the table of starting guesses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..codecs.base import Codec
from ..errors import InvalidParameterError
from ..metrics.registry import get_spec
from .target import COMPOSITE, Target

__all__ = ["QualityAxis", "prior_position", "prior_slope", "search_margin", "target_level"]

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


def prior_position(axis: QualityAxis, level: float) -> int:
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


def prior_slope(axis: QualityAxis, target: Target) -> float | None:
    """Margin gained per position near the target's level, read off the prior curve (first image only).

    The prior gives position as a function of the normalised level; its inverse slope, scaled back to the
    target's units (the metric's norm range; 1 for the composite) and to :func:`search_margin`'s log
    scale, is the expected margin per position.
    """
    curve = _PRIORS.get(axis.codec)
    level = target_level(target)
    if not curve or not math.isfinite(level):
        return None
    low, high = max(curve[0][0], level - 0.05), min(curve[-1][0], level + 0.05)
    if high <= low:
        return None
    span = abs(prior_position(axis, high) - prior_position(axis, low))
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


def search_margin(target: Target, value: float) -> float:
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


def target_level(target: Target) -> float:
    """The target on the normalised [0, 1] scale (SSIMULACRA 2 / 100 equivalent) used by the priors."""
    return target.value if target.metric == COMPOSITE else get_spec(target.metric).normalise(target.value)
