"""The FastAPI application: ``create_app(config)``, a thin shell over the evaluator and the adaptive search.

Start-up (the lifespan) loads the preset files and one evaluator per allowed profile, with downloads of
network weights turned off unless the config allows them, then scores a small synthetic pair per profile;
any failure stops start-up with its message (a missing weight file names the file and how to supply it).
``/ready`` answers 503 until this has finished and again once shutdown begins.

Requests: the body is read as it streams in, under the upload limits (:mod:`.uploads`); decoding and
scoring run in the bounded work pool (:mod:`.pool`), never on the event loop; errors become JSON bodies
with the status codes listed in :mod:`.errors`. No endpoint takes a path: uploads are bytes, names are
labels, and nothing a client sends opens a file on the server. The routes live in :mod:`.routes`, the state
they share in :mod:`.state`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .. import __version__
from .config import ServiceConfig
from .contract import RequestRules
from .handlers import add_error_handlers
from .routes import ROUTERS
from .state import ServiceState
from .telemetry import MetricsMiddleware
from .uploads import BodyTimeoutMiddleware

__all__ = ["ServiceState", "create_app", "create_app_from_environment"]


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The web service for ``config``; models load when the app starts (its lifespan).

    Args:
        config: the settings (defaults when omitted).

    Returns:
        An ASGI application; its :class:`ServiceState` is ``app.state.service``.
    """
    config = config or ServiceConfig()
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = _ServiceApp(
        title="optimizer",
        version=__version__,
        summary="Image quality scores and the smallest encodings that still look right.",
        description=(
            "Scores processed images against their originals (SSIMULACRA 2, MS-SSIM, SSIM, PSNR, LPIPS, DISTS "
            "and a composite), compresses images to a quality target, and serves the presets the server was "
            f"started with. Limits: {config.max_file_bytes:,} bytes per file, {config.max_request_bytes:,} per "
            f"request, {config.max_pixels:,} pixels per image, {config.max_batch_pairs} pairs per batch. "
            'Errors are JSON: {"error": {"type", "message", ...}}.'
        ),
        lifespan=lifespan,
    )
    app.state.service = state
    app.rules = state.rules
    app.add_middleware(BodyTimeoutMiddleware, timeout=config.body_timeout)
    app.add_middleware(MetricsMiddleware, telemetry=state.telemetry)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


class _ServiceApp(FastAPI):
    """FastAPI, with the OpenAPI document completed by the server's :class:`RequestRules`."""

    rules: RequestRules

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document: FastAPI's, with the accepted parameter values and request bodies."""
        if self.openapi_schema is None:
            self.openapi_schema = self.rules.apply(super().openapi())
        return self.openapi_schema


def create_app_from_environment() -> FastAPI:
    """App factory for uvicorn worker processes (``optimizer serve --workers N``): config from the environment.

    Returns:
        ``create_app`` of the config that :data:`~optimizer.service.config.CONFIG_ENV` holds.
    """
    return create_app(ServiceConfig.from_environment())
