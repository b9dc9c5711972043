"""Versioned preset files: the settings a study found, per quality tier, with everything to reproduce them.

A preset is a JSON document (schema ``optimizer.preset``, version :data:`SCHEMA_VERSION`) holding one or
more :class:`PresetTier` entries. Each tier is one set of encoding settings (codec, encoder parameters,
resize filter and sharpening, the responsive widths it was tuned for) with what it delivered on the corpus
(bits per pixel, total bytes, the aggregate quality of its target metric and of every metric), the trial it
came from and the codec library versions. The preset records the study around it: name and storage URL
(password redacted), mode, target, aggregate, evaluator profile/weights/metric versions, the search space,
the corpus fingerprint and size, the optimizer/Python/Optuna versions and the creation date (UTC).

Tiers are chosen from a study's trials by :func:`optimizer.tuning.tiers.build_preset`. Selection is deterministic (ties broken by trial number), so the same study gives the same tiers in any
process; only ``created`` differs, and :meth:`Preset.content` / :meth:`Preset.fingerprint` leave it out.
Loading refuses other schemas, newer versions, unknown keys and malformed values with a
:class:`~optimizer.errors.PresetError` that names the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._files import describe_os_error, read_regular, write_atomic
from ..errors import CodecUnavailableError, OptimizerError, PresetError, UnknownNameError
from ..jsonio import json_number, json_safe, number_from_json
from .settings import EncodingSettings
from .target import Target

if TYPE_CHECKING:
    pass

__all__ = [
    "BEST_TIER",
    "DEFAULT_TIER",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Expected",
    "Preset",
    "PresetTier",
]

SCHEMA = "optimizer.preset"
SCHEMA_VERSION = 1
#: Name of the constrained-mode tier that meets the study target.
DEFAULT_TIER = "target"
#: Name of the tradeoff-mode tier (the best objective value).
BEST_TIER = "best"
_TIER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

_PRESET_KEYS = (
    "schema",
    "version",
    "created",
    "optimizer_version",
    "python_version",
    "optuna_version",
    "study",
    "mode",
    "target",
    "aggregate",
    "evaluator",
    "space",
    "corpus",
    "library_versions",
    "default_tier",
    "tiers",
)
_TIER_KEYS = (
    "name",
    "target",
    "settings",
    "widths",
    "reference_filter",
    "expected",
    "trial_number",
    "library_versions",
)
_EXPECTED_KEYS = ("bits_per_pixel", "total_bytes", "quality", "aggregates")


# --------------------------------------------------------------------------------------------------
# Tiers


@dataclass(frozen=True)
class Expected:
    """What a tier delivered on the study corpus (``quality`` is the aggregate of the tier's target metric)."""

    bits_per_pixel: float
    total_bytes: int
    quality: float
    aggregates: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits_per_pixel": json_number(self.bits_per_pixel),
            "total_bytes": int(self.total_bytes),
            "quality": json_number(self.quality),
            "aggregates": {k: json_number(v) for k, v in sorted(self.aggregates.items())},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Expected:
        data = _mapping(data, where)
        _check_keys(data, _EXPECTED_KEYS, where, required=_EXPECTED_KEYS)
        aggregates = _mapping(data["aggregates"], f"{where}.aggregates")
        total = data["total_bytes"]
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise PresetError(f"{where}.total_bytes must be a non-negative integer, got {total!r}")
        return cls(
            bits_per_pixel=_number(data["bits_per_pixel"], f"{where}.bits_per_pixel"),
            total_bytes=total,
            quality=_number(data["quality"], f"{where}.quality"),
            aggregates={str(k): _number(v, f"{where}.aggregates.{k}") for k, v in aggregates.items()},
        )


@dataclass(frozen=True)
class PresetTier:
    """One quality tier: settings, the target they were chosen for and what they delivered."""

    name: str
    target: str
    settings: EncodingSettings
    expected: Expected
    trial_number: int | None = None
    widths: tuple[int, ...] = ()
    reference_filter: str = "lanczos"
    library_versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TIER_NAME.fullmatch(self.name):
            raise PresetError(
                f"tier names use letters, digits, '.', '_', '+' and '-' (up to 64 characters, starting with a "
                f"letter or digit), got {self.name!r}"
            )
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def target_obj(self) -> Target:
        return Target.parse(self.target)

    @property
    def codec(self) -> str:
        return self.settings.codec

    @property
    def resizes(self) -> bool:
        return bool(self.widths)

    def label(self) -> str:
        """``jpeg quality=78 ... @ 640w, 1280w`` for tables and logs."""
        sizes = f" @ {', '.join(f'{w}w' for w in self.widths)}" if self.widths else ""
        return self.settings.label() + sizes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "settings": self.settings.to_dict(),
            "widths": list(self.widths),
            "reference_filter": self.reference_filter,
            "expected": self.expected.to_dict(),
            "trial_number": self.trial_number,
            "library_versions": dict(sorted(self.library_versions.items())),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "tier") -> PresetTier:
        data = _mapping(data, where)
        _check_keys(data, _TIER_KEYS, where, required=("name", "target", "settings", "expected"))
        name = data["name"]
        if not isinstance(name, str):
            raise PresetError(f"{where}.name must be a string, got {name!r}")
        where = f"tier {name!r}"
        target = data["target"]
        try:
            Target.parse(target)
        except OptimizerError as exc:
            raise PresetError(f"{where}: invalid target {target!r}: {exc}") from None
        settings = _settings_from(data["settings"], where)
        widths = data.get("widths", [])
        if not isinstance(widths, list) or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths):
            raise PresetError(f"{where}.widths must be a list of positive integers, got {widths!r}")
        reference_filter = data.get("reference_filter", "lanczos")
        from ..transforms import RESIZE_FILTERS

        if reference_filter not in RESIZE_FILTERS:
            raise PresetError(
                f"{where}.reference_filter must be one of {', '.join(RESIZE_FILTERS)}, got {reference_filter!r}"
            )
        trial = data.get("trial_number")
        if trial is not None and (isinstance(trial, bool) or not isinstance(trial, int) or trial < 0):
            raise PresetError(f"{where}.trial_number must be a non-negative integer or null, got {trial!r}")
        versions = _mapping(data.get("library_versions", {}), f"{where}.library_versions")
        return cls(
            name=name,
            target=str(Target.parse(target)),
            settings=settings,
            expected=Expected.from_dict(data["expected"], f"{where}.expected"),
            trial_number=trial,
            widths=tuple(widths),
            reference_filter=reference_filter,
            library_versions={str(k): str(v) for k, v in versions.items()},
        )


