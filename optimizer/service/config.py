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

__all__ = ["CONFIG_ENV", "MIB", "ServiceConfig", "default_pool_size", "memory_limit"]

MIB = 1024 * 1024

#: Environment variable through which ``optimizer serve --workers N`` hands the config to each worker process.
CONFIG_ENV = "OPTIMIZER_SERVICE_CONFIG"


def default_pool_size() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), at least 1.

    Returns:
        The count.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not every platform has an affinity mask
        return max(1, os.cpu_count() or 1)


def memory_limit() -> int | None:
    """Bytes this process may use: the cgroup v2 limit in a container, else physical memory.

    Returns:
        Bytes, or ``None`` when unknown.
    """
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

    Args:
        profiles: the evaluator profiles clients may ask for; the first is the default. Each is loaded once
            at start-up (a profile whose weights are missing stops start-up with the file to supply).
        presets: preset files served by ``GET /presets``, named by file stem (``web.json`` -> ``web``).
        max_file_bytes: largest uploaded file, enforced while the body streams in.
        max_request_bytes: largest request body, likewise.
        max_pixels: largest image (width x height), checked from the header before decoding.
        max_batch_pairs: pairs per ``/evaluate/batch`` request.
        max_zip_entries: entries of a batch archive.
        max_zip_ratio: compression ratio past which an archive entry is refused as a likely zip bomb.
        pool_size: worker threads that run the CPU work (metrics release the GIL in torch).
        torch_threads: torch intra-op threads per worker.
        max_queue: jobs that may wait for a worker beyond those running; more are refused with 503.
        request_timeout: seconds a request may spend queued and running before it is answered 503.
        compress_max_probes: encodes per format a ``/compress`` search may make.
        device: torch device of the metrics.
        allow_download: whether start-up may download missing network weights.
        warm_up: score a small pair per profile at start-up.
        memory_budget: bytes of working memory the admitted requests' scoring may take at once, estimated
            from their images' headers (:mod:`.admission`); ``None``: half the memory this process may use.
        max_buffered_bytes: bytes of request bodies held in memory at once, over all requests (uploading,
            queued or running); ``None``: twice ``max_request_bytes``.
        body_timeout: seconds the server waits for the next piece of a request body before answering 408
            and closing the connection (``None`` or 0: forever).
        header_timeout: seconds a connection has to deliver a request's complete headers (``optimizer
            serve`` only; ``None`` or 0: forever).
        keep_alive_timeout: seconds an idle kept-alive connection stays open after a response.
        max_connections: open connections at most; more are answered 503 and closed (``optimizer serve``
            only, and lowered below the process's file descriptor limit; ``None`` or 0: that limit).
        backlog: connections the kernel queues before they are accepted.
        max_header_bytes: largest request line and header block.
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
    memory_budget: int | None = None
    max_buffered_bytes: int | None = None
    body_timeout: float | None = 30.0
    header_timeout: float | None = 10.0
    keep_alive_timeout: float = 5.0
    max_connections: int | None = 1000
    backlog: int = 1024
    max_header_bytes: int = 16 * 1024

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
        for name in ("request_timeout", "max_zip_ratio", "keep_alive_timeout"):
            _positive_number(getattr(self, name), name)
        for name in ("body_timeout", "header_timeout", "max_connections"):
            if getattr(self, name) == 0 and not isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, None)  # 0 turns a limit off (TOML has no null)
        for name in ("body_timeout", "header_timeout"):
            if getattr(self, name) is not None:
                _positive_number(getattr(self, name), name)
        for name in ("backlog", "max_header_bytes"):
            _positive_int(getattr(self, name), name)
        for name in ("memory_budget", "max_connections"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        if self.max_buffered_bytes is None:
            object.__setattr__(self, "max_buffered_bytes", 2 * self.max_request_bytes)
        _positive_int(self.max_buffered_bytes, "max_buffered_bytes")
        if self.buffered_limit < self.max_request_bytes:
            raise ConfigError(
                f"max_buffered_bytes must hold at least one whole request (max_request_bytes = "
                f"{self.max_request_bytes:,}), got {self.buffered_limit:,}"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a torch device name such as 'cpu' or 'cuda', got {self.device!r}")

    @property
    def default_profile(self) -> str:
        """The profile of requests that name none: the first of :attr:`profiles`."""
        return self.profiles[0]

    @property
    def capacity(self) -> int:
        """Jobs admitted at once: running plus waiting."""
        return self.pool_size + self.max_queue

    @property
    def buffered_limit(self) -> int:
        """:attr:`max_buffered_bytes`, resolved (never ``None`` once the config is built)."""
        return self.max_buffered_bytes if self.max_buffered_bytes is not None else 2 * self.max_request_bytes

    def resolved_memory_budget(self) -> int:
        """:attr:`memory_budget`, or half of :func:`memory_limit` (8 GB if unknown) when it is ``None``.

        Returns:
            Bytes.
        """
        if self.memory_budget is not None:
            return self.memory_budget
        available = memory_limit()
        return (available if available is not None else 16 * 1024**3) // 2

    # -- serialisation (config files, and the hand-over to uvicorn worker processes) ------------------

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as JSON-compatible values (paths as strings).

        Returns:
            A dict :meth:`from_mapping` accepts.
        """
        data = asdict(self)
        data["profiles"] = list(self.profiles)
        data["presets"] = [str(p) for p in self.presets]
        return data

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int | None = 2) -> str:
        """The settings as JSON, written to ``path`` too when given.

        Args:
            path: a file to write (optional).
            indent: JSON indentation (``None``: one line, as handed to worker processes).

        Returns:
            The JSON text.
        """
        text = json.dumps(self.to_dict(), sort_keys=True, indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "service config") -> ServiceConfig:
        """Build from a parsed TOML/JSON table.

        Args:
            data: the settings by name.
            source: names the table in errors.

        Returns:
            The config.

        Raises:
            ConfigError: unknown keys and bad values, naming ``source``.
        """
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
        """Build from :meth:`to_json`'s text.

        Args:
            text: JSON.
            source: names the text in errors.

        Returns:
            The config.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_mapping(data, source=source)

    @classmethod
    def from_environment(cls) -> ServiceConfig:
        """The config handed over in :data:`CONFIG_ENV` (defaults when it is unset).

        Returns:
            The config.
        """
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


def _positive_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
