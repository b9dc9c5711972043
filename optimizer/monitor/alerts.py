"""Alerts and where they go (sinks).

A sink is anything with ``emit(alert)``. A sink that fails (a full disk under the alert log, a callback that
raises) never stops monitoring and never loses an alert silently: :class:`QualityMonitor` keeps what it could
not deliver, retries it before the next alert to that sink, reports the failure, and hands what is still
undelivered to its owner (:meth:`QualityMonitor.undelivered`; the CLI prints it on stderr and exits 3).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidParameterError, OutputError
from ..jsonio import dumps, json_number, number_from_json
from ._jsonlines import append_line, end_torn_line, open_append, read_json_lines

__all__ = ["Alert", "AlertSink", "CallbackSink", "JsonLinesSink", "LoggingSink", "as_sink", "sink_name"]

logger = logging.getLogger("optimizer.monitor")


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
        """Plain JSON data (non-finite numbers as strings).

        Returns:
            A dict that :meth:`from_dict` reads back.
        """
        data = asdict(self)
        for key in ("value", "threshold", "baseline"):
            if data[key] is not None:
                data[key] = json_number(data[key])
        return data

    def to_json(self) -> str:
        """One line of JSON.

        Returns:
            The alert as JSON text.
        """
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Rebuild an alert from :meth:`to_dict` output.

        Args:
            data: The mapping.

        Returns:
            The alert.
        """
        values = dict(data)
        for key in ("value", "threshold", "baseline"):
            if values.get(key) is not None:
                values[key] = number_from_json(values[key])
        return cls(**values)


@runtime_checkable
class AlertSink(Protocol):
    """Anything with ``emit(alert)``; plain callables are wrapped in :class:`CallbackSink`."""

    def emit(self, alert: Alert) -> None:
        """Deliver one alert; raise to report a failure (the monitor keeps the alert and retries).

        Args:
            alert: The alert.
        """


class CallbackSink:
    """Calls ``callback(alert)`` for every alert."""

    def __init__(self, callback: Callable[[Alert], Any]) -> None:
        self.callback = callback

    def emit(self, alert: Alert) -> None:
        """Call the callback.

        Args:
            alert: The alert.
        """
        self.callback(alert)

    def __str__(self) -> str:
        return f"callback {getattr(self.callback, '__qualname__', type(self.callback).__name__)}"


class LoggingSink:
    """Logs alerts: warnings at ``WARNING``, critical alerts at ``CRITICAL`` (JSON in ``extra["alert"]``)."""

    LEVELS = {"warning": logging.WARNING, "critical": logging.CRITICAL}

    def __init__(self, log: logging.Logger | str | None = None) -> None:
        self.logger = log if isinstance(log, logging.Logger) else logging.getLogger(log or "optimizer.monitor")

    def emit(self, alert: Alert) -> None:
        """Log the alert.

        Args:
            alert: The alert.
        """
        self.logger.log(
            self.LEVELS.get(alert.severity, logging.WARNING), "%s", alert.message, extra={"alert": alert.to_dict()}
        )

    def __str__(self) -> str:
        return f"logger {self.logger.name}"


class JsonLinesSink:
    """Appends one JSON object per alert to a file, one write per line, so a crash loses nothing.

    The file is opened for appending at construction, so a path that cannot be written (a folder, a FIFO
    nobody reads, a read-only place) is an :class:`~optimizer.errors.OutputError` before monitoring starts;
    a failure later (a full disk) makes :meth:`emit` raise one, and the monitor keeps the alert.
    """

    WHAT = "alerts file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder of the {self.WHAT}: {exc.strerror or exc}", self.path
            ) from None
        end_torn_line(self.path, self.WHAT)
        os.close(open_append(self.path, self.WHAT))
        self._lock = threading.Lock()

    def emit(self, alert: Alert) -> None:
        """Append the alert as one JSON line.

        Args:
            alert: The alert.

        Raises:
            OutputError: when the line cannot be written.
        """
        with self._lock:
            append_line(self.path, alert.to_json(), self.WHAT)

    def read(self) -> list[Alert]:
        """The alerts written so far (a torn last line and malformed lines are skipped, with a warning).

        Returns:
            The alerts, oldest first.
        """
        lines = read_json_lines(self.path, self.WHAT)
        alerts = []
        for number, entry in lines.entries:
            try:
                alerts.append(Alert.from_dict(entry))
            except (TypeError, ValueError) as exc:
                lines.bad.append((number, str(exc)))
        for number, reason in lines.bad:
            logger.warning("%s:%d: skipping a line that is not an alert (%s)", self.path, number, reason)
        return alerts

    def __str__(self) -> str:
        return str(self.path)


def as_sink(sink: AlertSink | Callable[[Alert], Any]) -> AlertSink:
    """A sink from an object with ``emit`` or a plain callable.

    Args:
        sink: The sink or callable.

    Returns:
        A sink.
    """
    if isinstance(sink, AlertSink):
        return sink
    if callable(sink):
        return CallbackSink(sink)
    raise InvalidParameterError(f"a sink is a callable or has emit(alert), got {type(sink).__name__}")


def sink_name(sink: AlertSink) -> str:
    """How a sink is named in messages: its ``str`` when it defines one, else its type.

    Args:
        sink: The sink.

    Returns:
        A short name.
    """
    if type(sink).__str__ is not object.__str__:
        return str(sink)
    return type(sink).__name__
