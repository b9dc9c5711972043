"""Serving the app with uvicorn, hardened against clients that hold connections without finishing requests.

uvicorn bounds a kept-alive connection's idle time after a response (``timeout_keep_alive``) but nothing
before the first request: a connection that sends nothing, or half of its headers, stays open for good.
20,200 such connections once exhausted the process's file descriptors, ``/health`` stopped answering and
the log grew by 137 MB in 30 s of accept-error tracebacks. Here:

* :class:`GuardedH11Protocol`, uvicorn's h11 protocol plus a **header timeout** (a connection must deliver
  a request's complete headers within ``header_timeout`` seconds of opening, or of its first byte after a
  kept-alive response; otherwise it is closed, with a 408 when it had started a request) and a
  **connection cap** (``max_connections``, lowered below the process's descriptor limit if needed, so
  descriptors never run out): a new connection past the cap closes the connection that has been idle the
  longest (no request in progress: silent, trickling headers, or kept alive), so a flood of idle
  connections cannot lock out real clients; only when every connection is busy with a request is the new
  one answered 503 and closed;
* the **body timeout** is the app's (:class:`~optimizer.service.uploads.BodyTimeoutMiddleware`), so it
  holds under any ASGI server; the **keep-alive timeout**, the listen **backlog** and the largest header
  block are uvicorn's own settings, passed from the config;
* :func:`new_event_loop`, asyncio's loop whose accept errors ("Too many open files") and the guard's own
  refusals are logged at most once per :data:`LOG_INTERVAL` seconds, with a count, and no traceback.

In production a reverse proxy (nginx, Envoy, a cloud load balancer) should own TLS, client timeouts and
per-client rate limits; these guards keep the server alive when it is reached directly.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import resource
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServiceConfig
from .errors import error_body

if TYPE_CHECKING:
    from fastapi import FastAPI
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = [
    "LOG_INTERVAL",
    "ConnectionLimits",
    "GuardedH11Protocol",
    "RateLimitedLog",
    "effective_connection_cap",
    "new_event_loop",
    "run",
]

log = logging.getLogger("optimizer.service.server")

#: Seconds between two log lines about the same kind of refused or failed connection.
LOG_INTERVAL = 10.0

#: File descriptors kept free below the process's limit for everything but client connections (model
#: files, the listening socket, logs, worker pipes).
_RESERVED_DESCRIPTORS = 64


class RateLimitedLog:
    """Log lines that may come thousands of times a second: the first of a kind at once, then at most one
    per ``interval`` seconds, saying how many were left out meanwhile.

    Args:
        logger: where the lines go.
        interval: seconds between two lines of the same kind.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self, logger: logging.Logger, *, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> bool:
        """Log ``message`` at WARNING unless a line of this ``kind`` was logged less than ``interval`` ago.

        Args:
            kind: what happened, e.g. ``"header_timeout"``.
            message: the line (no traceback is ever attached).

        Returns:
            Whether a line was written.
        """
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        if skipped:
            message += f" ({skipped:,} more like this in the last {now - (last or now):.0f} s)"
        self.logger.warning(message)
        return True


_limited = RateLimitedLog(log)


@dataclass(frozen=True)
class ConnectionLimits:
    """The connection guard's settings (picklable: uvicorn hands them to its worker processes).

    Args:
        header_timeout: seconds to deliver complete request headers (``None``: no limit).
        max_connections: open connections at most (``None``: no cap).
    """

    header_timeout: float | None = 10.0
    max_connections: int | None = 1000

    @classmethod
    def from_config(cls, config: ServiceConfig) -> ConnectionLimits:
        """The limits of ``config``.

        Args:
            config: the service's settings.

        Returns:
            Its header timeout and connection cap.
        """
        return cls(header_timeout=config.header_timeout, max_connections=config.max_connections)


def effective_connection_cap(requested: int | None) -> int | None:
    """``requested``, lowered to leave :data:`_RESERVED_DESCRIPTORS` below the process's descriptor limit.

    Args:
        requested: the configured cap (``None``: none configured).

    Returns:
        The cap to enforce; with no configured cap, the descriptor limit itself (``None`` if unlimited).
    """
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every POSIX system has the limit
        return requested
    if soft == resource.RLIM_INFINITY:
        return requested
    ceiling = max(1, soft - _RESERVED_DESCRIPTORS)
    return ceiling if requested is None else min(requested, ceiling)


