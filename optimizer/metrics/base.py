"""The metric contract: a :class:`MetricSpec` per metric and a stateful :class:`Metric` that caches the
reference side.

Tensors inside metrics are float32 ``1 x 3 x H x W`` sRGB in ``[0, 1]`` (already composited over the
scoring background). Wrappers around libraries with other conventions (LPIPS wants ``[-1, 1]``) convert
inside the metric, never outside.

Scoring is split in two so the evaluator can score hundreds of candidates against one reference:

* :meth:`Metric.prepare` takes the reference once and returns whatever it wants to keep (filtered
  statistics, network features...). The state may refer to the reference tensor itself rather than copy
  it (a photo-size float32 copy is hundreds of megabytes): the tensor must not change while prepared.
* :meth:`Metric.compute` scores one distorted image against that prepared state.

Both receive a ``shared`` dict. The reference-side dict lives as long as the prepared reference; the
pair-side dict lives for one candidate. Metrics that can reuse each other's work (SSIM and MS-SSIM share
the full-resolution filtered maps) store and look up intermediate results there under namespaced keys.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["Metric", "MetricSpec"]


@dataclass(frozen=True)
class MetricSpec:
    """What the rest of the package needs to know about a metric, without building it.

    ``value_range`` is where raw values can lie (PSNR reaches infinity for identical images).
    ``norm_range`` is the interval mapped linearly onto [0, 1] for the composite, 1 being best; raw values
    outside it are clamped, so identical images get exactly 1 on every metric. Norm ranges are calibrated
    so that a normalised score reads like SSIMULACRA 2 divided by 100 (see ``benchmarks/calibrate_norm_ranges.py``).
    ``has_map``: the metric offers a spatial map (:meth:`Metric.compute_map`); ``similarity_map``: that map
    measures similarity, 1 where the images agree (SSIM), rather than damage, 0 where they agree.
    ``damage_scale``: the damage (:meth:`damage`) a heat map draws brightest, the same for every image so
    that maps compare (measured by ``benchmarks/measure_damage_scales.py``; see :mod:`optimizer.heatmaps`).
    """

    name: str
    higher_is_better: bool
    value_range: tuple[float, float]
    norm_range: tuple[float, float]
    needs_weights: bool
    version: str
    description: str
    factory: Callable[..., "Metric"] = field(repr=False, compare=False)
    has_map: bool = False
    unit: str = ""
    similarity_map: bool = False
    damage_scale: float = 1.0

    @property
    def direction(self) -> str:
        """Optuna's word for this metric's direction."""
        return "maximize" if self.higher_is_better else "minimize"

    @property
    def best_value(self) -> float:
        return self.value_range[1] if self.higher_is_better else self.value_range[0]

    def normalise(self, value: float) -> float:
        """Map a raw value to [0, 1] where 1 is best, by the metric's own direction and norm range."""
        lo, hi = self.norm_range
        if math.isnan(value):
            return 0.0
        if value == math.inf:
            return 1.0 if self.higher_is_better else 0.0
        if value == -math.inf:
            return 0.0 if self.higher_is_better else 1.0
        x = (min(max(value, lo), hi) - lo) / (hi - lo)
        return x if self.higher_is_better else 1.0 - x

    def damage(self, spatial_map: "np.ndarray") -> "np.ndarray":
        """This metric's spatial map as damage (float32, 0 where the images agree, higher where worse), the
        one way heat maps, reports and figures draw it: a similarity map becomes ``1 - map``."""
        import numpy as np

        arr = np.asarray(spatial_map, dtype=np.float32)
        return np.maximum(1.0 - arr if self.similarity_map else arr, np.float32(0.0))

    def meets(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target`` in this metric's direction."""
        return value >= target if self.higher_is_better else value <= target


class Metric(ABC):
    """A full-reference metric bound to its spec, its weights and a device."""

    spec: MetricSpec

    def __init__(self, device: "torch.device | str | None" = None) -> None:
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")

    @property
    def name(self) -> str:
        return self.spec.name

    @abstractmethod
    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> Any:
        """Compute and return the reference-side state (called once per reference; it may keep ``reference``
        itself, which must then stay unchanged)."""

    @abstractmethod
    def compute(self, state: Any, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        """Score ``distorted`` against the prepared reference ``state``; returns the raw value."""

    def compute_map(self, state: Any, distorted: "torch.Tensor", shared: dict[str, Any]) -> "np.ndarray | None":
        """An ``H x W`` spatial map of the damage (or similarity), where the metric offers one."""
        return None

    def __call__(self, reference: "torch.Tensor", distorted: "torch.Tensor") -> float:
        """Uncached convenience path: prepare and compute in one call."""
        ref_shared: dict[str, Any] = {}
        state = self.prepare(reference, ref_shared)
        return self.compute(state, distorted, {})
