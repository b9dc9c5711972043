"""Monitor configuration: thresholds, drift rules, window and storm control, shared by the API, the CLI and
TOML files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .._files import read_toml
from ..errors import ConfigError, InvalidParameterError, UnknownNameError
from .rules import COMPOSITE, DriftRule, Threshold, check_number

__all__ = ["MonitorConfig", "load_monitor_config"]


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
        seconds = check_number(self.cooldown_seconds, "cooldown_seconds")
        if seconds is None or seconds < 0:
            raise InvalidParameterError(f"cooldown_seconds must be >= 0, got {self.cooldown_seconds!r}")
        rearm = check_number(self.rearm, "rearm")
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
        rules: list[Threshold | DriftRule] = [*self.thresholds, *self.drift]
        names = [r.metric for r in rules if r.metric != COMPOSITE]
        return list(dict.fromkeys(names))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "monitor config") -> MonitorConfig:
        """Build from a parsed TOML/JSON mapping (optionally under a ``monitor`` table).

        Args:
            data: The mapping.
            source: What it came from, named in errors.

        Returns:
            The config; every problem is a :class:`ConfigError` naming ``source``.
        """
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
        """Read a config from a TOML file (see :func:`load_monitor_config`).

        Args:
            path: The file.

        Returns:
            The config.
        """
        return load_monitor_config(path)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data, in the TOML layout.

        Returns:
            A mapping :meth:`from_mapping` reads back.
        """

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
    """Read a :class:`MonitorConfig` from a TOML file (see its docstring for the layout).

    Args:
        path: The file.

    Returns:
        The config; a missing, unreadable or malformed file is a :class:`ConfigError`.
    """
    return MonitorConfig.from_mapping(read_toml(path, "monitor config"), source=str(path))