def _settings_from(data: Any, where: str) -> EncodingSettings:
    data = _mapping(data, f"{where}.settings")
    _check_keys(data, ("codec", "params", "transform"), f"{where}.settings", required=("codec",))
    try:
        return EncodingSettings.from_dict(data)
    except CodecUnavailableError:
        raise  # a missing library is a dependency problem, not a malformed file
    except UnknownNameError as exc:
        raise PresetError(f"{where}: {exc}") from None
    except OptimizerError as exc:
        raise PresetError(f"{where}: invalid settings: {exc}") from None
    except (TypeError, KeyError, ValueError) as exc:
        raise PresetError(f"{where}: invalid settings: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Preset


@dataclass
class Preset:
    """A set of tiers plus the provenance that makes them reproducible; see the module docs."""

    tiers: list[PresetTier]
    default: str
    study: dict[str, Any] = field(default_factory=dict)
    mode: str = "constrained"
    target: str = ""
    aggregate: str = "p10"
    evaluator: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, dict[str, str]] = field(default_factory=dict)
    optimizer_version: str = __version__
    python_version: str = field(default_factory=platform.python_version)
    optuna_version: str = field(default_factory=lambda: _optuna_version())
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if not self.tiers:
            raise PresetError("a preset needs at least one tier")
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PresetError(f"tier names must be unique, duplicated: {', '.join(dupes)}")
        if self.default not in names:
            raise PresetError(f"default tier {self.default!r} is not one of the tiers ({', '.join(names)})")

    # -- access ---------------------------------------------------------------------------------------

    @property
    def tier_names(self) -> list[str]:
        return [t.name for t in self.tiers]

    def tier(self, name: str | None = None) -> PresetTier:
        """The tier called ``name`` (the default tier when ``None``); unknown names list the tiers."""
        if name is None:
            name = self.default
        for t in self.tiers:
            if t.name == name:
                return t
        raise UnknownNameError("preset tier", str(name), self.tier_names)

    @property
    def default_tier(self) -> PresetTier:
        """The tier ``apply`` uses without ``--tier``: the study target's tier where there is one."""
        return self.tier(self.default)

    # -- serialisation --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "created": self.created,
            "optimizer_version": self.optimizer_version,
            "python_version": self.python_version,
            "optuna_version": self.optuna_version,
            "study": _jsonable(self.study),
            "mode": self.mode,
            "target": self.target,
            "aggregate": self.aggregate,
            "evaluator": _jsonable(self.evaluator),
            "space": _jsonable(self.space),
            "corpus": _jsonable(self.corpus),
            "library_versions": _jsonable(self.library_versions),
            "default_tier": self.default,
            "tiers": [t.to_dict() for t in self.tiers],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Canonical JSON: sorted keys, no NaN or infinity (written as ``null``)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    def content(self) -> dict[str, Any]:
        """Everything but the creation date: equal for the same study exported twice."""
        data = self.to_dict()
        del data["created"]
        return data

    def fingerprint(self) -> str:
        """A hash of :meth:`content` (16 hex digits)."""
        text = json.dumps(self.content(), sort_keys=True, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def same_content(self, other: Preset) -> bool:
        return self.content() == other.content()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the preset as JSON (atomically: a reader never sees half a file); returns the path."""
        return write_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Preset:
        """Read a preset file; any problem is a :class:`PresetError` naming the file and the problem."""
        source = Path(path)
        try:
            text = read_regular(source).decode("utf-8")  # a FIFO or a device is refused, never read
        except FileNotFoundError:
            raise PresetError(f"{source}: preset file not found") from None
        except OSError as exc:
            raise PresetError(f"{source}: cannot read preset file: {describe_os_error(exc)}") from None
        except UnicodeDecodeError as exc:
            raise PresetError(f"{source}: cannot read preset file: not UTF-8 text (byte {exc.start})") from None
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise PresetError(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except ValueError as exc:
            raise PresetError(f"{source}: {exc}") from None
        except RecursionError:
            raise PresetError(f"{source}: not valid JSON: nested too deeply") from None
        try:
            return cls.from_dict(data)
        except PresetError as exc:
            raise PresetError(f"{source}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> Preset:
        """Validate and build; refuses other schemas, newer versions, unknown keys and malformed values."""
        if not isinstance(data, Mapping):
            raise PresetError(f"a preset is a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise PresetError(f"not an optimizer preset: schema must be {SCHEMA!r}, got {schema!r}")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise PresetError(f"preset version must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise PresetError(
                f"preset version {version} is newer than this optimizer ({__version__}) reads (up to "
                f"{SCHEMA_VERSION}); upgrade optimizer to use it"
            )
        _check_keys(data, _PRESET_KEYS, "preset", required=("schema", "version", "tiers", "default_tier"))
        tiers_data = data["tiers"]
        if not isinstance(tiers_data, list) or not tiers_data:
            raise PresetError(f"preset.tiers must be a non-empty list, got {tiers_data!r}")
        tiers = [PresetTier.from_dict(t, f"tiers[{i}]") for i, t in enumerate(tiers_data)]
        strings = {}
        for key in ("created", "optimizer_version", "python_version", "optuna_version", "mode", "target", "aggregate"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise PresetError(f"preset.{key} must be a string, got {value!r}")
            strings[key] = value
        default = data["default_tier"]
        if not isinstance(default, str):
            raise PresetError(f"preset.default_tier must be a string, got {default!r}")
        versions = _mapping(data.get("library_versions", {}), "preset.library_versions")
        return cls(
            tiers=tiers,
            default=default,
            study=dict(_mapping(data.get("study", {}), "preset.study")),
            evaluator=dict(_mapping(data.get("evaluator", {}), "preset.evaluator")),
            space=dict(_mapping(data.get("space", {}), "preset.space")),
            corpus=dict(_mapping(data.get("corpus", {}), "preset.corpus")),
            library_versions={
                str(k): {str(a): str(b) for a, b in _mapping(v, f"preset.library_versions.{k}").items()}
                for k, v in versions.items()
            },
            **strings,
        )

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per tier for tables: name, target, codec, settings, widths, expected bpp/bytes/quality."""
        rows = []
        for t in self.tiers:
            rows.append(
                {
                    "tier": t.name,
                    "default": t.name == self.default,
                    "target": t.target,
                    "codec": t.codec,
                    "settings": t.label(),
                    "bits_per_pixel": t.expected.bits_per_pixel,
                    "total_bytes": t.expected.total_bytes,
                    "quality": t.expected.quality,
                    "trial": t.trial_number,
                }
            )
        return rows


def _optuna_version() -> str:
    try:
        from importlib.metadata import version

        return version("optuna")
    except Exception:  # noqa: BLE001 - metadata may be missing in odd installs; the preset still works
        return "unknown"


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PresetError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _check_keys(data: Mapping[str, Any], known: Sequence[str], where: str, *, required: Sequence[str] = ()) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PresetError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise PresetError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")


def _number(value: Any, where: str) -> float:
    """A number field: a JSON number or a non-finite string (:mod:`optimizer.jsonio`); ``null``, written by
    earlier releases for a value they could not store, reads as NaN."""
    if value is None:
        return math.nan
    try:
        return number_from_json(value)
    except (TypeError, ValueError):
        raise PresetError(f"{where} must be a number, 'inf', '-inf' or 'nan', got {value!r}") from None


def _jsonable(value: Any) -> Any:
    """Plain JSON data: string keys, tuples as lists, non-finite floats as strings (:mod:`optimizer.jsonio`)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return json_safe(value)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"preset files are strict JSON: {name} is not allowed")
