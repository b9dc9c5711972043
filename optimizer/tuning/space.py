"""The search space of a tuning study, built from the codec registry and restricted by the user.

A space names the formats to try and, per format, how each encoder parameter is searched: a fixed value,
a ``[low, high]`` range or a list of choices. With target ``widths`` (responsive sizes) it also searches the
resize filter and the sharpening amount applied after resizing. Spaces come from CLI flags, a TOML/YAML
file or the Python API; unknown keys are errors.

Example file::

    formats = ["avif", "webp", "jpeg"]
    widths = [640, 1280]              # optional: encode resized copies (responsive sizes)
    filters = ["lanczos", "bicubic"]  # resize filters to try (only with widths)
    sharpen = [0.0, 1.0]              # unsharp-mask amount range after resizing (0 = off)

    [avif]
    quality = [30, 80]                # range
    speed = 6                         # fixed
    subsampling = ["4:2:0", "4:4:4"]  # choices
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import describe_os_error, read_regular
from ..codecs import codec_names, get_codec
from ..codecs.base import Param
from ..errors import ConfigError, InvalidParameterError, UnknownNameError
from ..transforms import RESIZE_FILTERS, Transform
from .quality_axis import QualityAxis
from .settings import EncodingSettings

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

__all__ = ["DEFAULT_FORMATS", "DEFAULT_PARAM_SPACES", "SearchSpace"]

DEFAULT_FORMATS: tuple[str, ...] = ("avif", "webp", "jpeg")

#: What is searched per format unless the user says otherwise. Speed/effort are fixed at values that keep
#: a trial affordable; quality ranges skip the extremes nobody ships.
DEFAULT_PARAM_SPACES: dict[str, dict[str, Any]] = {
    "jpeg": {"quality": [30, 95], "subsampling": ["4:2:0", "4:4:4"], "progressive": True, "optimize": True},
    "webp": {"quality": [30, 95], "method": 4, "lossless": False},
    "avif": {"quality": [25, 90], "speed": 6, "subsampling": ["4:2:0", "4:4:4"]},
    "jxl": {"distance": [0.5, 6.0], "effort": 5},
    "png": {"compress_level": 6, "optimize": False},
}

_TOP_KEYS = ("formats", "widths", "filters", "sharpen", "sharpen_radius", "reference_filter", "linear_light")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _restriction(codec: str, param: Param, spec: Any) -> Any:
    """Validate one parameter restriction; returns a fixed value, ``("range", lo, hi)`` or ``("choices", ...)``."""
    owner = f"{codec}.{param.name}"
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"low", "high", "choices"}
        if unknown:
            raise ConfigError(f"{owner}: unknown keys {sorted(unknown)}; use low/high or choices")
        if "choices" in spec:
            spec = list(spec["choices"])
        else:
            spec = [spec.get("low", param.low), spec.get("high", param.high)]
    if isinstance(spec, (list, tuple)):
        values = list(spec)
        if not values:
            raise ConfigError(f"{owner}: an empty list searches nothing")
        if param.kind in ("int", "float"):
            if len(values) == 1:
                return param.validate(values[0], owner=owner)
            if len(values) != 2 or not all(_is_number(v) for v in values):
                raise ConfigError(f"{owner}: numeric params take a value or a [low, high] range, got {values!r}")
            lo, hi = (param.validate(v, owner=owner) for v in values)
            if lo > hi:
                raise ConfigError(f"{owner}: range low must be <= high, got [{lo}, {hi}]")
            return ("range", lo, hi) if lo != hi else lo
        picked = tuple(dict.fromkeys(param.validate(v, owner=owner) for v in values))
        return ("choices", *picked) if len(picked) > 1 else picked[0]
    return param.validate(spec, owner=owner)


def _suggest(trial: optuna.trial.BaseTrial, name: str, dist: BaseDistribution) -> Any:
    """Ask ``trial`` for ``name`` from ``dist`` through Optuna's public suggest API."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    raise ConfigError(f"{name}: unsupported distribution {type(dist).__name__}")


