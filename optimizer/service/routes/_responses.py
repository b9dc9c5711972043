"""The error responses the OpenAPI document lists for each endpoint, with examples."""

from __future__ import annotations

from typing import Any

from ..schemas import ErrorResponse

__all__ = ["ERRORS"]


def _examples(**examples: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"examples": {name: {"value": {"error": value}} for name, value in examples.items()}}}


#: Error responses by status code, for ``responses=`` on the work endpoints.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed request (broken multipart framing).",
        "content": _examples(bad_request={"type": "bad_request", "message": "malformed multipart body: ..."}),
    },
    408: {
        "model": ErrorResponse,
        "description": "The request body stalled: no part of it arrived for body_timeout seconds; the "
        "connection is closed.",
        "content": _examples(
            body_timeout={
                "type": "body_timeout",
                "message": "no part of the request body arrived for 30 s; the connection is closed",
                "timeout": 30,
            }
        ),
    },
    413: {
        "model": ErrorResponse,
        "description": "A file, the request, an image's pixel count, a batch, or the memory scoring the images "
        "would take is over its limit.",
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
            too_much_memory={
                "type": "too_much_memory",
                "message": "scoring images of 16,000,000 pixels needs about 6.40 GB of memory, more than this "
                "server's budget of 4.00 GB: send smaller images",
                "limit": 4000000000,
                "needed": 6400000000,
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
        "description": "Overloaded (the queue, the bodies held or the memory budget is full: see reason), "
        "timed out or not ready; retry after Retry-After seconds.",
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
