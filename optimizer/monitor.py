"""Real-time quality monitoring: rolling statistics and direction-aware alerts over a stream of evaluations.

:class:`QualityMonitor` takes :class:`~optimizer.evaluator.EvaluationResult` objects as they arrive
(:meth:`~QualityMonitor.observe`, an iterator, a queue, or a :class:`FolderWatcher` over a folder pair),
keeps a rolling window per metric and for the composite, and raises alerts:

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

Window statistics (:meth:`QualityMonitor.stats`): mean, trend (slope of the least-squares line through the
window, in metric units per observation), stability (population standard deviation), count, and alert
counts by severity. Non-finite values (the infinite PSNR of identical images) are not put in the window.
"""

from __future__ import annotations

import json
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ._files import read_toml
from .errors import ConfigError, InvalidParameterError, OptimizerError, UnknownNameError
from .evaluator import EvaluationResult
from .jsonio import dumps, json_number, number_from_json
from .metrics.registry import get_spec
from .statistics import window_statistics

if TYPE_CHECKING:
    from .evaluator import Evaluator

__all__ = [
    "Alert",
    "AlertSink",
    "CallbackSink",
    "COMPOSITE",
    "DriftRule",
    "FolderWatcher",
    "JsonLinesSink",
    "LoggingSink",
    "MetricStats",
    "MonitorConfig",
    "MonitorStats",
    "QualityMonitor",
    "SEVERITIES",
    "Threshold",
    "WatchItem",
    "load_monitor_config",
]

logger = logging.getLogger("optimizer.monitor")

COMPOSITE = "composite"
Severity = Literal["warning", "critical"]
SEVERITIES: tuple[str, ...] = ("warning", "critical")
_RANK = {None: 0, "warning": 1, "critical": 2}


def _higher_is_better(metric: str) -> bool:
    return True if metric == COMPOSITE else get_spec(metric).higher_is_better


def _check_metric(metric: str) -> str:
    if not isinstance(metric, str) or not metric:
        raise InvalidParameterError(f"metric must be a non-empty name, got {metric!r}")
    if metric != COMPOSITE:
        get_spec(metric)  # UnknownNameError lists the registered metrics
    return metric


def _check_number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameterError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Threshold:
    """Warning and critical limits on each observation of one metric (or ``"composite"``).

    For a score the critical value must be at or below the warning value; for a distance at or above it.
    """

    metric: str
    warning: float | None = None
    critical: float | None = None

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        warning = _check_number(self.warning, f"threshold {self.metric}.warning")
        critical = _check_number(self.critical, f"threshold {self.metric}.critical")
        if warning is None and critical is None:
            raise InvalidParameterError(f"threshold on {self.metric!r} needs a warning or a critical value")
        if warning is not None and critical is not None:
            higher = _higher_is_better(self.metric)
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
        return _higher_is_better(self.metric)

    def breaches(self, value: float, limit: float | None) -> bool:
        if limit is None or math.isnan(value):
            return False
        return value < limit if self.higher_is_better else value > limit

    def severity(self, value: float) -> tuple[Severity, float] | None:
        """The most severe level ``value`` breaches, with its limit; ``None`` when within limits."""
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
        _check_metric(self.metric)
        warning = _check_number(self.warning, f"drift {self.metric}.warning")
        critical = _check_number(self.critical, f"drift {self.metric}.critical")
        _check_number(self.baseline, f"drift {self.metric}.baseline")
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
        return _higher_is_better(self.metric)

    def drop(self, mean: float, baseline: float) -> float:
        """How much worse ``mean`` is than ``baseline`` (negative when better)."""
        return baseline - mean if self.higher_is_better else mean - baseline

    def limit(self, severity: str, baseline: float) -> float:
        """The rolling mean at which ``severity`` fires."""
        amount = float(self.critical if severity == "critical" else self.warning)  # type: ignore[arg-type]
        return baseline - amount if self.higher_is_better else baseline + amount

    def level(self, drop: float, held: str | None, rearm: float) -> str | None:
        """The drift state for ``drop`` given the currently held state (hysteresis)."""
        for severity, amount in (("critical", self.critical), ("warning", self.warning)):
            if amount is None:
                continue
            if drop > amount or (_RANK[held] >= _RANK[severity] and drop > amount * rearm):
                return severity
        return None


