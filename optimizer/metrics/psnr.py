"""PSNR: ``10 log10(1 / MSE)`` over all RGB samples, data range 1; identical images give ``inf`` (composites
clamp it). The squared differences are summed a stripe of rows at a time, so the working set does not grow
with the image."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._planes import as_planes, check_same_size
from .base import Metric
from .registry import get_spec

if TYPE_CHECKING:
    import torch

__all__ = ["PSNR"]


@dataclass(frozen=True)
class _PSNRState:
    image: "torch.Tensor"


#: Samples per PSNR stripe (all channels): the squared differences are summed a stripe at a time, so the
#: temporary is 4 MB whatever the image size.
_PSNR_STRIPE = 1 << 20


class PSNR(Metric):
    """Peak signal-to-noise ratio over all RGB samples, data range 1 (``inf`` for identical images)."""

    spec = get_spec("psnr")

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _PSNRState:
        import torch

        with torch.inference_mode():
            return _PSNRState(as_planes(reference, self.device, "reference"))

    def compute(self, state: _PSNRState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            x = state.image
            y = as_planes(distorted, self.device, "distorted image")
            check_same_size(x, y)
            c, h, w = x.shape
            step = max(1, _PSNR_STRIPE // max(1, c * w))
            total = 0.0
            for top in range(0, h, step):
                # differences in float32, squares summed in float64: the score then does not depend on how
                # many threads split the sum (a float32 sum moved by 1e-8 relative between thread counts)
                diff = torch.sub(x[:, top : top + step], y[:, top : top + step]).to(torch.float64)
                total += float(torch.dot(diff.view(-1), diff.view(-1)))
            mse = total / (c * h * w)
        return math.inf if mse == 0.0 else -10.0 * math.log10(mse)
