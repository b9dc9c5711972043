"""``/compress``: the smallest encoding of one image that meets a quality target (the adaptive search)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...errors import InvalidParameterError
from ...evaluator import Evaluator
from ...imageio import ColorMode
from ..config import ServiceConfig
from ..errors import ServiceError
from ..jobs import compress_upload
from ..schemas import CompressResponse
from ..state import StateDep
from ..uploads import Upload
from ._forms import ascii_name, only, param, upload
from ._responses import ERRORS

__all__ = ["router"]

router = APIRouter(tags=["compress"])


@router.post(
    "/compress",
    operation_id="compress_route_compress_post",
    response_model=CompressResponse,
    summary="The smallest encoding of one image that meets a quality target",
    responses={
        **ERRORS,
        200: {
            "content": {
                "application/json": {},
                "image/avif": {},
                "image/webp": {},
                "image/jpeg": {},
                "image/jxl": {},
            },
            "description": "JSON report with the file in data_base64, or with output=image the file itself "
            "(report in X-Optimizer-* headers).",
        },
    },
)
async def compress(
    request: Request,
    state: StateDep,
    target: Optional[str] = Query(
        None, description="Quality bar METRIC:VALUE, e.g. ssimulacra2:80, lpips:0.1 or composite:0.85."
    ),
    formats: Optional[str] = Query(None, description="Comma-separated formats to try (default avif,webp,jpeg)."),
    profile: Optional[str] = Query(None, description="Profile for composite targets."),
    max_probes: Optional[int] = Query(
        None, ge=1, description="Encodes per format at most (capped by the server's compress_max_probes)."
    ),
    metadata: Optional[str] = Query(
        None,
        description="Metadata the file keeps: web (default: EXIF artist and copyright, a non-sRGB ICC profile), "
        "all, none, or a comma list of exif, icc, xmp.",
    ),
    color: Literal["srgb", "keep"] = Query(
        "srgb", description="srgb converts a wide-gamut image to sRGB; keep encodes it in its own profile."
    ),
    output: Literal["json", "image"] = Query(
        "json", description="json: the report with the file base64 encoded; image: the file itself."
    ),
) -> Any:
    """The search's report with the file (base64), or the file itself with the report in headers."""
    from ...tuning.target import Target

    config = state.config
    async with state.work(request, max_parts=8, file_fields="image".__eq__) as work:
        form = work.form
        only(form, {"image"}, {"target", "formats", "profile", "max_probes", "metadata", "color"})
        image = upload(form, "image")
        rules = state.rules
        goal = rules.target(param(form, "target", target))
        if goal is None:
            raise ServiceError(
                422, "missing_field", "missing field 'target' (METRIC:VALUE, e.g. ssimulacra2:80)", field="target"
            )
        parsed = Target.parse(goal)
        chosen = rules.format_list(param(form, "formats", formats))
        probes = _probes(param(form, "max_probes", None if max_probes is None else str(max_probes)), config)
        policy = _metadata(param(form, "metadata", metadata))
        mode = _color(param(form, "color", color))
        models, _ = state.require_ready()
        evaluator = models.compress_evaluator(rules.profile(param(form, "profile", profile)), parsed.metric)
        await work.admit_images(evaluator.profile, [(image,)], compress=True)
        payload, data = await work.run(
            _compress_job,
            evaluator,
            image,
            str(parsed),
            chosen,
            probes,
            config.max_pixels,
            output == "json",
            policy,
            mode,
        )
    if output == "image":
        headers = {
            "Content-Disposition": f'inline; filename="{ascii_name(image.label.rsplit(".", 1)[0])}'
            f'{payload["extension"]}"',
            "X-Optimizer-Format": str(payload["format"]),
            "X-Optimizer-Setting": str(payload["setting"]),
            "X-Optimizer-Target": str(payload["target"]),
            "X-Optimizer-Quality": str(payload["quality"]),
            "X-Optimizer-Met": "true" if payload["met"] else "false",
            "X-Optimizer-Original-Bytes": str(payload["original_bytes"]),
        }
        return Response(data, media_type=payload["media_type"], headers=headers)
    return payload


def _probes(text: str | None, config: ServiceConfig) -> int:
    if text is None:
        return config.compress_max_probes
    try:
        value = int(text)
    except ValueError:
        raise ServiceError(
            422, "invalid_parameter", f"max_probes must be an integer, got {text!r}", field="max_probes"
        ) from None
    if value < 1:
        raise ServiceError(422, "invalid_parameter", f"max_probes must be >= 1, got {value}", field="max_probes")
    return min(value, config.compress_max_probes)


def _metadata(text: str | None) -> str:
    """The metadata policy text, validated (``web`` when not given)."""
    from ...imageio import MetadataPolicy

    try:
        return str(MetadataPolicy.parse(text))
    except InvalidParameterError as exc:
        raise ServiceError(422, "invalid_parameter", str(exc), field="metadata") from None


def _color(text: str | None) -> ColorMode:
    if text in (None, "srgb"):
        return "srgb"
    if text == "keep":
        return "keep"
    raise ServiceError(422, "invalid_parameter", f"color must be srgb or keep, got {text!r}", field="color")


def _compress_job(
    evaluator: Evaluator,
    image: Upload,
    target: str,
    formats: Sequence[str] | None,
    probes: int,
    max_pixels: int,
    encode: bool,
    metadata: str = "web",
    color: ColorMode = "srgb",
) -> tuple[dict[str, Any], bytes]:
    payload, data = compress_upload(
        evaluator,
        image,
        target=target,
        formats=formats,
        max_probes=probes,
        max_pixels=max_pixels,
        metadata=metadata,
        color=color,
    )
    if encode:
        payload["data_base64"] = base64.b64encode(data).decode("ascii")
    return payload, data
