"""Prometheus metrics for ``GET /metrics``: requests, latencies, quality scores and the work queue.

prometheus_client (a dependency of the ``service`` extra) writes the text exposition format. Each app has
its own registry, so several apps in one process (tests) never share counters. Under ``optimizer serve
--workers N`` every worker process is its own server; when ``PROMETHEUS_MULTIPROC_DIR`` is set (``serve``
sets it for N > 1) the values are kept in that folder and ``/metrics`` reports the sum over all workers.

Families:

* ``optimizer_http_requests_total{endpoint,method,status}``: answered requests; ``endpoint`` is the route
  template (``/presets/{name}``), or ``unmatched``, and ``method`` one of the standard methods or
  ``other``, so client-chosen paths and methods cannot blow up the label set.
* ``optimizer_http_request_duration_seconds{endpoint}``: latency histogram, body upload included.
* ``optimizer_quality_normalised{profile,metric}``: every scored pair's normalised value (0 worst, 1 best;
  the scale the composite and the quality levels use, so one set of buckets fits every metric) per metric,
  and ``metric="composite"``.
* ``optimizer_pool_jobs{state}`` (``running``, ``waiting``), ``optimizer_pool_rejected_total{reason}``
  (``overloaded``: the queue is full, ``timeout``, ``uploads`` and ``memory``: a budget of
  :mod:`.admission` is in use), ``optimizer_ready`` (1 once start-up finished).
* ``optimizer_memory_held_bytes{budget}`` and ``optimizer_memory_budget_bytes{budget}`` (``uploads``:
  request bodies held; ``memory``: the estimated working memory of admitted scoring).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

__all__ = ["HTTP_METHODS", "MetricsMiddleware", "Telemetry"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)
_QUALITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21)) + (math.inf,)

#: Methods counted under their own name; any other becomes ``other``.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


class Telemetry:
    """The metric families of one app (its own registry, or the multiprocess folder; see the module doc)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(_MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "optimizer_http_requests",
            "HTTP requests answered, by route, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "optimizer_http_request_duration_seconds",
            "Time from the request's arrival to the end of the answer, by route.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.quality = Histogram(
            "optimizer_quality_normalised",
            "Normalised quality of scored pairs (0 worst, 1 best), per metric and composite.",
            ["profile", "metric"],
            buckets=_QUALITY_BUCKETS,
            registry=r,
        )
        # The multiprocess modes only matter under PROMETHEUS_MULTIPROC_DIR: sum the workers' pools, and
        # report ready only when every worker is.
        self.jobs = Gauge(
            "optimizer_pool_jobs",
            "Jobs in the work pool, by state.",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "optimizer_pool_rejected", "Requests refused with 503, by reason.", ["reason"], registry=r
        )
        self.ready = Gauge(
            "optimizer_ready", "1 once models and presets are loaded.", registry=r, multiprocess_mode="min"
        )
        self.held_bytes = Gauge(
            "optimizer_memory_held_bytes",
            "Bytes held by admitted requests, by budget (uploads: request bodies; memory: scoring estimate).",
            ["budget"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.budget_bytes = Gauge(
            "optimizer_memory_budget_bytes",
            "Bytes each budget allows.",
            ["budget"],
            registry=r,
            multiprocess_mode="livesum",
        )
        for state in ("running", "waiting"):
            self.jobs.labels(state).set(0)
        for reason in ("overloaded", "timeout", "uploads", "memory"):
            self.rejected.labels(reason)
        for budget in ("uploads", "memory"):
            self.held_bytes.labels(budget).set(0)

    def observe_pool(self, pending: int, running: int) -> None:
        """Set the pool gauges.

        Args:
            pending: jobs admitted (running plus waiting).
            running: jobs running.
        """
        self.jobs.labels("running").set(running)
        self.jobs.labels("waiting").set(max(0, pending - running))

    def observe_result(self, profile: str, normalised: Mapping[str, float], composite: float) -> None:
        """Record a scored pair's normalised values.

        Args:
            profile: the profile that made the composite.
            normalised: each metric's normalised value.
            composite: the composite.
        """
        for metric, value in normalised.items():
            if math.isfinite(value):
                self.quality.labels(profile, metric).observe(value)
        if math.isfinite(composite):
            self.quality.labels(profile, "composite").observe(composite)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the format the scraper's ``Accept`` header asks for (text 0.0.4 or OpenMetrics).

        Args:
            accept: the request's ``Accept`` header.

        Returns:
            ``(body, content type)``.
        """
        encoder, content_type = choose_encoder(accept or "")
        if self.multiprocess:
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return encoder(merged), content_type
        return encoder(self.registry), content_type


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP answer and times it, labelled by route template.

    Args:
        app: the wrapped application.
        telemetry: the metric families to update.
    """

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the app, then count and time its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            method = method if method in HTTP_METHODS else "other"
            self.telemetry.requests.labels(endpoint, method, str(status)).inc()
            self.telemetry.latency.labels(endpoint).observe(time.perf_counter() - started)