# --------------------------------------------------------------------------------------------------
# Alerts and sinks


@dataclass(frozen=True)
class Alert:
    """One alert; ``kind`` is ``threshold``, ``drift`` or ``error`` (an item that could not be scored).

    ``value`` is the observation (threshold), the rolling mean (drift) or ``None`` (error); ``threshold``
    is the limit it crossed (for drift, the rolling mean at which the alert fires). ``suppressed`` counts
    similar alerts held back by the cooldown since the previous one on this metric.
    """

    severity: str
    metric: str
    value: float | None
    threshold: float | None
    kind: str
    message: str
    item: str | None
    timestamp: str
    baseline: float | None = None
    suppressed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("value", "threshold", "baseline"):
            if data[key] is not None:
                data[key] = json_number(data[key])
        return data

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        values = dict(data)
        for key in ("value", "threshold", "baseline"):
            if values.get(key) is not None:
                values[key] = number_from_json(values[key])
        return cls(**values)


@runtime_checkable
class AlertSink(Protocol):
    """Anything with ``emit(alert)``; plain callables are wrapped in :class:`CallbackSink`."""

    def emit(self, alert: Alert) -> None: ...


class CallbackSink:
    """Calls ``callback(alert)`` for every alert."""

    def __init__(self, callback: Callable[[Alert], Any]) -> None:
        self.callback = callback

    def emit(self, alert: Alert) -> None:
        self.callback(alert)


class LoggingSink:
    """Logs alerts: warnings at ``WARNING``, critical alerts at ``CRITICAL`` (JSON in ``extra["alert"]``)."""

    LEVELS = {"warning": logging.WARNING, "critical": logging.CRITICAL}

    def __init__(self, log: logging.Logger | str | None = None) -> None:
        self.logger = log if isinstance(log, logging.Logger) else logging.getLogger(log or "optimizer.monitor")

    def emit(self, alert: Alert) -> None:
        self.logger.log(
            self.LEVELS.get(alert.severity, logging.WARNING), "%s", alert.message, extra={"alert": alert.to_dict()}
        )


