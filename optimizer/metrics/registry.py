"""The metric registry: ``name -> MetricSpec``.

Specs are declared here, with factories that import their implementation lazily, so that listing metrics,
parsing targets or building Optuna directions never imports torch. Directions and composite normalisation
everywhere in the package derive from these specs; nothing else branches on a metric's name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import UnknownNameError
from .base import Metric, MetricSpec

__all__ = ["create_metric", "get_spec", "metric_names", "register_metric", "specs"]

_REGISTRY: dict[str, MetricSpec] = {}


def _lazy(module: str, cls: str) -> Callable[..., Metric]:
    def factory(**options: Any) -> Metric:
        metric: Metric = getattr(importlib.import_module(module, __package__), cls)(**options)
        return metric

    factory.__qualname__ = f"{module}.{cls}"
    return factory


def register_metric(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add a metric to the registry (``replace=True`` to override an existing name)."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"metric {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> MetricSpec:
    """The spec of a registered metric.

    Args:
        name: The metric name (``ssimulacra2``, ``lpips``, ...).

    Returns:
        Its :class:`MetricSpec` (direction, range, normalisation, whether it needs weights).

    Raises:
        UnknownNameError: No metric has that name (the message lists them).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("metric", name, list(_REGISTRY)) from None


def metric_names() -> list[str]:
    """Registered metric names (all compare pairs; FID, which compares folders, is not one), in registration order.

    Returns:
        The names.
    """
    return list(_REGISTRY)


def specs() -> list[MetricSpec]:
    return list(_REGISTRY.values())


def create_metric(name: str, *, allow_download: bool | None = None, **options: Any) -> Metric:
    """Build the metric ``name``.

    Args:
        name: a registered metric name.
        allow_download: for metrics that need network weights, whether a missing file may be downloaded
            (``None``: the ``OPTIMIZER_ALLOW_DOWNLOAD`` default); ignored by the others.
        options: ``device=...`` and metric-specific options such as ``net=...``.

    Returns:
        The metric instance.
    """
    spec = get_spec(name)
    if allow_download is not None and spec.needs_weights:
        options["allow_download"] = allow_download
    return spec.factory(**options)


# Norm ranges: see MetricSpec. PSNR, SSIM, MS-SSIM (12 images) and ST-LPIPS (4 images) are fitted by
# benchmarks/calibrate_norm_ranges.py on Kodak images encoded with JPEG, WebP and AVIF over their quality
# ranges, so that a normalised score tracks SSIMULACRA 2 / 100 (0.9 visually lossless, 0.8 high, 0.7 medium,
# 0.5 low); the best end stays at the metric's best value so identical images normalise to 1. LPIPS and
# DISTS need pretrained weights that were not available for the fit: their ranges come from typical
# published JPEG values (LPIPS-alex about 0.08 and DISTS about 0.1 at high quality) and should be refitted
# with the same script where the weights are.
# Damage scales (heat maps): the 99th percentile of each map at JPEG q30 on Kodak, measured by
# benchmarks/measure_damage_scales.py (benchmarks/RESULTS.md); LPIPS's, without its weights here, is 1.5x the
# end of its norm range, to be measured with the same script where the weights are.
register_metric(
    MetricSpec(
        name="psnr",
        higher_is_better=True,
        value_range=(0.0, float("inf")),
        norm_range=(15.0, 45.0),
        needs_weights=False,
        version="1",
        description="Peak signal-to-noise ratio over RGB, data range 1 (infinite for identical images).",
        factory=_lazy(".psnr", "PSNR"),
        unit="dB",
    )
)
register_metric(
    MetricSpec(
        name="ssim",
        higher_is_better=True,
        value_range=(-1.0, 1.0),
        norm_range=(0.76, 1.0),
        needs_weights=False,
        version="1",
        description="SSIM (Wang et al. 2004): Gaussian window sigma 1.5, K1 0.01, K2 0.03, mean over RGB.",
        factory=_lazy(".ssim", "SSIM"),
        has_map=True,
        similarity_map=True,
        damage_scale=0.43,
    )
)
register_metric(
    MetricSpec(
        name="ms_ssim",
        higher_is_better=True,
        value_range=(0.0, 1.0),
        norm_range=(0.94, 1.0),
        needs_weights=False,
        version="1",
        description="MS-SSIM (Wang, Simoncelli, Bovik 2003): 5 scales, contrast-structure at each, "
        "luminance at the coarsest, mean over RGB; images with a side of 160 px or less use the scales "
        "that fit, weights renormalised.",
        factory=_lazy(".ssim", "MSSSIM"),
    )
)
register_metric(
    MetricSpec(
        name="ssimulacra2",
        higher_is_better=True,
        value_range=(-float("inf"), 100.0),
        norm_range=(0.0, 100.0),
        needs_weights=False,
        version="2.1",
        description="SSIMULACRA 2.1: XYB, 6 scales, SSIM/ringing/blur error maps; 90 visually lossless, "
        "80 high, 70 medium, 50 low quality.",
        factory=_lazy(".ssimulacra2", "SSIMULACRA2"),
        has_map=True,
        damage_scale=12.0,
    )
)
register_metric(
    MetricSpec(
        name="lpips",
        higher_is_better=False,
        value_range=(0.0, float("inf")),
        norm_range=(0.0, 0.4),
        needs_weights=True,
        version="0.1",
        description="LPIPS v0.1 (Zhang et al. 2018), AlexNet by default; a learned distance, lower is better.",
        factory=_lazy(".learned", "LPIPS"),
        has_map=True,
        damage_scale=0.6,
    )
)
register_metric(
    MetricSpec(
        name="dists",
        higher_is_better=False,
        value_range=(0.0, 1.0),
        norm_range=(0.0, 0.5),
        needs_weights=True,
        version="1",
        description="DISTS (Ding et al. 2020): VGG16 with L2 pooling and learned structure/texture weights.",
        factory=_lazy(".learned", "DISTS"),
    )
)
register_metric(
    MetricSpec(
        name="stlpips",
        higher_is_better=False,
        value_range=(0.0, float("inf")),
        norm_range=(0.0, 0.08),
        needs_weights=False,
        version="ST0.0",
        description="Shift-tolerant LPIPS (Ghildyal & Liu 2022), AlexNet; weights ship with stlpips-pytorch.",
        factory=_lazy(".learned", "STLPIPS"),
    )
)
