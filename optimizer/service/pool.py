"""The bounded work pool: CPU work off the event loop, a queue bound, a timeout, an honest Retry-After.

Threads, not processes: the metrics spend their time in torch (and decoders in Pillow's C code), which
release the GIL, so threads scale at least like processes (2 cores, default profile, 768x512 pairs, medians
of 5 alternating rounds: 2 threads 11.2 pairs/s, 2 spawned processes 7.7) while sharing one copy of the
models and passing uploads without pickling. Each worker thread sets its own torch intra-op thread count
(``torch_threads``, default 1): one request per core beat requests spreading over every core (2 threads x
2 torch threads: 9.6 pairs/s in the same run).

Admission: at most ``workers + max_queue`` jobs are admitted (running or waiting); the next is refused at
once with :class:`Overloaded`, whose ``retry_after`` estimates when a worker frees up from the recent job
durations. A job that runs past its timeout answers :class:`JobTimeout`; if it had not started it is
cancelled, and a running one is told through its ``cancelled`` event (batches check it between pairs) and
keeps its slot until it really ends, so the bound stays true.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["JobTimeout", "Overloaded", "PoolClosed", "WorkPool"]

T = TypeVar("T")


class Overloaded(Exception):
    """The pool is at its bound: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int, pending: int, capacity: int) -> None:
        super().__init__(f"the server is busy: {pending} jobs admitted, the limit is {capacity}")
        self.retry_after = retry_after
        self.pending = pending
        self.capacity = capacity


class JobTimeout(Exception):
    """The job did not finish within its timeout."""

    def __init__(self, timeout: float, retry_after: int) -> None:
        super().__init__(f"the request did not finish within the server's timeout of {timeout:g} s")
        self.timeout = timeout
        self.retry_after = retry_after


class PoolClosed(Exception):
    """The pool is shutting down and takes no more work."""


def _init_worker(torch_threads: int | None) -> None:
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)


class WorkPool:
    """A thread pool with admission control; see the module doc.

    Args:
        workers: worker threads.
        max_queue: jobs that may wait beyond those running.
        torch_threads: torch intra-op threads per worker (``None``: leave torch's setting).
    """

    def __init__(self, workers: int, max_queue: int, *, torch_threads: int | None = 1) -> None:
        self.workers = workers
        self.max_queue = max_queue
        self.capacity = workers + max_queue
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix="optimizer-worker", initializer=_init_worker, initargs=(torch_threads,)
        )
        self._lock = threading.Lock()
        self._pending = 0
        self._running = 0
        self._closed = False
        self._mean_seconds = 0.5  # moving average of job durations, for Retry-After
        self.on_change: Callable[[int, int], None] | None = None  # (pending, running) for gauges

    # -- state ---------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs admitted and not finished (running plus waiting)."""
        return self._pending

    @property
    def running(self) -> int:
        """Jobs running now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs admitted and waiting for a worker."""
        return max(0, self._pending - self._running)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead divided among the workers.

        Returns:
            Whole seconds, at least 1.
        """
        ahead = max(1, self._pending - self.workers + 1)
        return max(1, math.ceil(self._mean_seconds * ahead / self.workers))

    def has_room(self) -> bool:
        """Whether a job would be admitted now."""
        return not self._closed and self._pending < self.capacity

    # -- running jobs --------------------------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout: float,
        cancelled: threading.Event | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> T:
        """Run ``fn(*args)`` in a worker thread.

        Args:
            fn: the work.
            args: its arguments.
            timeout: seconds before :class:`JobTimeout` (the job itself may run on; see the module doc).
            cancelled: set when the timeout passes.
            on_done: called once when the job has really ended, or at once when it is refused (to release
                what the job holds, such as its memory).

        Returns:
            What ``fn`` returns.

        Raises :class:`Overloaded` (at the bound), :class:`JobTimeout` and :class:`PoolClosed` (shutting down).
        """
        with self._lock:
            refusal: Exception | None = None
            if self._closed:
                refusal = PoolClosed("the server is shutting down")
            elif self._pending >= self.capacity:
                refusal = Overloaded(self.retry_after(), self._pending, self.capacity)
            else:
                self._pending += 1
        if refusal is not None:
            if on_done is not None:
                on_done()
            raise refusal
        self._changed()
        try:
            future = self._executor.submit(self._timed, fn, *args)
        except RuntimeError:  # the executor was shut down between the check and the submit
            self._release(None)
            if on_done is not None:
                on_done()
            raise PoolClosed("the server is shutting down") from None
        future.add_done_callback(self._release)
        if on_done is not None:
            future.add_done_callback(lambda _future: on_done())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()  # frees the slot now if the job had not started
            if cancelled is not None:
                cancelled.set()
            raise JobTimeout(timeout, self.retry_after()) from None

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._running += 1
        self._changed()
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._running -= 1
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * elapsed

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1
        self._changed()

    def _changed(self) -> None:
        hook = self.on_change
        if hook is not None:
            hook(self._pending, self._running)

    def close(self) -> None:
        """Refuse new jobs, cancel waiting ones and wait for the running ones to end."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
