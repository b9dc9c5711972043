"""The monitor: rolling statistics and direction-aware alerts over a stream of evaluation results.

:class:`QualityMonitor` takes :class:`~optimizer.evaluator.EvaluationResult` objects as they arrive
(:meth:`~QualityMonitor.observe`, an iterator, a queue, or a :class:`~optimizer.monitor.FolderWatcher` over a
folder pair), keeps a rolling window per metric and for the composite, and raises alerts:

* **threshold** alerts compare each observation with a per-metric ``warning`` / ``critical`` value. The
  direction comes from the metric registry: a distance (LPIPS, DISTS) alerts when it *rises above* the
  value, a score (SSIMULACRA 2, SSIM, the composite) when it *falls below* it.
* **drift** alerts compare the rolling mean with a baseline (a given value, or the mean of the first full
  window) and fire when quality has dropped by more than ``warning`` / ``critical`` (in the metric's units,
  in the direction of worse quality).
* **error** alerts report an item that could not be scored (an unreadable or mismatched file).

Alert storms are avoided two ways. Threshold alerts use a **per-metric cooldown**: after an alert, further
threshold alerts on that metric at the same or a lower severity are suppressed for the next ``cooldown``
observations (and, when ``cooldown_seconds`` is set, for that many seconds as well); a more severe alert
always fires at once, and the next alert that does fire says how many were suppressed. Drift alerts use
**hysteresis**: once raised, a drift state holds until the drop recovers below ``rearm`` times its limit
(default half), so a mean hovering at the limit raises one alert, not one per observation.

Window statistics (:meth:`QualityMonitor.stats`, computed by :mod:`optimizer.statistics`): mean, trend (slope
of the least-squares line through the window, in metric units per observation), stability (population
standard deviation), count, and alert counts by severity. Non-finite values (the infinite PSNR of identical
images) are not put in the window.

Sinks that fail keep their alerts (see :mod:`optimizer.monitor.alerts`).
"""

from __future__ import annotations

import logging
import math
import os
import queue as queue_module
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidParameterError, UnknownNameError
from ..evaluator import EvaluationResult
from ..jsonio import json_number
from ..metrics.registry import get_spec
from ..statistics import statistic, window_statistics
from .alerts import Alert, AlertSink, as_sink, sink_name
from .config import MonitorConfig, load_monitor_config
from .rules import COMPOSITE, RANK, SEVERITIES, DriftRule, Severity, Threshold, higher_is_better

__all__ = ["MetricStats", "MonitorStats", "QualityMonitor", "ResultLike"]

logger = logging.getLogger("optimizer.monitor")


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        raise InvalidParameterError(f"a timestamp is seconds since the epoch, got {timestamp!r}") from None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


