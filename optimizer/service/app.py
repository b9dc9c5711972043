"""The FastAPI application: ``create_app(config)``, a thin shell over the evaluator and the adaptive search.

Start-up (the lifespan) loads the preset files and one evaluator per allowed profile, with downloads of
network weights turned off unless the config allows them, then scores a small synthetic pair per profile;
any failure stops start-up with its message (a missing weight file names the file and how to supply it).
``/ready`` answers 503 until this has finished and again once shutdown begins.

Requests: the body is read as it streams in, under the upload limits (:mod:`.uploads`); decoding and
scoring run in the bounded work pool (:mod:`.pool`), never on the event loop; errors become JSON bodies
with the status codes listed in :mod:`.errors`. No endpoint takes a path: uploads are bytes, names are
labels, and nothing a client sends opens a file on the server.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, Literal, Optional

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import OptimizerError
from .config import ServiceConfig, memory_limit
from .errors import ServiceError, error_body, from_exception
from .jobs import Models, compress_upload, evaluate_batch, evaluate_single
from .pool import JobTimeout, Overloaded, PoolClosed, WorkPool
from .schemas import (
    BATCH_BODY,
    COMPRESS_BODY,
    SINGLE_BODY,
    BatchResponse,
    CompressResponse,
    ErrorResponse,
    HealthResponse,
    PairResponse,
    PresetListResponse,
    ReadyResponse,
)
from .telemetry import MetricsMiddleware, Telemetry
from .uploads import Form, InputIssue, Upload, discard_body, read_form

__all__ = ["ServiceState", "create_app", "create_app_from_environment"]

log = logging.getLogger("optimizer.service")

_METRICS_EXAMPLE = 'optimizer_http_requests_total{endpoint="/evaluate/single",method="POST",status="200"} 42.0\n'
_PAIR_FIELD = re.compile(r"^(original|processed)_(\d{1,6})$")
_MAX_FORMATS = 8


def _examples(**examples: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"examples": {name: {"value": {"error": value}} for name, value in examples.items()}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed request (broken multipart framing).",
        "content": _examples(bad_request={"type": "bad_request", "message": "malformed multipart body: ..."}),
    },
    413: {
        "model": ErrorResponse,
        "description": "A file, the request, an image's pixel count or a batch is over its limit.",
        "content": _examples(
            too_large={
                "type": "too_large",
                "message": "file 'a.png' (field 'original') is larger than the limit of 26,214,400 bytes",
                "limit": 26214400,
                "field": "original",
            },
            too_many_pixels={
                "type": "too_many_pixels",
                "message": "a.png: image is 6000x4000 = 24,000,000 pixels, over the limit of 16,000,000 ...",
            },
        ),
    },
    415: {
        "model": ErrorResponse,
        "description": "The body is not multipart/form-data.",
        "content": _examples(
            unsupported_media_type={
                "type": "unsupported_media_type",
                "message": "expected a multipart/form-data body, got Content-Type 'application/json'",
            }
        ),
    },
    422: {
        "model": ErrorResponse,
        "description": "Unusable content: not an image, truncated, sizes differ, unknown "
        "profile/metric/format, missing or unexpected field.",
        "content": _examples(
            invalid_image={
                "type": "invalid_image",
                "message": "a.jpg: cannot decode image data (truncated or corrupt): image file is truncated",
            },
            size_mismatch={
                "type": "size_mismatch",
                "message": "expected equal sizes, got 768x512 (original 'a.png') and 512x768 (processed 'a.jpg')",
            },
            unknown_name={
                "type": "unknown_name",
                "message": "profile 'seed' is not enabled on this server; enabled: default, fast",
                "kind": "profile",
                "name": "seed",
                "known": ["default", "fast"],
            },
            missing_field={"type": "missing_field", "message": "missing file field 'processed'", "field": "processed"},
        ),
    },
    503: {
        "model": ErrorResponse,
        "description": "Overloaded, timed out or not ready; retry after Retry-After seconds.",
        "headers": {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
        "content": _examples(
            overloaded={
                "type": "overloaded",
                "message": "the server is busy (34 requests running or queued); retry in 2 s",
                "retry_after": 2,
            }
        ),
    },
}


class ServiceState:
    """What the app holds between requests: config, loaded models and presets, the pool, the metrics."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.models: Models | None = None
        self.presets: dict[str, Any] = {}
        self.pool: WorkPool | None = None
        self.ready = False
        self.error: str | None = None
        self.failure: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Load presets and models, warm up, start the pool; raises (and stops start-up) on any failure."""
        from ..tuning.presets import Preset

        config = self.config
        try:
            presets = {path.stem: Preset.load(path) for path in config.presets}
            models = Models(config)
            models.load()
            if config.warm_up:
                models.warm_up()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.failure = exc
            log.error("start-up failed: %s", exc)
            raise
        self.presets, self.models = presets, models
        self.pool = WorkPool(config.pool_size, config.max_queue, torch_threads=config.torch_threads)
        self.pool.on_change = self.telemetry.observe_pool
        self.ready = True
        self.telemetry.ready.set(1)
        _warn_about_memory(config)
        log.info(
            "ready: profiles %s, presets %s, %d worker threads, queue bound %d",
            ", ".join(config.profiles),
            ", ".join(presets) or "none",
            config.pool_size,
            config.max_queue,
        )

    def stop(self) -> None:
        self.ready = False
        self.telemetry.ready.set(0)
        if self.pool is not None:
            self.pool.close()

    # -- per request ------------------------------------------------------------------------------------

    def require_ready(self) -> tuple[Models, WorkPool]:
        if not self.ready or self.models is None or self.pool is None:
            raise ServiceError(
                503,
                "not_ready",
                "the service is starting or stopping; models are not loaded",
                headers={"Retry-After": "5"},
            )
        return self.models, self.pool

    async def read(self, request: Request, *, max_parts: int) -> Form:
        """The request's multipart form under the limits; refuses early (503) when not ready or the pool is full.

        A refused body is still read (and dropped, up to a bound) so that the client gets to read the answer.
        """
        config = self.config
        try:
            _, pool = self.require_ready()
            if not pool.has_room():
                raise self._overloaded(pool.retry_after())
        except ServiceError:
            await discard_body(request, config.max_request_bytes)
            raise
        return await read_form(
            request,
            max_file_bytes=config.max_file_bytes,
            max_request_bytes=config.max_request_bytes,
            max_parts=max_parts,
        )

    async def run(
        self, fn: Any, *args: Any, timeout: float | None = None, cancelled: threading.Event | None = None
    ) -> Any:
        _, pool = self.require_ready()
        limit = self.config.request_timeout if timeout is None else timeout
        try:
            return await pool.run(fn, *args, timeout=limit, cancelled=cancelled)
        except Overloaded as exc:
            raise self._overloaded(exc.retry_after) from None
        except JobTimeout as exc:
            self.telemetry.rejected.labels("timeout").inc()
            raise ServiceError(
                503, "timeout", str(exc), headers={"Retry-After": str(exc.retry_after)}, timeout=exc.timeout
            ) from None
        except PoolClosed as exc:
            raise ServiceError(503, "not_ready", str(exc), headers={"Retry-After": "5"}) from None

    def _overloaded(self, retry_after: int) -> ServiceError:
        self.telemetry.rejected.labels("overloaded").inc()
        pool = self.pool
        capacity = pool.capacity if pool is not None else 0
        return ServiceError(
            503,
            "overloaded",
            f"the server is busy ({capacity} requests running or queued); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )


def _warn_about_memory(config: ServiceConfig) -> None:
    available = memory_limit()
    if available is not None and config.peak_memory > 0.8 * available:
        log.warning(
            "%d workers scoring %s-pixel images may need about %.1f GB, more than 80%% of the %.1f GB this process "
            "may use: lower --max-pixels or --pool-size",
            config.pool_size,
            f"{config.max_pixels:,}",
            config.peak_memory / 1e9,
            available / 1e9,
        )


# --------------------------------------------------------------------------------------------------
# Form helpers


def _param(form: Form, name: str, query: str | None) -> str | None:
    """A parameter given as a query parameter or a form field (not both with different values)."""
    value = form.fields.get(name)
    if value is not None and query is not None and value.strip() != query.strip():
        raise ServiceError(
            422,
            "invalid_parameter",
            f"{name!r} is given twice with different values ({query!r} in the query, {value!r} in the form)",
            field=name,
        )
    chosen = query if query is not None else value
    if chosen is None or not chosen.strip():
        return None
    return chosen.strip()


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    return names or None


def _file(form: Form, name: str) -> Upload:
    upload = form.files.get(name)
    if upload is None:
        if name in form.fields:
            raise ServiceError(
                422, "missing_field", f"field {name!r} must be a file upload, got a text field", field=name
            )
        raise ServiceError(422, "missing_field", f"missing file field {name!r}", field=name)
    return upload


def _only(form: Form, files: set[str], fields: set[str]) -> None:
    extra_files = sorted(set(form.files) - files)
    extra_fields = sorted(set(form.fields) - fields - files)
    if extra_files or extra_fields:
        names = ", ".join(repr(n) for n in extra_files + extra_fields)
        raise ServiceError(
            422,
            "unexpected_field",
            f"unexpected field(s) {names}; this endpoint takes {', '.join(sorted(files | fields))}",
            field=(extra_files + extra_fields)[0],
        )


def _ascii(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100] or "image"


# --------------------------------------------------------------------------------------------------
# The app


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    """The web service for ``config`` (defaults when omitted); models load when the app starts."""
    config = config or ServiceConfig()
    state = ServiceState(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        await asyncio.to_thread(state.start)
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = FastAPI(
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
    app.add_middleware(MetricsMiddleware, telemetry=state.telemetry)
    _add_error_handlers(app)

    @app.get("/health", response_model=HealthResponse, tags=["operations"], summary="The process is alive")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        tags=["operations"],
        summary="Models and presets are loaded (503 until they are)",
        responses={503: {"model": ReadyResponse, "description": "Starting, stopping, or start-up failed."}},
    )
    async def ready() -> Any:
        pool = state.pool
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
            "error": state.error,
        }
        if not state.ready:
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return body

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"example": _METRICS_EXAMPLE}}}},
    )
    async def metrics(request: Request) -> Response:
        body, content_type = state.telemetry.render(request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type})

    @app.post(
        "/evaluate/single",
        response_model=PairResponse,
        responses=_ERRORS,
        tags=["evaluate"],
        summary="Score one processed image against its original",
        openapi_extra=SINGLE_BODY,
    )
    async def evaluate_single_route(
        request: Request,
        profile: Optional[str] = Query(
            None, description="Profile whose weights make the composite (default: the server's first profile)."
        ),
        metrics: Optional[str] = Query(
            None, description="Comma-separated metrics to compute (equal weights unless a profile is named too)."
        ),
    ) -> Any:
        form = await state.read(request, max_parts=8)
        _only(form, {"original", "processed"}, {"profile", "metrics"})
        original, processed = _file(form, "original"), _file(form, "processed")
        models, _ = state.require_ready()
        plan = models.plan(_param(form, "profile", profile), _names(_param(form, "metrics", metrics)))
        payload, result = await state.run(evaluate_single, plan, original, processed, config.max_pixels)
        state.telemetry.observe_result(plan.profile, result.normalised, result.composite)
        return payload

    @app.post(
        "/evaluate/batch",
        response_model=BatchResponse,
        responses=_ERRORS,
        tags=["evaluate"],
        summary="Score many pairs: original_N/processed_N fields, or one zip",
        openapi_extra=BATCH_BODY,
    )
    async def evaluate_batch_route(
        request: Request,
        profile: Optional[str] = Query(None, description="Profile whose weights make the composite."),
        metrics: Optional[str] = Query(None, description="Comma-separated metrics to compute."),
    ) -> Any:
        form = await state.read(request, max_parts=2 * config.max_batch_pairs + 4)
        models, _ = state.require_ready()
        plan = models.plan(_param(form, "profile", profile), _names(_param(form, "metrics", metrics)))
        pairs, issues, archive = _batch_inputs(form, config)
        deadline = time.monotonic() + config.request_timeout
        cancelled = threading.Event()
        body, results = await state.run(
            _batch_job,
            plan,
            config,
            pairs,
            archive,
            issues,
            cancelled,
            deadline,
            timeout=2 * config.request_timeout + 5.0,
            cancelled=cancelled,
        )
        for result in results:
            state.telemetry.observe_result(plan.profile, result.normalised, result.composite)
        return body

    @app.post(
        "/compress",
        response_model=CompressResponse,
        tags=["compress"],
        openapi_extra=COMPRESS_BODY,
        summary="The smallest encoding of one image that meets a quality target",
        responses={
            **_ERRORS,
            200: {
                "content": {
                    "application/json": {},
                    "image/avif": {},
                    "image/webp": {},
                    "image/jpeg": {},
                    "image/jxl": {},
                },
                "description": "JSON report with the file in data_base64, or with "
                "output=image the file itself (report in X-Optimizer-* "
                "headers).",
            },
        },
    )
    async def compress_route(
        request: Request,
        target: Optional[str] = Query(
            None, description="Quality bar METRIC:VALUE, e.g. ssimulacra2:80, lpips:0.1 or composite:0.85."
        ),
        formats: Optional[str] = Query(None, description="Comma-separated formats to try (default avif,webp,jpeg)."),
        profile: Optional[str] = Query(None, description="Profile for composite targets."),
        max_probes: Optional[int] = Query(
            None, ge=1, description="Encodes per format at most (capped by the server's compress_max_probes)."
        ),
        output: Literal["json", "image"] = Query(
            "json", description="json: the report with the file base64 encoded; image: the file itself."
        ),
    ) -> Any:
        form = await state.read(request, max_parts=8)
        _only(form, {"image"}, {"target", "formats", "profile", "max_probes"})
        upload = _file(form, "image")
        goal = _param(form, "target", target)
        if goal is None:
            raise ServiceError(
                422, "missing_field", "missing field 'target' (METRIC:VALUE, e.g. ssimulacra2:80)", field="target"
            )
        from ..tuning.target import Target

        parsed = Target.parse(goal)
        names = _names(_param(form, "formats", formats))
        if names is not None and len(names) > _MAX_FORMATS:
            raise ServiceError(
                422, "invalid_parameter", f"at most {_MAX_FORMATS} formats, got {len(names)}", field="formats"
            )
        probes = _probes(_param(form, "max_probes", None if max_probes is None else str(max_probes)), config)
        models, _ = state.require_ready()
        evaluator = models.compress_evaluator(_param(form, "profile", profile), parsed.metric)
        payload, data = await state.run(
            _compress_job, evaluator, upload, str(parsed), names, probes, config.max_pixels, output == "json"
        )
        if output == "image":
            headers = {
                "Content-Disposition": f'inline; filename="{_ascii(upload.label.rsplit(".", 1)[0])}'
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

    @app.get(
        "/presets",
        response_model=PresetListResponse,
        tags=["presets"],
        summary="The presets the server was started with",
        responses={503: _ERRORS[503]},
    )
    async def presets() -> Any:
        state.require_ready()
        return {"presets": [_preset_summary(name, preset) for name, preset in sorted(state.presets.items())]}

    @app.get(
        "/presets/{name}",
        tags=["presets"],
        summary="One preset file, as exported by the study",
        responses={
            404: {"model": ErrorResponse, "description": "No preset of that name."},
            503: _ERRORS[503],
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
    async def preset(name: str) -> Any:
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

    return app


def create_app_from_environment() -> FastAPI:
    """App factory for uvicorn worker processes (``optimizer serve --workers N``): config from the environment."""
    return create_app(ServiceConfig.from_environment())


# --------------------------------------------------------------------------------------------------
# Endpoint helpers


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


def _batch_inputs(
    form: Form, config: ServiceConfig
) -> tuple[list[tuple[str, Upload, Upload]], list[Any], Upload | None]:
    extra_fields = sorted(set(form.fields) - {"profile", "metrics"})
    if extra_fields:
        raise ServiceError(
            422,
            "unexpected_field",
            f"unexpected field(s) {', '.join(map(repr, extra_fields))}; files go in original_N/processed_N or archive",
            field=extra_fields[0],
        )
    archive = form.files.get("archive")
    named = {name: upload for name, upload in form.files.items() if name != "archive"}
    if archive is not None:
        if named:
            raise ServiceError(
                422,
                "unexpected_field",
                "give either original_N/processed_N fields or one archive, not both",
                field=sorted(named)[0],
            )
        return [], [], archive
    if not named:
        raise ServiceError(
            422,
            "missing_field",
            "no pairs: send original_0/processed_0, original_1/processed_1, ... or one zip in the field 'archive'",
            field="original_0",
        )
    sides: dict[str, dict[int, Upload]] = {"original": {}, "processed": {}}
    for name, upload in named.items():
        match = _PAIR_FIELD.match(name)
        if match is None:
            raise ServiceError(
                422,
                "unexpected_field",
                f"unexpected file field {name!r}; pairs are named original_N and processed_N (N = 0, 1, ...)",
                field=name,
            )
        sides[match.group(1)][int(match.group(2))] = upload
    indices = sorted(sides["original"].keys() & sides["processed"].keys())
    if len(indices) > config.max_batch_pairs:
        raise ServiceError(
            413,
            "too_many_pairs",
            f"{len(indices)} pairs, over the limit of {config.max_batch_pairs} per batch",
            limit=config.max_batch_pairs,
        )
    pairs = [(str(i), sides["original"][i], sides["processed"][i]) for i in indices]
    issues = []
    for side, other in (("original", "processed"), ("processed", "original")):
        for i in sorted(sides[side].keys() - sides[other].keys()):
            issues.append(InputIssue(sides[side][i].label, f"no {other}_{i} for {side}_{i}", "unpaired"))
    return pairs, issues, None


def _batch_job(
    plan: Any,
    config: ServiceConfig,
    pairs: Any,
    archive: Upload | None,
    issues: Any,
    cancelled: threading.Event,
    deadline: float,
) -> Any:
    """The batch, stopping (the rest listed as timed out) once ``deadline`` passes."""
    watcher = threading.Timer(max(0.0, deadline - time.monotonic()), cancelled.set)
    watcher.daemon = True
    watcher.start()
    try:
        return evaluate_batch(plan, config, pairs=pairs, archive=archive, issues=issues, cancelled=cancelled)
    finally:
        watcher.cancel()


def _compress_job(
    evaluator: Any, upload: Upload, target: str, formats: Any, probes: int, max_pixels: int, encode: bool
) -> tuple[dict[str, Any], bytes]:
    payload, data = compress_upload(
        evaluator, upload, target=target, formats=formats, max_probes=probes, max_pixels=max_pixels
    )
    if encode:
        payload["data_base64"] = base64.b64encode(data).decode("ascii")
    return payload, data


def _preset_summary(name: str, preset: Any) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------------
# Errors


def _add_error_handlers(app: FastAPI) -> None:
    def respond(error: ServiceError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return respond(exc)

    @app.exception_handler(OptimizerError)
    async def optimizer_error(_request: Request, exc: OptimizerError) -> JSONResponse:
        return respond(from_exception(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), exclude={"url", "ctx"})
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid value')}" if where else "invalid request"
        return JSONResponse(error_body("validation_error", message, errors=errors), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(
            error_body(names.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(MemoryError)
    async def out_of_memory(_request: Request, exc: MemoryError) -> JSONResponse:
        log.warning("out of memory while handling a request: %s", exc)
        return respond(
            ServiceError(
                503,
                "out_of_memory",
                "the server ran out of memory for this request; retry later or send smaller images",
                headers={"Retry-After": "30"},
            )
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", "an internal error occurred; it has been logged"), status_code=500
        )
