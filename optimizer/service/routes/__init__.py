"""The service's routers, one module per group of endpoints; ``create_app`` includes them all.

* :mod:`.operations`: ``/health``, ``/ready``, ``/metrics``.
* :mod:`.evaluate`: ``/evaluate/single``, ``/evaluate/batch``.
* :mod:`.compress`: ``/compress``.
* :mod:`.presets`: ``/presets``, ``/presets/{name}``.

Routes reach the app's state through the :data:`~optimizer.service.state.StateDep` dependency.
"""

from __future__ import annotations

from fastapi import APIRouter

from .compress import router as compress_router
from .evaluate import router as evaluate_router
from .operations import router as operations_router
from .presets import router as presets_router

__all__ = ["ROUTERS"]

#: Every router, in the order the OpenAPI document lists them.
ROUTERS: tuple[APIRouter, ...] = (evaluate_router, compress_router, presets_router, operations_router)
