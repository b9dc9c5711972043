"""``optimizer serve``: the web service under uvicorn (the ``service`` extra)."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ..errors import ConfigError
from ._app import EXIT_DEPENDENCY, app, fail

if TYPE_CHECKING:
    from ..service.config import ServiceConfig

_MIB = 1024 * 1024


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each loads its own models).")] = 1,
    presets: Annotated[
        Optional[list[Path]], typer.Option("--presets", help="Preset file to serve (repeatable); named by its stem.")
    ] = None,
    profile: Annotated[
        Optional[list[str]],
        typer.Option(
            "--profile",
            help="Profile clients may use (repeatable; the first is the default). Default: default and fast.",
        ),
    ] = None,
    max_upload_mb: Annotated[Optional[float], typer.Option(help="Largest file, in MiB (default 25).")] = None,
    max_request_mb: Annotated[
        Optional[float], typer.Option(help="Largest request body, in MiB (default 4 x --max-upload-mb).")
    ] = None,
    max_pixels: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="Largest image, in pixels (default 16000000; scoring a pair takes ~400 bytes per pixel)."
        ),
    ] = None,
    pool_size: Annotated[
        Optional[int], typer.Option(min=1, help="Worker threads per process (default: cores).")
    ] = None,
    max_queue: Annotated[
        Optional[int], typer.Option(min=0, help="Requests that may wait for a worker; more get 503 (default 32).")
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option(help="Seconds a request may wait and run before a 503 (default 120).")
    ] = None,
    device: Annotated[Optional[str], typer.Option(help="Torch device for the metrics (default cpu).")] = None,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="Let start-up download missing network weights.")
    ] = False,
    memory_budget_mb: Annotated[
        Optional[float],
        typer.Option(help="Scoring memory admitted at once, in MiB (default: half the memory this process may use)."),
    ] = None,
    max_buffered_mb: Annotated[
        Optional[float],
        typer.Option(help="Request bodies held in memory at once, over all requests, in MiB (default 2 x request)."),
    ] = None,
    body_timeout: Annotated[
        Optional[float],
        typer.Option(min=0, help="Seconds to wait for the next piece of a request body, then 408 (0: none; 30)."),
    ] = None,
    header_timeout: Annotated[
        Optional[float],
        typer.Option(min=0, help="Seconds a connection has to send complete request headers (0: none; 10)."),
    ] = None,
    keep_alive_timeout: Annotated[
        Optional[float], typer.Option(min=0.01, help="Seconds an idle kept-alive connection stays open (5).")
    ] = None,
    max_connections: Annotated[
        Optional[int], typer.Option(min=0, help="Open connections at most; more get 503 (0: the fd limit; 1000).")
    ] = None,
    backlog: Annotated[
        Optional[int], typer.Option(min=1, help="Connections the kernel queues before they are accepted (1024).")
    ] = None,
    config_file: Annotated[
        Optional[Path], typer.Option("--config", help="TOML file of service settings (flags override it).")
    ] = None,
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"], typer.Option(help="uvicorn log level.")
    ] = "info",
) -> None:
    """Serve the evaluator, the adaptive compressor and presets over HTTP (see docs/service.md).

    \b
    Examples:
      optimizer serve --presets studies/demo-presets.json
      optimizer serve --host 0.0.0.0 --port 8080 --workers 4 --config service.toml
      optimizer serve --max-upload-mb 50 --timeout 300 --log-level warning
    """
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        fail("the web service needs the service extra: pip install 'optimizer[service]'", EXIT_DEPENDENCY)
    overrides: dict[str, Any] = {
        "profiles": tuple(profile) if profile else None,
        "presets": tuple(presets) if presets else None,
        "max_pixels": max_pixels,
        "pool_size": pool_size,
        "max_queue": max_queue,
        "request_timeout": timeout,
        "device": device,
        "allow_download": True if allow_download else None,
        "keep_alive_timeout": keep_alive_timeout,
        "backlog": backlog,
        "body_timeout": body_timeout,
        "header_timeout": header_timeout,
        "max_connections": max_connections,
    }
    if memory_budget_mb is not None:
        overrides["memory_budget"] = _mib(memory_budget_mb, "--memory-budget-mb")
    if max_buffered_mb is not None:
        overrides["max_buffered_bytes"] = _mib(max_buffered_mb, "--max-buffered-mb")
    if max_upload_mb is not None:
        overrides["max_file_bytes"] = _mib(max_upload_mb, "--max-upload-mb")
        if max_request_mb is None:
            overrides["max_request_bytes"] = 4 * overrides["max_file_bytes"]
    if max_request_mb is not None:
        overrides["max_request_bytes"] = _mib(max_request_mb, "--max-request-mb")
    config = build_config(config_file, overrides)
    _check_presets(config)
    logging.basicConfig(
        level=log_level.upper() if log_level.upper() in logging.getLevelNamesMapping() else "INFO",
        format="%(levelname)s:     %(name)s: %(message)s",
    )

    from ..service.server import run

    if workers == 1:
        from ..service.app import create_app

        application = create_app(config)
        try:
            run(application, config, host=host, port=port, log_level=log_level)
        except SystemExit:
            failure = application.state.service.failure
            if failure is not None:
                raise failure from None
            raise
        failure = application.state.service.failure
        if failure is not None:
            raise failure
        return
    from ..service.config import CONFIG_ENV

    # uvicorn's worker processes build their app from an import string: the config travels in the
    # environment they inherit, and prometheus_client needs a shared folder to sum their metrics.
    os.environ[CONFIG_ENV] = config.to_json(indent=None)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="optimizer-metrics-")
    run(
        "optimizer.service.app:create_app_from_environment",
        config,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


def build_config(path: Path | None, overrides: dict[str, Any]) -> ServiceConfig:
    """Defaults, then the TOML file (its keys, or a ``[service]`` table), then the flags that were given.

    Args:
        path: the TOML file, if any.
        overrides: flag values by setting name (``None``: not given).

    Returns:
        The config.
    """
    from ..service.config import ServiceConfig

    values: dict[str, Any] = {}
    if path is not None:
        from .._files import read_toml

        data = read_toml(path, "service config")
        values = dict(data.get("service", data)) if isinstance(data.get("service", data), dict) else {}
        ServiceConfig.from_mapping(values, source=str(path))  # unknown keys and bad values name the file
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ServiceConfig.from_mapping(values, source="serve options")


def _mib(value: float, flag: str) -> int:
    if not value > 0:
        raise ConfigError(f"{flag} must be > 0, got {value}")
    return int(value * _MIB)


def _check_presets(config: ServiceConfig) -> None:
    """Read every preset file before the server starts, so a bad one is a clear error and exit code 3."""
    from ..tuning.presets import Preset

    for path in config.presets:
        Preset.load(path)
