"""Full-reference image quality metrics: specs, registry and stateful scorers."""

from .base import Metric, MetricSpec, PreparedReference
from .registry import create_metric, get_spec, metric_names, register_metric, specs

__all__ = [
    "Metric",
    "MetricSpec",
    "PreparedReference",
    "create_metric",
    "get_spec",
    "metric_names",
    "register_metric",
    "specs",
]
