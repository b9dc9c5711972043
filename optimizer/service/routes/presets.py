"""``/presets`` and ``/presets/{name}``: the preset files the server was started with."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..errors import ServiceError
from ..schemas import ErrorResponse, PresetListResponse
from ..state import StateDep
from ._responses import ERRORS

if TYPE_CHECKING:
    from ...tuning.presets import Preset

__all__ = ["router"]

router = APIRouter(tags=["presets"])


@router.get(
    "/presets",
    operation_id="presets_presets_get",
    response_model=PresetListResponse,
    summary="The presets the server was started with",
    responses={503: ERRORS[503]},
)
async def list_presets(state: StateDep) -> dict[str, Any]:
    """A summary of every preset, by name."""
    state.require_ready()
    return {"presets": [_summary(name, preset) for name, preset in sorted(state.presets.items())]}


@router.get(
    "/presets/{name}",
    operation_id="preset_presets__name__get",
    summary="One preset file, as exported by the study",
    responses={
        404: {"model": ErrorResponse, "description": "No preset of that name."},
        503: ERRORS[503],
        200: {
            "description": "The preset document (schema optimizer.preset).",
            "content": {
                "application/json": {
                    "example": {
                        "schema": "optimizer.preset",
                        "version": 1,
                        "default_tier": "target",
                        "tiers": ["..."],
                    }
                }
            },
        },
    },
)
async def get_preset(name: str, state: StateDep) -> JSONResponse:
    """The whole preset file ``name`` (404 naming the available ones)."""
    state.require_ready()
    found = state.presets.get(name)
    if found is None:
        raise ServiceError(
            404,
            "not_found",
            f"no preset {name!r}; available: {', '.join(sorted(state.presets)) or '(none)'}",
            known=sorted(state.presets),
        )
    return JSONResponse(found.to_dict())


def _summary(name: str, preset: Preset) -> dict[str, Any]:
    def number(value: Any) -> Any:
        return value if not isinstance(value, float) or math.isfinite(value) else None

    return {
        "name": name,
        "default_tier": preset.default,
        "mode": preset.mode,
        "target": preset.target,
        "aggregate": preset.aggregate,
        "study": (preset.study or {}).get("name"),
        "created": preset.created,
        "optimizer_version": preset.optimizer_version,
        "fingerprint": preset.fingerprint(),
        "tiers": [{k: number(v) for k, v in row.items()} for row in preset.summary_rows()],
    }