def _raw_response(status: Literal[408, 503], kind: str, message: str) -> bytes:
    reason = {408: "Request Timeout", 503: "Service Unavailable"}[status]
    body = json.dumps(error_body(kind, message)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if status == 503 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


#: Per server (uvicorn's shared state), its connections without a request in progress, longest idle first.
_IDLE: weakref.WeakKeyDictionary[ServerState, OrderedDict[int, GuardedH11Protocol]] = weakref.WeakKeyDictionary()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a connection cap; see the module doc.

    Built by uvicorn for each accepted connection (``functools.partial(GuardedH11Protocol, limits=...)``
    as its ``http`` protocol class).

    Args:
        config: uvicorn's config.
        server_state: uvicorn's state shared by every connection of the server.
        app_state: the lifespan state.
        _loop: the event loop.
        limits: the guard's settings.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._cap = effective_connection_cap(limits.max_connections)
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial_request = False
        idle = _IDLE.get(server_state)
        if idle is None:
            idle = _IDLE[server_state] = OrderedDict()
        self._idle = idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Make room past the cap (close the longest idle connection, or refuse this one), then start the
        header clock."""
        super().connection_made(cast(asyncio.Transport, transport))
        if self._cap is not None and len(self.connections) > self._cap:
            oldest = next(iter(self._idle.values()), None)
            if oldest is None:
                _limited.warning(
                    "connection_cap",
                    f"refused a connection: all {len(self.connections) - 1:,} open connections are busy, the cap "
                    f"is {self._cap:,} (max_connections)",
                )
                self.transport.write(
                    _raw_response(503, "overloaded", f"the server holds its maximum of {self._cap:,} connections")
                )
                self.transport.close()
                return
            _limited.warning(
                "connection_evicted",
                f"closed the longest idle connection to stay within {self._cap:,} connections (max_connections)",
            )
            oldest._close_idle()
        self._mark_idle()
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        """Feed h11, then keep the header clock running only while a request's headers are incomplete."""
        if self.conn.their_state is h11.IDLE and data:
            self._partial_request = True
            if self._header_timer is None:
                self._arm_header_timer()  # a kept-alive connection starts a new request: a new deadline
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._partial_request = False
            self._cancel_header_timer()
            self._idle.pop(id(self), None)

    def on_response_complete(self) -> None:
        """A kept-alive connection waits for its next request: idle again."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._mark_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header clock, forget the connection, then let uvicorn clean up."""
        self._cancel_header_timer()
        self._idle.pop(id(self), None)
        super().connection_lost(exc)

    def _mark_idle(self) -> None:
        self._idle.pop(id(self), None)
        self._idle[id(self)] = self  # the end: the most recently idle

    def _close_idle(self) -> None:
        self._idle.pop(id(self), None)
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm_header_timer(self) -> None:
        timeout = self.limits.header_timeout
        if timeout is None or self.transport is None or self.transport.is_closing():
            return
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(timeout, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being written (pipelining): not idle
        timeout = self.limits.header_timeout
        if self._partial_request:
            self.transport.write(
                _raw_response(408, "header_timeout", f"the request headers did not arrive within {timeout:g} s")
            )
        _limited.warning(
            "header_timeout",
            f"closed a connection that sent no complete request headers within {timeout:g} s (header_timeout)",
        )
        self.transport.close()


def _accept_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's exception handler, except that accept errors become one rate-limited line each."""
    message = str(context.get("message", ""))
    if message.startswith("socket.accept() out of system resource"):
        exc = context.get("exception")
        _limited.warning("accept_error", f"cannot accept connections: {exc} (asyncio retries in 1 s)")
        return
    loop.default_exception_handler(context)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio event loop whose accept errors are logged at most once per :data:`LOG_INTERVAL` seconds.

    uvicorn builds each server process's loop with it (``loop="optimizer.service.server:new_event_loop"``).

    Returns:
        A new selector event loop.
    """
    loop = asyncio.SelectorEventLoop()
    loop.set_exception_handler(_accept_errors)
    return loop


def run(
    app: FastAPI | str,
    config: ServiceConfig,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Serve ``app`` with uvicorn under ``config``'s connection settings; returns when the server stops.

    Args:
        app: the application, or for ``workers > 1`` the import string of an app factory.
        config: the service's settings (timeouts, connection cap, backlog).
        host: address to listen on.
        port: port to listen on.
        workers: server processes.
        log_level: uvicorn's log level.
    """
    import uvicorn

    protocol = functools.partial(GuardedH11Protocol, limits=ConnectionLimits.from_config(config))
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers,
        factory=isinstance(app, str),
        log_level=log_level,
        http=cast(Any, protocol),
        loop=f"{__name__}:new_event_loop",
        timeout_keep_alive=cast(int, config.keep_alive_timeout),  # uvicorn passes it to call_later: any float
        backlog=config.backlog,
        h11_max_incomplete_event_size=config.max_header_bytes,
        timeout_graceful_shutdown=30,
    )
