"""The web service (the ``service`` extra): ``create_app(ServiceConfig(...))`` and ``optimizer serve``.

See ``docs/service.md`` for the endpoints, limits and error format. :class:`ServiceConfig` imports nothing
heavy; ``create_app`` imports FastAPI (and the evaluator) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'optimizer.service' has no attribute {name!r}")
