"""Operations endpoints: ``/health`` (the process serves), ``/ready`` (models loaded), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ... import __version__
from ..schemas import HealthResponse, ReadyResponse
from ..state import StateDep

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_METRICS_EXAMPLE = 'optimizer_http_requests_total{endpoint="/evaluate/single",method="POST",status="200"} 42.0\n'


@router.get("/health", response_model=HealthResponse, summary="The process is alive")
async def health() -> dict[str, Any]:
    """200 while the process serves, whatever the state of the models."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/ready",
    response_model=ReadyResponse,
    summary="Models and presets are loaded (503 until they are)",
    responses={503: {"model": ReadyResponse, "description": "Starting, stopping, or start-up failed."}},
)
async def ready(state: StateDep) -> Any:
    """What the server has loaded and how busy its pool is; 503 until start-up has finished."""
    config, pool = state.config, state.pool
    body = {
        "ready": state.ready,
        "profiles": list(config.profiles),
        "default_profile": config.default_profile,
        "metrics": state.models.metric_names if state.models is not None else [],
        "presets": sorted(state.presets),
        "pool": {
            "workers": config.pool_size,
            "max_queue": config.max_queue,
            "running": pool.running if pool is not None else 0,
            "waiting": pool.waiting if pool is not None else 0,
        },
        "memory": {
            "budget": state.memory.limit,
            "held": state.memory.used,
            "buffered_limit": state.uploads.limit,
            "buffered": state.uploads.used,
        },
        "error": state.error,
    }
    if not state.ready:
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return body


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"example": _METRICS_EXAMPLE}}}},
)
async def metrics(request: Request, state: StateDep) -> Response:
    """The metric families in the format the scraper's ``Accept`` header asks for."""
    body, content_type = state.telemetry.render(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
