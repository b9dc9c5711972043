"""The web service's settings: one frozen dataclass shared by ``create_app``, ``optimizer serve`` and tests.

Limits exist so that no request can exhaust the server: every upload is bounded while it streams in
(per file and per request), every image by its pixel count before it is decoded, every batch by its number
of pairs, every job by a timeout, and the work queue by a bound beyond which requests are refused with 503.
This module imports nothing heavy (no FastAPI, no torch), so the CLI can build and validate a config cheaply.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OptimizerError

__all__ = ["BYTES_PER_PIXEL", "CONFIG_ENV", "MIB", "ServiceConfig", "default_pool_size", "memory_limit"]

MIB = 1024 * 1024

#: Peak memory of scoring one pair, per pixel, with the default profile (measured: 1.7 GB at 4 MP, 4.9 GB at
#: 12 MP; the fast profile about 290). Learned metrics (LPIPS, DISTS) need more.
BYTES_PER_PIXEL = 420

#: Environment variable through which ``optimizer serve --workers N`` hands the config to each worker process.
CONFIG_ENV = "OPTIMIZER_SERVICE_CONFIG"


def default_pool_size() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not every platform has an affinity mask
        return max(1, os.cpu_count() or 1)


def memory_limit() -> int | None:
    """Bytes this process may use: the cgroup v2 limit in a container, else physical memory (None: unknown)."""
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit():
            return int(text)
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service is started with; see ``docs/service.md`` for the meaning of each limit.

    ``profiles``: the evaluator profiles clients may ask for; the first is the default. Each is loaded once
    at start-up (a profile whose weights are missing stops start-up with the file to supply).
    ``presets``: preset files served by ``GET /presets``, named by file stem (``web.json`` -> ``web``).
    ``max_file_bytes`` / ``max_request_bytes``: upload limits per file and per request, enforced while
    the body streams in. ``max_pixels``: per image, checked from the header before decoding; scoring a pair
    takes about :data:`BYTES_PER_PIXEL` of memory per pixel (default profile), so the default of 16 MP
    (a 12 MP phone photo fits) costs up to about 7 GB per running request.
    ``pool_size``: worker threads that run the CPU work (metrics release the GIL in torch); each uses
    ``torch_threads`` intra-op threads. ``max_queue``: jobs that may wait for a worker beyond those
    running; more are refused with 503 and ``Retry-After``. ``request_timeout``: seconds a request may
    spend queued and running before it is answered 503.
    """

    profiles: tuple[str, ...] = ("default", "fast")
    presets: tuple[Path, ...] = ()
    max_file_bytes: int = 25 * MIB
    max_request_bytes: int = 100 * MIB
    max_pixels: int = 16_000_000
    max_batch_pairs: int = 64
    max_zip_entries: int = 512
    max_zip_ratio: float = 200.0
    pool_size: int = field(default_factory=default_pool_size)
    torch_threads: int = 1
    max_queue: int = 32
    request_timeout: float = 120.0
    compress_max_probes: int = 12
    device: str = "cpu"
    allow_download: bool = False
    warm_up: bool = True

    def __post_init__(self) -> None:
        profiles = _string_tuple(self.profiles, "profiles")
        if not profiles:
            raise ConfigError("profiles must name at least one evaluator profile, got none")
        if len(set(profiles)) != len(profiles):
            raise ConfigError(f"profiles must not repeat, got {list(profiles)}")
        from ..evaluator import get_profile

        for name in profiles:
            try:
                get_profile(name)
            except OptimizerError as exc:
                raise ConfigError(f"profiles: {exc}") from None
        object.__setattr__(self, "profiles", profiles)
        presets: Any = self.presets  # a path or any iterable of paths is accepted, and stored as a tuple
        if isinstance(presets, (str, Path)):
            presets = (presets,)
        object.__setattr__(self, "presets", tuple(Path(p) for p in presets))
        stems = [p.stem for p in self.presets]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise ConfigError(f"presets are named by file stem and must be unique, duplicated: {', '.join(dupes)}")
        for name in (
            "max_file_bytes",
            "max_request_bytes",
            "max_pixels",
            "max_batch_pairs",
            "max_zip_entries",
            "pool_size",
            "torch_threads",
            "compress_max_probes",
        ):
            _positive_int(getattr(self, name), name)
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ConfigError(f"max_queue must be an integer >= 0, got {self.max_queue!r}")
        if self.max_request_bytes < 2 * self.max_file_bytes:
            raise ConfigError(
                "max_request_bytes must hold at least two files (2 x max_file_bytes = "
                f"{2 * self.max_file_bytes:,}), got {self.max_request_bytes:,}"
            )
        for name in ("request_timeout", "max_zip_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}")

    @property
    def default_profile(self) -> str:
        return self.profiles[0]

    @property
    def peak_memory(self) -> int:
        """Rough peak bytes when every worker scores a pair at the pixel limit (see :data:`BYTES_PER_PIXEL`)."""
        return self.pool_size * self.max_pixels * BYTES_PER_PIXEL

    @property
    def capacity(self) -> int:
        """Jobs admitted at once: running plus waiting."""
        return self.pool_size + self.max_queue

    # -- serialisation (config files, and the hand-over to uvicorn worker processes) ------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = list(self.profiles)
        data["presets"] = [str(p) for p in self.presets]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "service config") -> ServiceConfig:
        """Build from a parsed TOML/JSON table; unknown keys and bad values are a :class:`ConfigError`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        for key in ("profiles", "presets"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "service config") -> ServiceConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_environment(cls) -> ServiceConfig:
        """The config handed over in :data:`CONFIG_ENV` (defaults when it is unset)."""
        text = os.environ.get(CONFIG_ENV)
        return cls() if not text else cls.from_json(text, source=CONFIG_ENV)


def _string_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be a list of names, got {value!r}") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{name} must be a list of non-empty names, got {list(items)!r}")
    return items


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
