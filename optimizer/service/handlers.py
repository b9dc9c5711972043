"""Exception handlers: every failure becomes the one JSON error shape of :mod:`.errors`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import OptimizerError
from .errors import ServiceError, error_body, from_exception

__all__ = ["add_error_handlers"]

log = logging.getLogger("optimizer.service")


def _respond(error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _respond(exc)


async def _optimizer_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OptimizerError)
    return _respond(from_exception(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = jsonable_encoder(exc.errors(), exclude={"url", "ctx"})
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid value')}" if where else "invalid request"
    return JSONResponse(error_body("validation_error", message, errors=errors), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not_found", 405: "method_not_allowed"}
    return JSONResponse(
        error_body(kinds.get(exc.status_code, "http_error"), str(exc.detail)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _out_of_memory(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("out of memory while handling a request: %s", exc)
    return _respond(
        ServiceError(
            503,
            "out_of_memory",
            "the server ran out of memory for this request; retry later or send smaller images",
            headers={"Retry-After": "30"},
        )
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal_error", "an internal error occurred; it has been logged"), status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Install the handlers on ``app``: service and package errors by their status, validation errors as 422,
    routing errors as 404/405, ``MemoryError`` as 503, anything else as a logged 500.

    Args:
        app: the application.
    """
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(OptimizerError, _optimizer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(MemoryError, _out_of_memory)
    app.add_exception_handler(Exception, _internal_error)