class JsonLinesSink:
    """Appends one JSON object per alert to a file, flushed line by line so a crash loses nothing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _end_torn_line(self.path)
        self._lock = threading.Lock()

    def emit(self, alert: Alert) -> None:
        line = alert.to_json() + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

    def read(self) -> list[Alert]:
        """The alerts written so far (a torn last line is skipped)."""
        return [Alert.from_dict(d) for d in _read_json_lines(self.path)]


def _as_sink(sink: AlertSink | Callable[[Alert], Any]) -> AlertSink:
    if isinstance(sink, AlertSink):
        return sink
    if callable(sink):
        return CallbackSink(sink)
    raise InvalidParameterError(f"a sink is a callable or has emit(alert), got {type(sink).__name__}")


def _end_torn_line(path: Path) -> None:
    """Terminate a last line cut short by a crash, so the next append starts a line of its own."""
    try:
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    except FileNotFoundError:
        return


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a line that is not valid JSON (torn write?)", path, number)
    return rows


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class MonitorConfig:
    """Thresholds, drift rules, window and storm control; shared by the API, the CLI and TOML files.

    TOML layout (every key optional; unknown keys are a :class:`ConfigError`)::

        window = 100            # observations in the rolling window
        cooldown = 10           # observations during which a repeated threshold alert is suppressed
        cooldown_seconds = 0.0  # and/or seconds
        rearm = 0.5             # drift state clears when the drop falls below rearm x its limit

        [thresholds.composite]
        warning = 0.7
        critical = 0.5

        [thresholds.lpips]      # a distance: alerts when it rises above
        warning = 0.15
        critical = 0.25

        [drift.composite]
        warning = 0.03
        critical = 0.06
        baseline = 0.85         # optional; default: the mean of the first full window
    """

    thresholds: tuple[Threshold, ...] = ()
    drift: tuple[DriftRule, ...] = ()
    window: int = 100
    cooldown: int = 10
    cooldown_seconds: float = 0.0
    rearm: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise InvalidParameterError(f"window must be an integer >= 1, got {self.window!r}")
        if self.window < 2 and self.drift:
            raise InvalidParameterError(f"drift needs a window of at least 2 observations, got {self.window}")
        if isinstance(self.cooldown, bool) or not isinstance(self.cooldown, int) or self.cooldown < 0:
            raise InvalidParameterError(f"cooldown must be an integer >= 0 (observations), got {self.cooldown!r}")
        seconds = _check_number(self.cooldown_seconds, "cooldown_seconds")
        if seconds is None or seconds < 0:
            raise InvalidParameterError(f"cooldown_seconds must be >= 0, got {self.cooldown_seconds!r}")
        rearm = _check_number(self.rearm, "rearm")
        if rearm is None or not 0.0 <= rearm <= 1.0:
            raise InvalidParameterError(f"rearm must lie in [0, 1], got {self.rearm!r}")
        for kind, rules in (("threshold", self.thresholds), ("drift rule", self.drift)):
            seen = [r.metric for r in rules]
            duplicates = sorted({m for m in seen if seen.count(m) > 1})
            if duplicates:
                raise InvalidParameterError(f"one {kind} per metric, got several for {', '.join(duplicates)}")

    @property
    def metrics(self) -> list[str]:
        """Registered metrics the rules refer to (not the composite): what an evaluator must compute."""
        names = [r.metric for r in (*self.thresholds, *self.drift) if r.metric != COMPOSITE]
        return list(dict.fromkeys(names))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "monitor config") -> MonitorConfig:
        """Build from a parsed TOML/JSON mapping; every problem is a :class:`ConfigError` naming ``source``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table, got {type(data).__name__}")
        if set(data) == {"monitor"} and isinstance(data["monitor"], Mapping):
            data = data["monitor"]
        known = {"thresholds", "drift", "window", "cooldown", "cooldown_seconds", "rearm"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            thresholds = tuple(
                Threshold(metric, **_rule_values(spec, {"warning", "critical"}, f"{source}: thresholds.{metric}"))
                for metric, spec in _table(data.get("thresholds", {}), f"{source}: thresholds").items()
            )
            drift = tuple(
                DriftRule(
                    metric, **_rule_values(spec, {"warning", "critical", "baseline"}, f"{source}: drift.{metric}")
                )
                for metric, spec in _table(data.get("drift", {}), f"{source}: drift").items()
            )
            options = {k: data[k] for k in ("window", "cooldown", "cooldown_seconds", "rearm") if k in data}
            return cls(thresholds=thresholds, drift=drift, **options)
        except (InvalidParameterError, UnknownNameError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> MonitorConfig:
        return load_monitor_config(path)

    def to_dict(self) -> dict[str, Any]:
        def rule(r: Threshold | DriftRule) -> dict[str, float]:
            return {k: v for k, v in asdict(r).items() if k != "metric" and v is not None}

        return {
            "window": self.window,
            "cooldown": self.cooldown,
            "cooldown_seconds": self.cooldown_seconds,
            "rearm": self.rearm,
            "thresholds": {t.metric: rule(t) for t in self.thresholds},
            "drift": {d.metric: rule(d) for d in self.drift},
        }


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of metric names, got {type(value).__name__}")
    return value


def _rule_values(spec: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a table with {' / '.join(sorted(allowed))}, got {spec!r}")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return dict(spec)


def load_monitor_config(path: str | os.PathLike[str]) -> MonitorConfig:
    """Read a :class:`MonitorConfig` from a TOML file (see its docstring for the layout)."""
    return MonitorConfig.from_mapping(read_toml(path, "monitor config"), source=str(path))


# --------------------------------------------------------------------------------------------------
# Statistics


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
        self.sinks: list[AlertSink] = [_as_sink(s) for s in sinks]
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

    @classmethod
    def from_config(
        cls,
        config: MonitorConfig | str | os.PathLike[str],
        *,
        sinks: Iterable[AlertSink | Callable[[Alert], Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> QualityMonitor:
        """A monitor from a :class:`MonitorConfig` or a TOML file."""
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
        return self.config.window

    def add_sink(self, sink: AlertSink | Callable[[Alert], Any]) -> None:
        self.sinks.append(_as_sink(sink))

    # -- input ---------------------------------------------------------------------------------------

    def observe(
        self, result: ResultLike, item: str | None = None, *, silent: bool = False, timestamp: float | None = None
    ) -> list[Alert]:
        """Add one result; returns the alerts it raised (already sent to the sinks unless ``silent``).

        ``item`` identifies the observation in alerts (default: the result's distorted path). ``silent``
        replays history (restoring windows, baselines and counts) without notifying the sinks.
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
                            track.baseline = math.fsum(track.values) / len(track.values)
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
        """Record an item that could not be scored; it becomes an ``error`` alert (never an exception)."""
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
        """Observe every result of an iterable (e.g. a generator that yields results as they arrive)."""
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
        """Observe results from a queue until ``stop_event`` is set and the queue is drained, or ``None``
        arrives. Items may be results or ``(item_id, result)`` pairs. Returns the alerts raised."""
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
        """A snapshot of the statistics (composite first, then metrics in order of appearance)."""
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
                    minimum=min(values) if values else None,
                    maximum=max(values) if values else None,
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

    # -- internals ----------------------------------------------------------------------------------

    def _track(self, metric: str) -> _Track:
        track = self._tracks.get(metric)
        if track is None:
            track = _Track(metric, _higher_is_better(metric), deque(maxlen=self.window))
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
            and _RANK[severity] <= _RANK[track.cooldown_severity]
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
        mean = math.fsum(track.values) / len(track.values)
        drop = rule.drop(mean, track.baseline)
        held = track.drift_state
        level = rule.level(drop, held, self.config.rearm)
        track.drift_state = level
        if _RANK[level] <= _RANK[held]:
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
        for alert in alerts:
            for sink in self.sinks:
                try:
                    sink.emit(alert)
                except Exception:  # noqa: BLE001 - a broken sink must not stop monitoring
                    logger.exception("alert sink %r failed", sink)


def _rules(value: Any, kind: type[Threshold] | type[DriftRule]) -> tuple[Any, ...]:
    if isinstance(value, Mapping):
        rules = []
        for metric, spec in value.items():
            if isinstance(spec, kind):
                rules.append(spec)
            elif isinstance(spec, Mapping):
                rules.append(kind(metric, **spec))
            else:
                raise InvalidParameterError(f"{kind.__name__} for {metric!r} must be a mapping, got {spec!r}")
        return tuple(rules)
    rules = tuple(value)
    for rule in rules:
        if not isinstance(rule, kind):
            raise InvalidParameterError(f"expected {kind.__name__} objects, got {type(rule).__name__}")
    return rules


# --------------------------------------------------------------------------------------------------
# Watching a folder pair


@dataclass(frozen=True)
class WatchItem:
    """One processed pair: its result, or the error that kept it from being scored."""

    key: str
    original: str
    processed: str
    result: EvaluationResult | None = None
    error: str | None = None
    original_bytes: int = 0
    processed_bytes: int = 0


_Signature = tuple[int, int, int, int]


class FolderWatcher:
    """Scores new pairs that appear in two folders, each once, and feeds them to a monitor.

    Files pair by relative path and stem as in :func:`optimizer.batch.pair_folders` (``a/b.png`` with
    ``a/b.webp``); hidden files and unknown extensions are ignored, so writers that write to a temporary
    name and rename are picked up only when complete. A pair is read only when both files are *settled*:
    their size and modification time did not change since the previous poll and are at least ``settle``
    seconds old, so half-written files are not scored. A pair that cannot be scored (unreadable, sizes
    differ) becomes an ``error`` alert and is not retried until one of its files changes.

    With ``state_file``, every processed pair (result or error) is appended to a JSON-lines file before
    the next one is read. A new watcher on the same file skips those pairs and replays their results into
    the monitor silently, restoring its windows, baselines and counts: stopping loses nothing already read.
    A file rewritten later (new size or modification time) is a new observation.
    """

    STATE_VERSION = 1

    def __init__(
        self,
        orig_dir: str | os.PathLike[str],
        processed_dir: str | os.PathLike[str],
        evaluator: Evaluator | None = None,
        *,
        monitor: QualityMonitor | None = None,
        state_file: str | os.PathLike[str] | None = None,
        settle: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.orig_dir = Path(orig_dir)
        self.processed_dir = Path(processed_dir)
        for root in (self.orig_dir, self.processed_dir):
            if not root.is_dir():
                raise InvalidParameterError(f"{root} is not a folder")
        if evaluator is None:
            from .evaluator import Evaluator

            evaluator = Evaluator()
        self.evaluator = evaluator
        self.monitor = monitor
        self.settle = _check_number(settle, "settle") or 0.0
        if self.settle < 0:
            raise InvalidParameterError(f"settle must be >= 0 seconds, got {settle}")
        self.clock = clock
        self.state_file = Path(state_file) if state_file is not None else None
        self._done: dict[str, _Signature] = {}
        self._pending: dict[str, _Signature] = {}
        self._reported: set[str] = set()
        self.replayed = 0
        self.processed = 0
        if self.state_file is not None:
            self._replay()

    # -- public ---------------------------------------------------------------------------------------

    @property
    def done(self) -> set[str]:
        """Keys already processed (scored or failed), including those restored from the state file."""
        return set(self._done)

    @property
    def pending(self) -> list[str]:
        """Keys seen on the last poll but not settled yet."""
        return sorted(self._pending)

    def poll(self) -> list[WatchItem]:
        """Scan both folders once and process every settled pair not processed before."""
        from .batch import index_folder

        now = self.clock()
        originals, orig_ambiguous = index_folder(self.orig_dir)
        processed, proc_ambiguous = index_folder(self.processed_dir)
        for issue in orig_ambiguous + proc_ambiguous:
            if issue.path not in self._reported:
                self._reported.add(issue.path)
                self._report_unpairable(issue.path, issue.reason)
        items: list[WatchItem] = []
        seen: set[str] = set()
        for key in sorted(originals.keys() & processed.keys()):
            orig, proc = originals[key], processed[key]
            signature = _signature(orig, proc)
            if signature is None:  # vanished between listing and stat
                continue
            if self._done.get(key) == signature:
                continue
            seen.add(key)
            if not self._settled(key, signature, orig, proc, now):
                continue
            self._pending.pop(key, None)
            items.append(self._process(key, orig, proc, signature))
        for key in list(self._pending):
            if key not in seen:
                del self._pending[key]
        return items

    def once(self) -> list[WatchItem]:
        """Process what is there now; pairs still being written get one wait of up to ``settle`` seconds."""
        items = self.poll()
        if self._pending:
            time.sleep(self.settle)
            items += self.poll()
        return items

    def run(
        self,
        *,
        interval: float = 1.0,
        stop_event: threading.Event | None = None,
        max_polls: int | None = None,
        on_items: Callable[[list[WatchItem]], Any] | None = None,
    ) -> int:
        """Poll every ``interval`` seconds until ``stop_event`` is set (or ``max_polls`` polls); returns the
        number of pairs processed. Ctrl-C propagates after the pair in progress is either recorded or left
        for the next run."""
        if interval <= 0:
            raise InvalidParameterError(f"interval must be > 0 seconds, got {interval}")
        stop = stop_event or threading.Event()
        polls = 0
        count = 0
        while not stop.is_set():
            items = self.poll()
            count += len(items)
            if on_items is not None and items:
                on_items(items)
            polls += 1
            if max_polls is not None and polls >= max_polls:
                break
            stop.wait(interval)
        return count

    # -- internals ----------------------------------------------------------------------------------

    def _settled(self, key: str, signature: _Signature, orig: Path, proc: Path, now: float) -> bool:
        newest = max(signature[1], signature[3]) / 1e9
        previous = self._pending.get(key)
        if previous != signature:
            self._pending[key] = signature
            # first sight: ready at once only when both files were last written over `settle` seconds ago
            return previous is None and now - newest >= self.settle
        return now - newest >= self.settle

    def _process(self, key: str, orig: Path, proc: Path, signature: _Signature) -> WatchItem:
        try:
            result = self.evaluator.for_reference(orig).score(proc)
        except (OptimizerError, OSError, ValueError) as exc:
            item = WatchItem(
                key,
                str(orig),
                str(proc),
                error=str(exc) or type(exc).__name__,
                original_bytes=signature[0],
                processed_bytes=signature[2],
            )
            logger.warning("%s: could not be scored: %s", key, item.error)
            if self.monitor is not None:
                self.monitor.report_error(key, item.error or "")
        else:
            item = WatchItem(
                key, str(orig), str(proc), result=result, original_bytes=signature[0], processed_bytes=signature[2]
            )
            if self.monitor is not None:
                self.monitor.observe(result, key)
        self._record(item, signature)
        self._done[key] = signature
        self.processed += 1
        return item

    def _report_unpairable(self, path: str, reason: str) -> None:
        logger.warning("%s: %s", path, reason)
        if self.monitor is not None:
            self.monitor.report_error(path, reason)

    def _record(self, item: WatchItem, signature: _Signature) -> None:
        if self.state_file is None:
            return
        entry: dict[str, Any] = {
            "v": self.STATE_VERSION,
            "key": item.key,
            "original": item.original,
            "processed": item.processed,
            "signature": list(signature),
            "time": self.clock(),
        }
        if item.result is not None:
            entry["result"] = item.result.to_dict()
        else:
            entry["error"] = item.error
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file, "a", encoding="utf-8") as handle:
            handle.write(dumps(entry) + "\n")
            handle.flush()

    def _replay(self) -> None:
        if self.state_file is None:
            return
        _end_torn_line(self.state_file)
        for entry in _read_json_lines(self.state_file):
            try:
                key = str(entry["key"])
                signature = tuple(int(v) for v in entry["signature"])
                stamp = float(entry.get("time", self.clock()))
                result = EvaluationResult.from_dict(entry["result"]) if "result" in entry else None
                error = entry.get("error")
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("%s: skipping a malformed state entry (%s)", self.state_file, exc)
                continue
            if len(signature) != 4:
                logger.warning("%s: skipping a state entry with a malformed signature", self.state_file)
                continue
            self._done[key] = signature  # type: ignore[assignment]
            self.replayed += 1
            if self.monitor is None:
                continue
            if result is not None:
                self.monitor.observe(result, key, silent=True, timestamp=stamp)
            else:
                self.monitor.report_error(key, str(error), silent=True, timestamp=stamp)


def _signature(orig: Path, proc: Path) -> _Signature | None:
    try:
        a, b = orig.stat(), proc.stat()
    except OSError:
        return None
    return (a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns)
