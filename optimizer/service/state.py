"""What the app holds between requests, and how a route reaches it: :class:`ServiceState` and :data:`StateDep`.

One :class:`ServiceState` per app, created by ``create_app`` and kept on ``app.state.service``; routes take
it as a typed FastAPI dependency (``state: StateDep``) instead of closing over it, so every router is a
plain module. The state owns the lifecycle (start-up loads presets and models, then opens the work pool;
stop closes the pool) and the steps every work endpoint shares, through :meth:`ServiceState.work`: refuse
early when not ready or full, read the body under the limits while counting it against the bytes all
requests may buffer, admit the images by the memory their scoring will take (:mod:`.admission`), run the
CPU work in the pool and map the refusals to 503s; what a request holds is released when its job ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request

from ..evaluator import Profile, get_profile
from .admission import MemoryBudget, Ticket, header_pixels, work_bytes
from .config import ServiceConfig
from .contract import RequestRules
from .errors import ServiceError
from .jobs import Models
from .pool import JobTimeout, Overloaded, PoolClosed, WorkPool
from .telemetry import Telemetry
from .uploads import Form, Upload, discard_body, read_form

if TYPE_CHECKING:
    from ..tuning.presets import Preset

__all__ = ["ServiceState", "StateDep", "WorkRequest", "get_state"]

log = logging.getLogger("optimizer.service")

T = TypeVar("T")


class ServiceState:
    """The config, the loaded models and presets, the work pool and the metrics of one app.

    Args:
        config: the settings the app was created with.
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.rules = RequestRules.for_config(config)
        self.telemetry = Telemetry()
        self.models: Models | None = None
        self.presets: dict[str, Preset] = {}
        self.pool: WorkPool | None = None
        self.ready = False
        self.error: str | None = None
        self.failure: BaseException | None = None
        self.uploads = MemoryBudget("uploads", config.buffered_limit)
        self.memory = MemoryBudget("memory", config.resolved_memory_budget())
        for budget in (self.uploads, self.memory):
            budget.on_change = self.telemetry.held_bytes.labels(budget.name).set
        self.telemetry.budget_bytes.labels("uploads").set(self.uploads.limit)
        self.telemetry.budget_bytes.labels("memory").set(self.memory.limit)

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
        self._warn_about_memory()
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

    @asynccontextmanager
    async def work(
        self, request: Request, *, max_parts: int, file_fields: Callable[[str], bool]
    ) -> AsyncIterator[WorkRequest]:
        """A work request: its form, read under the limits, and what it holds until its job ends.

        Refuses early (503) when not ready or the pool is full; a refused body is still read (and dropped,
        up to a bound) so that the client gets to read the answer.

        Args:
            request: the incoming request.
            max_parts: most parts the form may hold.
            file_fields: the endpoint's file fields (files even when a part has no ``filename``).

        Yields:
            The :class:`WorkRequest`; whatever it holds is released on exit unless its job was started.
        """
        config = self.config
        try:
            _, pool = self.require_ready()
            if not pool.has_room():
                raise self._overloaded(pool.retry_after())
        except ServiceError:
            await discard_body(request, config.max_request_bytes)
            raise
        ticket = Ticket(self.uploads, self.memory, retry_after=pool.retry_after, on_refused=self._count_refusal)
        work = WorkRequest(self, ticket)
        try:
            work.form = await read_form(
                request,
                max_file_bytes=config.max_file_bytes,
                max_request_bytes=config.max_request_bytes,
                max_parts=max_parts,
                hold=ticket.hold_upload,
                file_fields=file_fields,
            )
            yield work
        finally:
            if not work.started:
                ticket.release()

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        cancelled: threading.Event | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> T:
        """Run ``fn(*args)`` in the work pool.

        Args:
            fn: the CPU work.
            args: its arguments.
            timeout: seconds before the request is answered 503 (default: the config's ``request_timeout``).
            cancelled: set when the timeout passes, for work that checks it.
            on_done: called once when the job has ended or was refused (see :meth:`WorkPool.run`).

        Returns:
            What ``fn`` returns.

        Raises:
            ServiceError: 503 ``overloaded``, ``timeout`` or ``not_ready``.
        """
        try:
            _, pool = self.require_ready()
        except ServiceError:
            if on_done is not None:
                on_done()
            raise
        limit = self.config.request_timeout if timeout is None else timeout
        try:
            return await pool.run(fn, *args, timeout=limit, cancelled=cancelled, on_done=on_done)
        except Overloaded as exc:
            raise self._overloaded(exc.retry_after) from None
        except JobTimeout as exc:
            self.telemetry.rejected.labels("timeout").inc()
            raise ServiceError(
                503, "timeout", str(exc), headers={"Retry-After": str(exc.retry_after)}, timeout=exc.timeout
            ) from None
        except PoolClosed as exc:
            raise ServiceError(503, "not_ready", str(exc), headers={"Retry-After": "5"}) from None

    def _count_refusal(self, budget: str) -> None:
        self.telemetry.rejected.labels(budget).inc()

    def _warn_about_memory(self) -> None:
        config = self.config
        largest_job = max(work_bytes(get_profile(name), config.max_pixels) for name in config.profiles)
        if largest_job > self.memory.limit:
            log.warning(
                "scoring two %s-pixel images may need about %.1f GB, more than the memory budget of %.1f GB: "
                "such requests will be refused with 413 (raise --memory-budget or lower --max-pixels)",
                f"{config.max_pixels:,}",
                largest_job / 1e9,
                self.memory.limit / 1e9,
            )

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


class WorkRequest:
    """One work request inside :meth:`ServiceState.work`: its form, and its hold on the memory budgets.

    Args:
        state: the app's state.
        ticket: what the request holds.
    """

    def __init__(self, state: ServiceState, ticket: Ticket) -> None:
        self.state = state
        self.ticket = ticket
        self.form = Form()
        self.started = False

    async def admit_images(
        self, profile: Profile, images: Sequence[Sequence[Upload]], *, compress: bool = False
    ) -> None:
        """Reserve the memory that decoding and scoring these images will take, from their headers.

        Args:
            profile: the profile of the evaluator that will score them.
            images: the groups scored one after another (pairs of a batch; one pair; one image to compress);
                the largest image decides.
            compress: estimate ``/compress`` instead of scoring.

        Raises:
            ServiceError: 413 ``too_much_memory`` or 503 ``overloaded`` (see :meth:`Ticket.hold_work`).
        """
        uploads = [upload for group in images for upload in group]
        if not uploads:
            return
        sizes = await asyncio.to_thread(lambda: [header_pixels(upload.data) for upload in uploads])
        self.ticket.hold_images(profile, sizes, max_pixels=self.state.config.max_pixels, compress=compress)

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        cancelled: threading.Event | None = None,
    ) -> T:
        """Run ``fn(*args)`` in the pool (:meth:`ServiceState.run`); the ticket is released when it ends.

        Args:
            fn: the CPU work.
            args: its arguments.
            timeout: seconds before the request is answered 503.
            cancelled: set when the timeout passes.

        Returns:
            What ``fn`` returns.
        """
        self.started = True
        return await self.state.run(fn, *args, timeout=timeout, cancelled=cancelled, on_done=self.ticket.release)


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