@dataclass(frozen=True)
class SearchSpace:
    """Formats, per-format parameter restrictions, and the resize/sharpen axes."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    widths: tuple[int, ...] = ()
    filters: tuple[str, ...] = ("lanczos",)
    sharpen: tuple[float, float] = (0.0, 0.0)
    sharpen_radius: float = 1.0
    reference_filter: str = "lanczos"
    linear_light: bool = False

    def __post_init__(self) -> None:
        formats = tuple(dict.fromkeys(str(f).strip().lower() for f in self.formats))
        if not formats:
            raise ConfigError("the search space needs at least one format")
        resolved: dict[str, dict[str, Any]] = {}
        for fmt in formats:
            codec = get_codec(fmt)  # UnknownNameError / CodecUnavailableError with install hint
            user = dict(self.params.get(fmt, {}) or self.params.get(codec.name, {}))
            unknown = set(user) - {p.name for p in codec.params}
            if unknown:
                raise ConfigError(
                    f"{codec.name}: unknown parameter(s) {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(p.name for p in codec.params)}"
                )
            base = {**DEFAULT_PARAM_SPACES.get(codec.name, {}), **user}
            resolved[codec.name] = {
                p.name: _restriction(codec.name, p, base.get(p.name, p.default)) for p in codec.params
            }
        extra = set(self.params) - set(resolved) - set(formats)
        if extra:
            raise ConfigError(f"parameters given for format(s) not searched: {', '.join(sorted(extra))}")
        object.__setattr__(self, "formats", tuple(resolved))
        object.__setattr__(self, "params", resolved)
        widths = tuple(sorted({int(w) for w in self.widths}))
        if any(w <= 0 for w in widths):
            raise ConfigError(f"widths must be positive, got {list(self.widths)}")
        object.__setattr__(self, "widths", widths)
        filters = tuple(dict.fromkeys(str(f).lower() for f in self.filters))
        for name in (*filters, self.reference_filter):
            if name not in RESIZE_FILTERS:
                raise UnknownNameError("resize filter", name, list(RESIZE_FILTERS))
        if not filters:
            raise ConfigError("filters must name at least one resize filter")
        object.__setattr__(self, "filters", filters)
        lo, hi = (
            float(v)
            for v in (self.sharpen if isinstance(self.sharpen, (list, tuple)) else (self.sharpen, self.sharpen))
        )
        if not 0.0 <= lo <= hi:
            raise ConfigError(
                f"sharpen must be an amount or a [low, high] range with 0 <= low <= high, got {self.sharpen!r}"
            )
        object.__setattr__(self, "sharpen", (lo, hi))
        Transform(sharpen_amount=hi, sharpen_radius=self.sharpen_radius)  # validates the values

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Build from a parsed TOML/YAML/JSON mapping; unknown top-level keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a search space must be a mapping, got {type(data).__name__}")
        known_formats = set(codec_names())
        unknown = set(data) - set(_TOP_KEYS) - known_formats - {"params"}
        if unknown:
            raise ConfigError(
                f"unknown search-space key(s) {', '.join(sorted(unknown))}; known: "
                f"{', '.join(_TOP_KEYS)} and per-format tables ({', '.join(sorted(known_formats))})"
            )
        params = {k: v for k, v in data.items() if k in known_formats}
        params.update(data.get("params", {}))
        for fmt, table in params.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"[{fmt}] must be a table of parameters, got {table!r}")
        kwargs: dict[str, Any] = {"params": params}
        if "formats" in data:
            kwargs["formats"] = tuple(data["formats"])
        elif params:
            kwargs["formats"] = tuple(params)
        for key in ("widths", "filters"):
            if key in data:
                value = data[key]
                kwargs[key] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if "sharpen" in data:
            value = data["sharpen"]
            kwargs["sharpen"] = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
        for key in ("sharpen_radius", "reference_filter", "linear_light"):
            if key in data:
                kwargs[key] = data[key]
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, (ConfigError, InvalidParameterError)):
                raise
            raise ConfigError(f"invalid search space: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        """Load a ``.toml``, ``.yaml``/``.yml`` or ``.json`` space file."""
        path = Path(path)
        try:
            text = read_regular(path).decode("utf-8")  # a FIFO or a device is refused, never read
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read search space file: {describe_os_error(exc)}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: cannot read search space file: not UTF-8 text (byte {exc.start})") from None
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(f"{path}: search space files are .toml, .yaml/.yml or .json")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a search space: nested too deeply") from None
        except Exception as exc:  # yaml.YAMLError without importing yaml at module level
            if type(exc).__module__.startswith("yaml"):
                raise ConfigError(f"{path}: {exc}") from None
            raise
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    # -- sampling -----------------------------------------------------------------------------------

    @property
    def resizes(self) -> bool:
        return bool(self.widths)

    def quality_axis(self, fmt: str) -> QualityAxis | None:
        """The quality axis of ``fmt`` as this space restricts it, when it is a range to search (None when
        the format has no quality setting or the space fixes it)."""
        codec = get_codec(fmt)
        if codec.quality_param is None:
            return None
        r = self.params[codec.name][codec.quality_param]
        if not (isinstance(r, tuple) and r and r[0] == "range"):
            return None
        return QualityAxis.for_codec(codec, (float(r[1]), float(r[2])))

    def distributions(self, *, solve_quality: bool = False) -> dict[str, BaseDistribution]:
        """Every searched axis as ``name -> distribution`` (format params are prefixed ``codec.``).

        With ``solve_quality`` the quality axis of each format is left out: the objective finds it.
        """
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        out: dict[str, BaseDistribution] = {}
        if len(self.formats) > 1:
            out["format"] = CategoricalDistribution(self.formats)
        for fmt in self.formats:
            codec = get_codec(fmt)
            for p in codec.params:
                if solve_quality and p.name == codec.quality_param:
                    continue
                r = self.params[fmt][p.name]
                if isinstance(r, tuple) and r and r[0] == "range":
                    out[f"{fmt}.{p.name}"] = p.to_distribution(low=r[1], high=r[2])
                elif isinstance(r, tuple) and r and r[0] == "choices":
                    out[f"{fmt}.{p.name}"] = p.to_distribution(choices=r[1:])
        if self.resizes and len(self.filters) > 1:
            out["filter"] = CategoricalDistribution(self.filters)
        if self.sharpen[1] > self.sharpen[0]:
            out["sharpen"] = FloatDistribution(self.sharpen[0], self.sharpen[1], step=0.05)
        return out

    def sample(self, trial: optuna.trial.BaseTrial, *, solve_quality: bool = False) -> EncodingSettings:
        """Draw the settings of one trial (parameters of the chosen format only).

        With ``solve_quality`` the quality setting is not drawn: it holds the best end of the format's
        axis until the objective solves it (:meth:`quality_axis`).
        """
        dists = self.distributions(solve_quality=solve_quality)
        fmt = _suggest(trial, "format", dists["format"]) if "format" in dists else self.formats[0]
        axis = self.quality_axis(fmt) if solve_quality else None
        params: dict[str, Any] = {}
        for name, r in self.params[fmt].items():
            key = f"{fmt}.{name}"
            if axis is not None and name == axis.param:
                params[name] = axis.value(len(axis) - 1)
                continue
            params[name] = _suggest(trial, key, dists[key]) if key in dists else r
        flt = _suggest(trial, "filter", dists["filter"]) if "filter" in dists else self.filters[0]
        amount = _suggest(trial, "sharpen", dists["sharpen"]) if "sharpen" in dists else self.sharpen[0]
        return self._settings(fmt, params, flt, amount)

    def settings_from_params(self, values: Mapping[str, Any]) -> EncodingSettings:
        """Rebuild the settings of a finished trial from its ``trial.params``."""
        fmt = values.get("format", self.formats[0])
        params = {name: values.get(f"{fmt}.{name}", r) for name, r in self.params[fmt].items()}
        for name, value in params.items():
            if isinstance(value, tuple):
                raise ConfigError(f"trial has no value for searched parameter {fmt}.{name}")
        return self._settings(
            fmt, params, values.get("filter", self.filters[0]), values.get("sharpen", self.sharpen[0])
        )

    def _settings(self, fmt: str, params: Mapping[str, Any], flt: str, amount: float) -> EncodingSettings:
        transform = Transform(
            filter=flt,
            linear_light=self.linear_light,
            sharpen_amount=float(amount),
            sharpen_radius=self.sharpen_radius,
        )
        return EncodingSettings(fmt, dict(params), transform)

    def reference_transform(self, width: int) -> Transform:
        """The fixed high-quality resize that makes the reference at a target width."""
        return Transform(width=width, filter=self.reference_filter, linear_light=self.linear_light)

    def params_for(self, settings: EncodingSettings) -> dict[str, Any] | None:
        """The params (Optuna names, quality left to the objective) that give ``settings`` in this space, or
        None when the space cannot express them (another format, a value it does not search). How settings
        from another study (``--warm-start``) become this study's trials, whatever that study searched."""
        grid = self.grid(solve_quality=True)
        fmt = settings.codec
        if fmt not in self.formats:
            return None
        values: dict[str, Any] = {
            "format": fmt,
            "filter": settings.transform.filter,
            "sharpen": settings.transform.sharpen_amount,
            **{f"{fmt}.{name}": value for name, value in settings.params.items()},
        }
        out: dict[str, Any] = {}
        for key, choices in grid.items():
            if "." in key and key.split(".", 1)[0] != fmt:
                continue
            matches = [c for c in choices if _same_value(c, values.get(key))]
            if not matches:
                return None
            out[key] = matches[0]
        return out

    def usual_params(self, fmt: str) -> dict[str, Any]:
        """The params (Optuna names) of ``fmt`` at its usual settings: each encoder parameter at the codec's
        default when the space allows it (else the nearest allowed value or the first choice), the first
        resize filter and the lowest sharpening. The quality axis is left to the objective."""
        codec = get_codec(fmt)
        dists = self.distributions(solve_quality=True)
        out: dict[str, Any] = {}
        if "format" in dists:
            out["format"] = codec.name
        for p in codec.params:
            key = f"{codec.name}.{p.name}"
            r = self.params[codec.name][p.name]
            if key not in dists or not isinstance(r, tuple):
                continue
            if r[0] == "range":
                out[key] = min(max(p.default, r[1]), r[2])
            else:
                out[key] = p.default if p.default in r[1:] else r[1]
        if "filter" in dists:
            out["filter"] = self.filters[0]
        if "sharpen" in dists:
            out["sharpen"] = self.sharpen[0]
        return out

    def grid(self, *, solve_quality: bool = False) -> dict[str, list[Any]]:
        """The space as a grid for Optuna's GridSampler (float ranges use their 0.05 sharpen step only);
        ``solve_quality`` leaves the quality axes out (:meth:`distributions`)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        grid: dict[str, list[Any]] = {}
        for name, dist in self.distributions(solve_quality=solve_quality).items():
            if isinstance(dist, CategoricalDistribution):
                grid[name] = list(dist.choices)
            elif isinstance(dist, IntDistribution):
                grid[name] = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step:
                n = int(round((dist.high - dist.low) / dist.step))
                grid[name] = [round(dist.low + i * dist.step, 6) for i in range(n + 1)]
            else:
                raise ConfigError(f"{name} is a continuous range; a grid needs discrete values")
        return grid

    # -- persistence --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A canonical JSON-ready form (stored with the study; equal spaces give equal dicts)."""

        def encode(r: Any) -> Any:
            if isinstance(r, tuple) and r and r[0] == "range":
                return [r[1], r[2]]
            if isinstance(r, tuple) and r and r[0] == "choices":
                return {"choices": list(r[1:])}
            return r

        return {
            "formats": list(self.formats),
            "params": {fmt: {k: encode(v) for k, v in table.items()} for fmt, table in self.params.items()},
            "widths": list(self.widths),
            "filters": list(self.filters),
            "sharpen": list(self.sharpen),
            "sharpen_radius": self.sharpen_radius,
            "reference_filter": self.reference_filter,
            "linear_light": self.linear_light,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(
        self,
        *,
        formats: Sequence[str] | None = None,
        quality: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
        subsampling: Sequence[str] | None = None,
        speed: Sequence[int] | None = None,
        effort: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        filters: Sequence[str] | None = None,
        sharpen: tuple[float, float] | None = None,
    ) -> SearchSpace:
        """A copy with CLI-style overrides applied to every format that has the parameter.

        ``quality`` is one ``(low, high)`` range for every format whose axis is called ``quality``, or a
        mapping per format in each axis's own units (``{"jxl": (0.5, 3.0)}`` restricts JPEG XL's distance).
        """
        data = self.to_dict()
        if formats:
            data["formats"] = list(formats)
        params: dict[str, dict[str, Any]] = {f: dict(data["params"].get(f, {})) for f in data["formats"]}
        for fmt in data["formats"]:
            codec = get_codec(fmt)
            names = {p.name for p in codec.params}
            table = params.setdefault(fmt, {})
            if isinstance(quality, Mapping):
                span = next((v for k, v in quality.items() if get_codec(k, require_available=False) is codec), None)
                if span is not None and codec.quality_param is not None:
                    table[codec.quality_param] = [span[0], span[1]]
            elif quality is not None and codec.quality_param == "quality":
                table["quality"] = [quality[0], quality[1]]
            if subsampling and "subsampling" in names:
                table["subsampling"] = {"choices": list(subsampling)}
            for name, values in (("speed", speed), ("effort", effort)):
                if values and name in names:
                    table[name] = {"choices": list(values)} if len(values) > 1 else values[0]
        data["params"] = params
        if widths is not None:
            data["widths"] = list(widths)
        if filters:
            data["filters"] = list(filters)
        if sharpen is not None:
            data["sharpen"] = list(sharpen)
        return SearchSpace.from_mapping(data)


def _same_value(choice: Any, value: Any) -> bool:
    """A grid choice equals a stored value (numbers within rounding: sharpening is stored as a float)."""
    numbers = (int, float)
    if isinstance(choice, numbers) and isinstance(value, numbers) and not isinstance(choice, bool):
        return not isinstance(value, bool) and abs(float(choice) - float(value)) <= 1e-9
    return bool(choice == value)
