"""What the app holds between requests, and how a route reaches it: :class:`ServiceState` and :data:`StateDep`.

One :class:`ServiceState` per app, created by ``create_app`` and kept on ``app.state.service``; routes take
it as a typed FastAPI dependency (``state: StateDep``) instead of closing over it, so every router is a
plain module. The state owns the lifecycle (start-up loads presets and models, then opens the work pool;
stop closes the pool) and the per-request steps every work endpoint shares: refuse early when not ready or
full, read the body under the limits, run the CPU work in the pool and map the pool's refusals to 503s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request

from .config import ServiceConfig, memory_limit
from .errors import ServiceError
from .jobs import Models
from .pool import JobTimeout, Overloaded, PoolClosed, WorkPool
from .telemetry import Telemetry
from .uploads import Form, discard_body, read_form

if TYPE_CHECKING:
    from ..tuning.presets import Preset

__all__ = ["ServiceState", "StateDep", "get_state"]

log = logging.getLogger("optimizer.service")

T = TypeVar("T")


class ServiceState:
    """The config, the loaded models and presets, the work pool and the metrics of one app.

    Args:
        config: the settings the app was created with.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.models: Models | None = None
        self.presets: dict[str, Preset] = {}
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
        """Refuse new work and wait for the running jobs to end."""
        self.ready = False
        self.telemetry.ready.set(0)
        if self.pool is not None:
            self.pool.close()

    # -- per request ------------------------------------------------------------------------------------

    def require_ready(self) -> tuple[Models, WorkPool]:
        """The loaded models and the pool.

        Returns:
            ``(models, pool)``.

        Raises:
            ServiceError: 503 ``not_ready`` while starting or stopping.
        """
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

        Args:
            request: the incoming request.
            max_parts: most parts the form may hold.

        Returns:
            The form's files and text fields.
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
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        cancelled: threading.Event | None = None,
    ) -> T:
        """Run ``fn(*args)`` in the work pool.

        Args:
            fn: the CPU work.
            args: its arguments.
            timeout: seconds before the request is answered 503 (default: the config's ``request_timeout``).
            cancelled: set when the timeout passes, for work that checks it.

        Returns:
            What ``fn`` returns.

        Raises:
            ServiceError: 503 ``overloaded``, ``timeout`` or ``not_ready``.
        """
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


def get_state(request: Request) -> ServiceState:
    """The :class:`ServiceState` of the app serving ``request`` (a FastAPI dependency).

    Args:
        request: the incoming request.

    Returns:
        The app's state.
    """
    state = request.app.state.service
    if not isinstance(state, ServiceState):  # pragma: no cover - create_app always sets it
        raise RuntimeError("the app was not built by optimizer.service.create_app")
    return state


#: A route parameter annotated with this receives the app's :class:`ServiceState`.
StateDep = Annotated[ServiceState, Depends(get_state)]
