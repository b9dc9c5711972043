"""Evaluator configuration files: custom profiles, quality levels and evaluator defaults.

One TOML file gives the defaults; command-line flags and keyword arguments override it; unknown keys are
errors. Example::

    [evaluator]
    profile = "photos"                 # a built-in or a [profiles.*] name
    device = "cpu"

    [evaluator.metric_options.lpips]
    net = "vgg"

    [profiles.photos]                  # custom weights over registered metrics
    ssimulacra2 = 0.7
    ms_ssim = 0.3

    [levels]                           # composite thresholds, best first
    excellent = 0.92
    very_good = 0.82
    good = 0.72
    acceptable = 0.62
    poor = 0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._files import read_toml
from .errors import ConfigError, OptimizerError
from .evaluator import Evaluator, Profile, QualityLevels

__all__ = ["EvaluatorConfig", "load_config"]

_TOP = ("evaluator", "profiles", "levels")
_EVALUATOR = ("profile", "metrics", "device", "background", "resize_to_reference", "metric_options")


@dataclass(frozen=True)
class EvaluatorConfig:
    """What a config file says about evaluation; :meth:`evaluator` builds one with overrides applied."""

    profile: str | None = None
    metrics: tuple[str, ...] = ()
    device: str | None = None
    background: tuple[float, float, float] | None = None
    resize_to_reference: bool = False
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    levels: QualityLevels | None = None

    def resolve_profile(self, name: str | None) -> Profile | str | None:
        """A custom profile from the file, or the name as given (a built-in is looked up later)."""
        name = name or self.profile
        if name is not None and name in self.profiles:
            return self.profiles[name]
        return name

    def evaluator(
        self,
        *,
        profile: str | None = None,
        metrics: list[str] | None = None,
        resize_to_reference: bool | None = None,
        device: str | None = None,
    ) -> Evaluator:
        """An evaluator from the file's settings, with explicit arguments taking precedence."""
        chosen_metrics = metrics if metrics else (list(self.metrics) or None)
        chosen_profile = self.resolve_profile(profile)
        if chosen_metrics and profile is None and self.profile is None:
            chosen_profile = None
        kwargs: dict[str, Any] = {
            "metrics": chosen_metrics,
            "levels": self.levels,
            "device": device or self.device,
            "resize_to_reference": self.resize_to_reference if resize_to_reference is None else resize_to_reference,
            "metric_options": self.metric_options or None,
        }
        if self.background is not None:
            kwargs["background"] = self.background
        return Evaluator(chosen_profile, **kwargs)


def _table(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(data).__name__}")
    return data


def _unknown(data: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    extra = sorted(set(data) - set(known))
    if extra:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(extra)}; known: {', '.join(known)}")


def parse_config(data: Mapping[str, Any], source: str = "config") -> EvaluatorConfig:
    """Validate a parsed mapping (see the module docstring for the layout)."""
    _unknown(data, _TOP, source)
    section = _table(data.get("evaluator", {}), f"{source} [evaluator]")
    _unknown(section, _EVALUATOR, f"{source} [evaluator]")
    try:
        profiles = {
            name: Profile(name, {m: float(w) for m, w in _table(weights, f"[profiles.{name}]").items()})
            for name, weights in _table(data.get("profiles", {}), f"{source} [profiles]").items()
        }
        levels = None
        if "levels" in data:
            table = _table(data["levels"], f"{source} [levels]")
            levels = QualityLevels.from_mapping({k: float(v) for k, v in table.items()})
        background = section.get("background")
        if background is not None:
            if not isinstance(background, list) or len(background) != 3:
                raise ConfigError(f"{source}: background is three numbers in [0, 1], got {background!r}")
            background = tuple(float(v) for v in background)
        options = {
            k: dict(_table(v, f"[evaluator.metric_options.{k}]"))
            for k, v in _table(section.get("metric_options", {}), "metric_options").items()
        }
        metrics = section.get("metrics", [])
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise ConfigError(f"{source}: evaluator.metrics is a list of metric names, got {metrics!r}")
        resize = section.get("resize_to_reference", False)
        if not isinstance(resize, bool):
            raise ConfigError(f"{source}: evaluator.resize_to_reference is true or false, got {resize!r}")
        config = EvaluatorConfig(
            profile=section.get("profile"),
            metrics=tuple(metrics),
            device=section.get("device"),
            background=background,
            resize_to_reference=resize,
            metric_options=options,
            profiles=profiles,
            levels=levels,
        )
    except ConfigError:
        raise
    except (OptimizerError, TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(path: str | Path) -> EvaluatorConfig:
    """Read and validate an evaluator config file.

    Args:
        path: A TOML file with custom ``[profiles.NAME]``, ``[levels]`` and ``[metrics.NAME]`` options.

    Returns:
        The validated :class:`EvaluatorConfig`.

    Raises:
        ConfigError: The file is missing, not TOML, or has unknown keys or bad values (named).
    """
    return parse_config(read_toml(path, "config file"), str(path))
