"""Real-time quality monitoring: rolling statistics and direction-aware alerts over a stream of evaluations.

* :mod:`.rules` — :class:`Threshold` and :class:`DriftRule` (direction from the metric registry);
* :mod:`.config` — :class:`MonitorConfig` and its TOML layout (:func:`load_monitor_config`);
* :mod:`.alerts` — :class:`Alert` and the sinks (:class:`JsonLinesSink`, :class:`LoggingSink`,
  :class:`CallbackSink`); a failing sink keeps its alerts;
* :mod:`.core` — :class:`QualityMonitor`: windows, cooldown, hysteresis, statistics;
* :mod:`.watcher` — :class:`FolderWatcher`: new pairs in a folder pair, once each, with a state file.

See :mod:`optimizer.monitor.core` for how alerts are raised.
"""

from __future__ import annotations

from .alerts import Alert, AlertSink, CallbackSink, JsonLinesSink, LoggingSink
from .config import MonitorConfig, load_monitor_config
from .core import MetricStats, MonitorStats, QualityMonitor
from .rules import COMPOSITE, SEVERITIES, DriftRule, Severity, Threshold
from .watcher import FolderWatcher, WatchItem

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
    "Severity",
    "Threshold",
    "WatchItem",
    "load_monitor_config",
]
