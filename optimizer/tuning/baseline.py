"""What savings are stated against: the baseline encoding, as is and at equal quality.

The baseline is what a cjpeg or mozjpeg user already gets: JPEG quality 85, 4:2:0, optimised Huffman tables
and progressive scans (:func:`~optimizer.tuning.settings.baseline_settings`). Two comparisons are made:

* **as is**: the preset's bytes against the baseline's at quality 85, whatever quality each reaches;
* **at equal quality**: the preset's bytes against the JPEG (same settings, another quality) whose
  aggregate quality equals the preset's. JPEG's quality axis is searched with the root finder of
  :mod:`optimizer.tuning.rootfind` for the two neighbouring integer qualities that bracket the preset's
  aggregate, and bytes are interpolated linearly between them (``jpeg_quality`` is fractional). When
  even quality 100 falls short, ``reached`` is false and the bytes are those of quality 100 (a lower bound
  on what JPEG would need, so the saving stated is a lower bound too).
"""

from __future__ import annotations

import math
from typing import Any

from ..codecs import get_codec
from ..jsonio import json_number
from .measure import CorpusMeter, Probe, image_quality
from .quality_axis import QualityAxis, search_margin
from .rootfind import adaptive_search
from .settings import EncodingSettings
from .target import Target

__all__ = ["equal_quality"]


def equal_quality(meter: CorpusMeter, settings: EncodingSettings, quality: float, metric: str) -> dict[str, Any]:
    """The bytes ``settings`` (a JPEG baseline) need on the corpus to reach ``quality`` on ``metric``'s
    aggregate, interpolated between the two neighbouring qualities (see the module doc).

    Returns:
        ``{"for_quality", "jpeg_quality", "total_bytes", "quality", "reached"}``, JSON-ready.
    """
    codec = get_codec(settings.codec)
    axis = QualityAxis.for_codec(codec)
    if axis is None:
        raise ValueError(f"{settings.codec} has no quality axis to search")
    bar = Target(metric, quality)
    probes: dict[int, Probe] = {}

    def margin_at(position: int) -> float:
        probe = meter.measure(settings.with_param(axis.param, axis.value(position)))
        probes[position] = probe
        return search_margin(bar, _aggregate(meter, probe, bar))

    start = axis.position(float(settings.params.get(axis.param, axis.value(len(axis) // 2))))
    trace = adaptive_search(margin_at, len(axis), guess=start)
    if trace.answer is None:  # even the best setting falls short: a lower bound
        top = probes[len(axis) - 1]
        return _record(quality, axis.value(len(axis) - 1), top.total_bytes, _aggregate(meter, top, bar), False)
    high = probes[trace.answer]
    high_q = _aggregate(meter, high, bar)
    if trace.answer == 0:
        return _record(quality, axis.value(0), high.total_bytes, high_q, True)
    if trace.answer - 1 not in probes:
        margin_at(trace.answer - 1)
    low = probes[trace.answer - 1]
    low_q = _aggregate(meter, low, bar)
    gap = high_q - low_q
    t = (quality - low_q) / gap if gap and math.isfinite(gap) else 1.0
    t = min(max(t, 0.0), 1.0)
    value = float(axis.value(trace.answer - 1)) + t * (
        float(axis.value(trace.answer)) - float(axis.value(trace.answer - 1))
    )
    total = low.total_bytes + t * (high.total_bytes - low.total_bytes)
    return _record(quality, value, total, quality, True)


def _aggregate(meter: CorpusMeter, probe: Probe, bar: Target) -> float:
    if bar.metric == meter.target.metric:
        return probe.quality
    return bar.aggregate([image_quality(r, bar) for r in probe.images], meter.aggregate_by)


def _record(for_quality: float, value: float, total: float, reached_quality: float, reached: bool) -> dict[str, Any]:
    return {
        "for_quality": json_number(for_quality),
        "jpeg_quality": round(float(value), 2),
        "total_bytes": int(round(total)),
        "quality": json_number(reached_quality),
        "reached": reached,
    }
