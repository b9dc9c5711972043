"""HTTP errors: one JSON shape for every failure, and the mapping from package errors to status codes.

Every error response has the body ``{"error": {"type": ..., "message": ..., ...}}``; ``type`` is a stable
machine-readable name, ``message`` states the rule and the actual values, and extra keys (``limit``,
``field``, ``known``...) carry the numbers. Status codes:

* 400 ``bad_request``: the HTTP request itself is malformed (not multipart, broken multipart framing).
* 404 ``not_found``: no such route or preset. 405 ``method_not_allowed``.
* 413 ``too_large`` (a file or the request over its byte limit), ``too_many_pixels`` (an image over the
  pixel limit), ``too_many_pairs`` / ``too_many_entries`` (batch limits).
* 422: the request is well formed but its content cannot be used: ``invalid_image`` (not an image,
  truncated, corrupt, unsupported format), ``size_mismatch``, ``unknown_name`` (profile, metric, codec),
  ``invalid_parameter``, ``missing_field``, ``unexpected_field``, ``codec_unavailable``, ``validation_error``.
* 503 ``overloaded`` (the work queue is full), ``timeout`` (the request ran past the server's timeout),
  ``not_ready`` (start-up has not finished) and ``out_of_memory``, each with a ``Retry-After`` header.
* 500 ``internal_error``: a bug; the body says nothing about the server beyond the request id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    CodecUnavailableError,
    ImageSizeMismatchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    OptimizerError,
    PresetError,
    ResourceLimitError,
    UnknownNameError,
    WeightsNotFoundError,
)

__all__ = ["ServiceError", "error_body", "from_exception"]


class ServiceError(Exception):
    """An error with its HTTP status, its ``type`` and extra JSON fields (and headers, e.g. Retry-After).

    Args:
        status: the HTTP status.
        type: the stable machine-readable name (``too_large``, ``overloaded``...).
        message: the rule and the actual values.
        headers: response headers (``Retry-After``, ``Connection``).
        extra: further JSON fields (``limit``, ``field``, ``known``...); ``None`` values are left out.
    """

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body.

        Returns:
            ``{"error": {"type", "message", ...}}``.
        """
        return error_body(self.type, self.message, **self.extra)


def error_body(type: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one JSON shape of every error.

    Args:
        type: the error's name.
        message: what went wrong.
        extra: further fields; ``None`` values are left out.

    Returns:
        ``{"error": {"type": type, "message": message, **extra}}``.
    """
    return {"error": {"type": type, "message": message, **{k: v for k, v in extra.items() if v is not None}}}


def from_exception(exc: BaseException, **extra: Any) -> ServiceError:
    """The :class:`ServiceError` for a package error raised while handling a request's content.

    Anything not listed here is not the client's doing and becomes a 500 in the app's last-resort handler.

    Args:
        exc: the package error.
        extra: further JSON fields.

    Returns:
        The error with its status and type.
    """
    if isinstance(exc, ServiceError):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ImageTooLargeError):
        return ServiceError(413, "too_many_pixels", message, **extra)
    if isinstance(exc, ResourceLimitError):  # the work needs more memory than this server may use
        return ServiceError(413, "too_much_memory", message, **extra)
    if isinstance(exc, InvalidImageError):
        return ServiceError(422, "invalid_image", message, **extra)
    if isinstance(exc, ImageSizeMismatchError):
        return ServiceError(422, "size_mismatch", message, **extra)
    if isinstance(exc, UnknownNameError):
        return ServiceError(422, "unknown_name", message, kind=exc.kind, name=exc.name, known=exc.known, **extra)
    if isinstance(exc, CodecUnavailableError):
        return ServiceError(422, "codec_unavailable", message, **extra)
    if isinstance(exc, WeightsNotFoundError):  # start-up loads every model: this is the server's fault
        return ServiceError(503, "not_ready", message, headers={"Retry-After": "60"}, **extra)
    if isinstance(exc, (InvalidParameterError, PresetError)):
        return ServiceError(422, "invalid_parameter", message, **extra)
    if isinstance(exc, OptimizerError):
        return ServiceError(422, "unprocessable", message, **extra)
    raise TypeError(f"no client error for {type(exc).__name__}") from exc
