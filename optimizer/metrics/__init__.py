"""Full-reference image quality metrics: specs, registry and stateful scorers."""

from .base import Metric, MetricSpec
from .registry import create_metric, get_spec, metric_names, register_metric, specs

__all__ = [
    "Metric",
    "MetricSpec",
    "create_metric",
    "get_spec",
    "metric_names",
    "register_metric",
    "specs",
]
