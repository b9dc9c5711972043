"""Request bodies: a streaming multipart reader with limits, and the body timeout.

Why not Starlette's form parser: it bounds text fields only (``max_part_size``), spools file parts of any
size to temporary files, and cannot stop a body at a total size. Here every part is held in memory under
its limit (``max_file_bytes`` for files, 64 KiB for text fields), the request under ``max_request_bytes``,
and both are checked chunk by chunk as the body arrives, so an oversized upload costs at most one limit's
worth of memory; every chunk is also counted against the bytes all requests may hold at once (the
caller's ``hold``, :class:`~optimizer.service.admission.Ticket`), so uploads in flight are admitted like
work. After a limit is hit the rest of the body is read and discarded (up to a bound) before the 413 is
sent, so that ordinary clients, which send the whole body before reading the answer, get it.

A client that stops sending mid-body is answered 408 ``body_timeout`` once ``body_timeout`` seconds pass
without a new piece (:class:`BodyTimeoutMiddleware`), and its connection is closed; one that goes away is
never an internal error (:data:`CLIENT_CLOSED`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ServiceError

try:  # python-multipart >= 0.0.13 is imported as python_multipart; older releases as multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # pragma: no cover - depends on the installed release
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

__all__ = [
    "CLIENT_CLOSED",
    "BodyTimeout",
    "BodyTimeoutMiddleware",
    "Form",
    "Upload",
    "discard_body",
    "read_form",
    "safe_label",
]

#: Largest text field (profile names, metric lists, targets).
MAX_FIELD_BYTES = 64 * 1024
#: Largest header block of one part.
MAX_PART_HEADER_BYTES = 16 * 1024
#: After a limit is hit, at most this much of the remaining body is read and discarded before answering.
DRAIN_BYTES = 64 * 1024 * 1024
#: Status for a request whose client went away before sending its whole body (nginx's convention); the
#: answer reaches nobody, but the metrics count it.
CLIENT_CLOSED = 499

#: Characters removed from client-supplied names.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def safe_label(name: str | None, fallback: str) -> str:
    """A client-supplied file name reduced to a display label: last path component, no control characters.

    Args:
        name: the name the client sent, if any.
        fallback: the label when there is none (the field's name).

    Returns:
        At most 200 characters.
    """
    if not name:
        return fallback
    text = CONTROL_CHARACTERS.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return text[:200] or fallback


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory.

    Args:
        field: the form field it came in.
        filename: the name the client gave it, if any.
        data: its bytes.
    """

    field: str
    filename: str | None
    data: bytes = dataclass_field(repr=False)

    @property
    def label(self) -> str:
        """How results and errors name this file (its sanitised name, else its field)."""
        return safe_label(self.filename, self.field)

    @property
    def size(self) -> int:
        """Bytes."""
        return len(self.data)


@dataclass
class Form:
    """The parts of a multipart body: files and text fields by field name, and the bytes received."""

    files: dict[str, Upload] = dataclass_field(default_factory=dict)
    fields: dict[str, str] = dataclass_field(default_factory=dict)
    received: int = 0


class _PartState:
    __slots__ = ("data", "filename", "header_bytes", "headers", "is_file", "name", "raw_name", "raw_value")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.raw_name = b""
        self.raw_value = b""
        self.header_bytes = 0
        self.name: str | None = None
        self.filename: str | None = None
        self.is_file = False
        self.data = bytearray()


class _FormBuilder:
    """python-multipart callbacks that keep parts in memory under their limits."""

    def __init__(self, max_file_bytes: int, max_parts: int, file_fields: Callable[[str], bool] | None) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_parts = max_parts
        self.file_fields = file_fields
        self.form = Form()
        self.part = _PartState()
        self.parts = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part = _PartState()
        self.parts += 1
        if self.parts > self.max_parts:
            raise ServiceError(
                413, "too_many_entries", f"a request may hold at most {self.max_parts} parts", limit=self.max_parts
            )

    def _header_bytes(self, count: int) -> None:
        self.part.header_bytes += count
        if self.part.header_bytes > MAX_PART_HEADER_BYTES:
            raise ServiceError(400, "bad_request", f"a part's headers may be at most {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.part.raw_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.part.raw_value += data[start:end]

    def on_header_end(self) -> None:
        part = self.part
        part.headers.append((part.raw_name.strip().lower(), part.raw_value.strip()))
        part.raw_name = b""
        part.raw_value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        disposition = next((v for k, v in part.headers if k == b"content-disposition"), b"")
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise ServiceError(
                400, "bad_request", 'every part needs a "Content-Disposition: form-data; name=..." header'
            )
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            part.is_file = True
            part.filename = options[b"filename"].decode("utf-8", "replace")
        elif self.file_fields is not None and self.file_fields(part.name):
            part.is_file = True  # a file field is a file by its name, with or without a filename

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        limit = self.max_file_bytes if part.is_file else MAX_FIELD_BYTES
        if len(part.data) + (end - start) > limit:
            what = (
                f"file {safe_label(part.filename, part.name or '?')!r} (field {part.name!r})"
                if part.is_file
                else f"text field {part.name!r}"
            )
            raise ServiceError(
                413, "too_large", f"{what} is larger than the limit of {limit:,} bytes", limit=limit, field=part.name
            )
        part.data += data[start:end]

    def on_part_end(self) -> None:
        part, form = self.part, self.form
        name = part.name or ""
        if name in form.files or name in form.fields:
            raise ServiceError(422, "unexpected_field", f"field {name!r} is given more than once", field=name)
        if part.is_file:
            form.files[name] = Upload(name, part.filename, bytes(part.data))
        else:
            form.fields[name] = part.data.decode("utf-8", "replace")


async def read_form(
    request: Request,
    *,
    max_file_bytes: int,
    max_request_bytes: int,
    max_parts: int,
    hold: Callable[[int], None] | None = None,
    file_fields: Callable[[str], bool] | None = None,
) -> Form:
    """Read a ``multipart/form-data`` body under the limits; see the module doc.

    A request without a body (no Content-Type) gives an empty form and a urlencoded body a form of text
    fields, so that missing files are reported as such (422); any other content type is 415.

    Args:
        request: the incoming request.
        max_file_bytes: largest file part.
        max_request_bytes: largest body.
        max_parts: most parts.
        hold: called with each chunk's size before it is kept; raises (a 503) to refuse the body.
        file_fields: which field names hold files even when their part has no ``filename`` (the endpoint's
            file fields; other parts without one are text fields).

    Returns:
        The form.
    """
    content_type = request.headers.get("content-type")
    stream = request.stream()
    if not content_type:
        await _drain(stream, 0, max_request_bytes)
        return Form()
    kind, params = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":  # text fields only: files are then reported missing
        return await _read_urlencoded(stream, max_request_bytes, hold)
    if kind != b"multipart/form-data":
        await _drain(stream, 0, max_request_bytes)
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"expected a multipart/form-data body, got Content-Type {kind.decode('latin-1')!r}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        await _drain(stream, 0, max_request_bytes)
        raise ServiceError(400, "bad_request", "the multipart Content-Type has no boundary parameter")
    declared = _content_length(request)
    if declared is not None and declared > max_request_bytes:
        await _drain(stream, 0, max_request_bytes)
        raise _request_too_large(max_request_bytes, declared)
    builder = _FormBuilder(max_file_bytes, max_parts, file_fields)
    received = 0
    try:
        parser = MultipartParser(boundary, builder.callbacks())  # type: ignore[arg-type]  # refuses long ones
        async for chunk in stream:
            received += len(chunk)
            if received > max_request_bytes:
                raise _request_too_large(max_request_bytes, declared)
            if hold is not None:
                hold(len(chunk))
            parser.write(chunk)
        parser.finalize()
    except ServiceError:
        await _drain(stream, received, max_request_bytes)
        raise
    except ClientDisconnect:
        raise _client_closed(received) from None
    except Exception as exc:  # python-multipart's parse errors (and nothing else reaches here)
        if type(exc).__module__.split(".")[0] not in ("python_multipart", "multipart"):
            raise
        await _drain(stream, received, max_request_bytes)
        raise ServiceError(400, "bad_request", f"malformed multipart body: {exc}") from None
    builder.form.received = received
    return builder.form


def _client_closed(received: int) -> ServiceError:
    return ServiceError(
        CLIENT_CLOSED, "client_closed", f"the client closed the connection after sending {received:,} bytes"
    )


async def _read_urlencoded(
    stream: AsyncIterator[bytes], max_request_bytes: int, hold: Callable[[int], None] | None
) -> Form:
    limit = min(max_request_bytes, 4 * MAX_FIELD_BYTES)
    body = bytearray()
    try:
        async for chunk in stream:
            body += chunk
            if len(body) > limit:
                await _drain(stream, len(body), max_request_bytes)
                raise _request_too_large(limit, None)
            if hold is not None:
                hold(len(chunk))
    except ClientDisconnect:
        raise _client_closed(len(body)) from None
    form = Form(received=len(body))
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
    except ValueError as exc:
        raise ServiceError(400, "bad_request", f"malformed form body: {exc}") from None
    for name, value in pairs:
        if name in form.fields:
            raise ServiceError(422, "unexpected_field", f"field {name!r} is given more than once", field=name)
        form.fields[name] = value
    return form


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _request_too_large(limit: int, declared: int | None) -> ServiceError:
    size = f" (Content-Length {declared:,})" if declared is not None else ""
    return ServiceError(
        413, "too_large", f"the request body is larger than the limit of {limit:,} bytes{size}", limit=limit
    )


async def discard_body(request: Request, max_request_bytes: int) -> None:
    """Read and drop a body that will not be used (a request refused before reading it), bounded.

    Args:
        request: the request.
        max_request_bytes: the request limit; at most this plus :data:`DRAIN_BYTES` is read.
    """
    await _drain(request.stream(), 0, max_request_bytes)


async def _drain(stream: AsyncIterator[bytes], received: int, limit: int) -> None:
    """Read and drop the rest of the body (bounded), so that the client gets to read our answer."""
    budget = limit + DRAIN_BYTES
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > budget:
                return
    except Exception:  # noqa: BLE001 - the client went away or the stream was consumed: nothing to drain
        return


# --------------------------------------------------------------------------------------------------
# The body timeout


class BodyTimeout(ServiceError):
    """No piece of the request body arrived for ``timeout`` seconds: 408, and the connection is closed."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            408,
            "body_timeout",
            f"no part of the request body arrived for {timeout:g} s; the connection is closed",
            headers={"Connection": "close"},
            timeout=timeout,
        )


class BodyTimeoutMiddleware:
    """Pure ASGI middleware: a request body that stalls for ``timeout`` seconds raises :class:`BodyTimeout`.

    Only waits for body pieces are timed (the app's own work is not); once the body is complete, or has
    timed out, ``receive`` behaves as the server's (after a timeout it reports a disconnect at once).

    Args:
        app: the wrapped application.
        timeout: seconds without a new piece of body (``None``: no timeout).
    """

    def __init__(self, app: ASGIApp, timeout: float | None) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a timed ``receive``."""
        timeout = self.timeout
        if scope["type"] != "http" or timeout is None:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {"complete": False, "timed_out": False}

        async def timed_receive() -> Message:
            if state["complete"]:
                return await receive()
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                state["timed_out"] = True
                raise BodyTimeout(timeout) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["complete"] = True
            return message

        await self.app(scope, timed_receive, send)