@dataclass(frozen=True)
class MetricStats:
    """Rolling-window statistics of one metric (in its own units)."""

    metric: str
    higher_is_better: bool
    count: int
    window_count: int
    mean: float | None
    trend: float | None
    std: float | None
    minimum: float | None
    maximum: float | None
    last: float | None
    baseline: float | None
    drift_state: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (non-finite numbers as strings).

        Returns:
            The statistics as a dict.
        """
        return {k: (json_number(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class MonitorStats:
    """A snapshot: observations, errors, alert counts by severity and kind, and per-metric statistics."""

    observed: int
    errors: int
    alerts: dict[str, int]
    alerts_by_kind: dict[str, int]
    suppressed: int
    metrics: dict[str, MetricStats]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (non-finite numbers as strings).

        Returns:
            The snapshot as a dict.
        """
        data = asdict(self)
        data["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        return data


@dataclass
class _Track:
    """The rolling window and alert state of one metric."""

    metric: str
    higher_is_better: bool
    values: deque[float]
    count: int = 0
    last: float | None = None
    baseline: float | None = None
    drift_state: str | None = None
    cooldown_severity: str | None = None
    cooldown_index: int = -1
    cooldown_time: float = -math.inf
    suppressed: int = 0


# --------------------------------------------------------------------------------------------------
# The monitor


ResultLike = EvaluationResult | Mapping[str, Any]


class QualityMonitor:
    """Rolling statistics and alerts over evaluation results as they arrive (see the module docstring).

    ``thresholds``: :class:`Threshold` objects, or a mapping ``metric -> {"warning": x, "critical": y}``.
    ``drift``: :class:`DriftRule` objects, or a mapping ``metric -> {"warning": d, "critical": d2,
    "baseline": b}``. ``sinks``: callables or objects with ``emit(alert)``. ``clock`` returns seconds since
    the epoch (injectable for tests). Thread-safe: results may be observed from several threads.
    """

    def __init__(
        self,
        thresholds: Iterable[Threshold] | Mapping[str, Mapping[str, float]] = (),
        *,
        window: int = 100,
        drift: Iterable[DriftRule] | Mapping[str, Mapping[str, float]] = (),
        sinks: Iterable[AlertSink | Callable[[Alert], Any]] = (),
        cooldown: int = 10,
        cooldown_seconds: float = 0.0,
        rearm: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = MonitorConfig(
            thresholds=_rules(thresholds, Threshold),
            drift=_rules(drift, DriftRule),
            window=window,
            cooldown=cooldown,
            cooldown_seconds=cooldown_seconds,
            rearm=rearm,
        )
        self.sinks: list[AlertSink] = [as_sink(s) for s in sinks]
        self.clock = clock
        self._thresholds = {t.metric: t for t in self.config.thresholds}
        self._drift = {d.metric: d for d in self.config.drift}
        self._tracks: dict[str, _Track] = {}
        self._observed = 0
        self._errors = 0
        self._alert_counts = {s: 0 for s in SEVERITIES}
        self._kind_counts = {"threshold": 0, "drift": 0, "error": 0}
        self._suppressed = 0
        self._missing_warned: set[str] = set()
        self._lock = threading.RLock()
        self._sink_lock = threading.RLock()
        self._backlog: dict[int, list[Alert]] = {}
        self._failing: dict[int, str] = {}
        #: Failed deliveries so far (each retry that fails counts).
        self.sink_failures = 0

    @classmethod
    def from_config(
        cls,
        config: MonitorConfig | str | os.PathLike[str],
        *,
        sinks: Iterable[AlertSink | Callable[[Alert], Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> QualityMonitor:
        """A monitor from a config object or a TOML file.

        Args:
            config: A :class:`MonitorConfig`, or the path of a TOML file.
            sinks: Callables or objects with ``emit(alert)``.
            clock: Seconds since the epoch (injectable for tests).

        Returns:
            The monitor.
        """
        if not isinstance(config, MonitorConfig):
            config = load_monitor_config(config)
        return cls(
            config.thresholds,
            window=config.window,
            drift=config.drift,
            sinks=sinks,
            cooldown=config.cooldown,
            cooldown_seconds=config.cooldown_seconds,
            rearm=config.rearm,
            clock=clock,
        )

    @property
    def window(self) -> int:
        """Observations in each rolling window."""
        return self.config.window

    def add_sink(self, sink: AlertSink | Callable[[Alert], Any]) -> None:
        """Send later alerts to one more sink.

        Args:
            sink: A callable or an object with ``emit(alert)``.
        """
        self.sinks.append(as_sink(sink))

    # -- input ---------------------------------------------------------------------------------------

    def observe(
        self, result: ResultLike, item: str | None = None, *, silent: bool = False, timestamp: float | None = None
    ) -> list[Alert]:
        """Add one result and raise the alerts it triggers.

        Args:
            result: An :class:`~optimizer.evaluator.EvaluationResult`, or its ``to_dict()`` mapping.
            item: Identifies the observation in alerts (default: the result's distorted path).
            silent: Replay history (restoring windows, baselines and counts) without notifying the sinks.
            timestamp: Seconds since the epoch of the observation (default: the clock).

        Returns:
            The alerts raised (already sent to the sinks unless ``silent``).
        """
        if not isinstance(result, EvaluationResult):
            if not isinstance(result, Mapping):
                raise InvalidParameterError(
                    f"observe() takes an EvaluationResult or its to_dict() mapping, got {type(result).__name__}"
                )
            result = EvaluationResult.from_dict(result)
        now = self.clock() if timestamp is None else timestamp
        label = item if item is not None else result.distorted
        values = {**result.scores, COMPOSITE: result.composite}
        alerts: list[Alert] = []
        with self._lock:
            self._observed += 1
            for metric, value in values.items():
                if metric != COMPOSITE:
                    try:
                        get_spec(metric)
                    except UnknownNameError:
                        continue
                track = self._track(metric)
                value = float(value)
                track.count += 1
                track.last = value
                if math.isfinite(value):
                    track.values.append(value)
                    if track.baseline is None and metric in self._drift:
                        rule = self._drift[metric]
                        if rule.baseline is not None:
                            track.baseline = rule.baseline
                        elif len(track.values) == self.window:
                            track.baseline = statistic(track.values, "mean")
                alert = self._check_threshold(track, value, label, now)
                if alert is not None:
                    alerts.append(alert)
                alert = self._check_drift(track, label, now)
                if alert is not None:
                    alerts.append(alert)
            for metric in self._thresholds.keys() - values.keys():
                if metric not in self._missing_warned:
                    self._missing_warned.add(metric)
                    logger.warning("a threshold is set on %r but the results carry no %r score", metric, metric)
            self._count(alerts)
        if not silent:
            self._emit(alerts)
        return alerts

    def report_error(
        self,
        item: str,
        message: str,
        *,
        severity: Severity = "warning",
        silent: bool = False,
        timestamp: float | None = None,
    ) -> Alert:
        """Record an item that could not be scored; it becomes an ``error`` alert (never an exception).

        Args:
            item: The item (a file or pair key).
            message: Why it could not be scored.
            severity: ``"warning"`` or ``"critical"``.
            silent: Count it without notifying the sinks (replay).
            timestamp: Seconds since the epoch (default: the clock).

        Returns:
            The alert.
        """
        if severity not in SEVERITIES:
            raise InvalidParameterError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        now = self.clock() if timestamp is None else timestamp
        alert = Alert(severity, "file", None, None, "error", f"{item}: could not be scored: {message}", item, _iso(now))
        with self._lock:
            self._errors += 1
            self._count([alert])
        if not silent:
            self._emit([alert])
        return alert

    def consume(self, results: Iterable[ResultLike]) -> list[Alert]:
        """Observe every result of an iterable (e.g. a generator that yields results as they arrive).

        Args:
            results: Results or their ``to_dict()`` mappings.

        Returns:
            The alerts raised.
        """
        alerts: list[Alert] = []
        for result in results:
            alerts += self.observe(result)
        return alerts

    def consume_queue(
        self,
        source: queue_module.Queue[Any],
        stop_event: threading.Event | None = None,
        *,
        poll: float = 0.1,
    ) -> list[Alert]:
        """Observe results from a queue until ``stop_event`` is set and the queue is drained, or ``None`` arrives.

        Args:
            source: Items are results or ``(item_id, result)`` pairs; ``None`` ends.
            stop_event: Stop once set and the queue is empty.
            poll: Seconds to wait for an item before checking ``stop_event``.

        Returns:
            The alerts raised.
        """
        alerts: list[Alert] = []
        while True:
            try:
                entry = source.get(timeout=poll)
            except queue_module.Empty:
                if stop_event is not None and stop_event.is_set():
                    return alerts
                continue
            try:
                if entry is None:
                    return alerts
                if isinstance(entry, tuple) and len(entry) == 2:
                    alerts += self.observe(entry[1], entry[0])
                else:
                    alerts += self.observe(entry)
            finally:
                source.task_done()

    # -- output --------------------------------------------------------------------------------------

    def stats(self) -> MonitorStats:
        """A snapshot of the statistics.

        Returns:
            Counts, alerts by severity and kind, and per-metric window statistics (composite first, then the
            metrics in order of appearance).
        """
        with self._lock:
            metrics = {}
            order = sorted(self._tracks, key=lambda m: (m != COMPOSITE,))
            for name in order:
                track = self._tracks[name]
                values = list(track.values)
                mean, trend, std = window_statistics(values)
                metrics[name] = MetricStats(
                    metric=name,
                    higher_is_better=track.higher_is_better,
                    count=track.count,
                    window_count=len(values),
                    mean=mean,
                    trend=trend,
                    std=std,
                    minimum=statistic(values, "min") if values else None,
                    maximum=statistic(values, "max") if values else None,
                    last=track.last,
                    baseline=track.baseline,
                    drift_state=track.drift_state,
                )
            return MonitorStats(
                observed=self._observed,
                errors=self._errors,
                alerts=dict(self._alert_counts),
                alerts_by_kind=dict(self._kind_counts),
                suppressed=self._suppressed,
                metrics=metrics,
            )

    def flush_sinks(self) -> list[tuple[str, Alert]]:
        """Retry every alert a sink failed to take.

        Returns:
            What is still undelivered, as (sink name, alert) pairs, oldest first per sink (empty when every
            sink has taken every alert).
        """
        with self._sink_lock:
            for sink in self.sinks:
                self._deliver(sink, self._backlog.setdefault(id(sink), []))
        return self.undelivered()

    def undelivered(self) -> list[tuple[str, Alert]]:
        """Alerts a sink has not taken yet (see :meth:`flush_sinks`).

        Returns:
            (sink name, alert) pairs.
        """
        with self._sink_lock:
            return [(sink_name(s), a) for s in self.sinks for a in self._backlog.get(id(s), [])]

    def sink_errors(self) -> dict[str, str]:
        """Sinks whose last delivery failed, with the reason.

        Returns:
            Sink name -> the error of its last failed delivery.
        """
        with self._sink_lock:
            return {sink_name(s): self._failing[id(s)] for s in self.sinks if id(s) in self._failing}

    # -- internals ----------------------------------------------------------------------------------

    def _track(self, metric: str) -> _Track:
        track = self._tracks.get(metric)
        if track is None:
            track = _Track(metric, higher_is_better(metric), deque(maxlen=self.window))
            self._tracks[metric] = track
        return track

    def _check_threshold(self, track: _Track, value: float, item: str | None, now: float) -> Alert | None:
        rule = self._thresholds.get(track.metric)
        if rule is None:
            return None
        hit = rule.severity(value)
        if hit is None:
            return None
        severity, limit = hit
        index = track.count
        within = (
            track.cooldown_severity is not None
            and RANK[severity] <= RANK[track.cooldown_severity]
            and (
                index - track.cooldown_index <= self.config.cooldown
                or now - track.cooldown_time < self.config.cooldown_seconds
            )
        )
        if within:
            track.suppressed += 1
            self._suppressed += 1
            return None
        suppressed, track.suppressed = track.suppressed, 0
        track.cooldown_severity, track.cooldown_index, track.cooldown_time = severity, index, now
        verb = "fell below" if rule.higher_is_better else "rose above"
        message = f"{track.metric} {_fmt(value)} {verb} the {severity} threshold {_fmt(limit)}"
        if item:
            message += f" on {item}"
        if suppressed:
            message += f" ({suppressed} similar alert(s) suppressed since the last one)"
        return Alert(severity, track.metric, value, limit, "threshold", message, item, _iso(now), None, suppressed)

    def _check_drift(self, track: _Track, item: str | None, now: float) -> Alert | None:
        rule = self._drift.get(track.metric)
        if rule is None or track.baseline is None or len(track.values) < self.window:
            return None
        mean = statistic(track.values, "mean")
        drop = rule.drop(mean, track.baseline)
        held = track.drift_state
        level = rule.level(drop, held, self.config.rearm)
        track.drift_state = level
        if level is None or RANK[level] <= RANK[held]:
            return None
        limit = rule.limit(level, track.baseline)
        verb = "fell" if rule.higher_is_better else "rose"
        side = "below" if rule.higher_is_better else "above"
        amount = rule.critical if level == "critical" else rule.warning
        message = (
            f"{track.metric} rolling mean {_fmt(mean)} {verb} {_fmt(abs(drop))} {side} its baseline "
            f"{_fmt(track.baseline)} ({level} drift limit {_fmt(float(amount))}, window {self.window})"  # type: ignore[arg-type]
        )
        return Alert(level, track.metric, mean, limit, "drift", message, item, _iso(now), track.baseline)

    def _count(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            self._alert_counts[alert.severity] = self._alert_counts.get(alert.severity, 0) + 1
            self._kind_counts[alert.kind] = self._kind_counts.get(alert.kind, 0) + 1

    def _emit(self, alerts: Sequence[Alert]) -> None:
        with self._sink_lock:
            for sink in self.sinks:
                backlog = self._backlog.setdefault(id(sink), [])
                backlog.extend(alerts)
                self._deliver(sink, backlog)

    def _deliver(self, sink: AlertSink, backlog: list[Alert]) -> None:
        """Send a sink its backlog in order; stop at the first failure and keep the rest (reported once)."""
        while backlog:
            try:
                sink.emit(backlog[0])
            except Exception as exc:  # noqa: BLE001 - a broken sink must not stop monitoring
                self.sink_failures += 1
                reason = str(exc) or type(exc).__name__
                if self._failing.get(id(sink)) != reason:
                    self._failing[id(sink)] = reason
                    logger.error(
                        "alert sink %s failed: %s; %d alert(s) kept and retried later",
                        sink_name(sink),
                        reason,
                        len(backlog),
                    )
                return
            backlog.pop(0)
            self._failing.pop(id(sink), None)


def _rules(value: Any, kind: type[Threshold] | type[DriftRule]) -> tuple[Any, ...]:
    if isinstance(value, Mapping):
        built: list[Threshold | DriftRule] = []
        for metric, spec in value.items():
            if isinstance(spec, kind):
                built.append(spec)
            elif isinstance(spec, Mapping):
                built.append(kind(metric, **spec))
            else:
                raise InvalidParameterError(f"{kind.__name__} for {metric!r} must be a mapping, got {spec!r}")
        return tuple(built)
    rules = tuple(value)
    for rule in rules:
        if not isinstance(rule, kind):
            raise InvalidParameterError(f"expected {kind.__name__} objects, got {type(rule).__name__}")
    return rules
