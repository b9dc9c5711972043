"""PSNR, SSIM and MS-SSIM in torch float32, with the reference side cached and the work shared.

Conventions (data range 1, inputs ``1 x C x H x W`` in ``[0, 1]``; C is 3 for RGB):

* **SSIM** (Wang et al. 2004): Gaussian window sigma 1.5 truncated at 3.5 sigma (radius 5, 11 taps),
  K1 0.01, K2 0.03, population covariance. The mean is taken over the *valid* region, the pixels whose
  window lies inside the image, which is exactly skimage's ``crop(S, pad)`` with ``pad = 5`` and exactly
  pytorch-msssim's unpadded convolution. Colour: SSIM per channel, then the mean over channels (skimage's
  ``channel_axis``). Equals ``structural_similarity(ref, dist, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=2)``. Needs both sides of at least 11 pixels.
* **MS-SSIM** (Wang, Simoncelli, Bovik 2003): five scales with weights (0.0448, 0.2856, 0.3001, 0.2363,
  0.1333), the contrast-structure term at every scale, luminance only at the coarsest, 2x2 average pooling
  between scales, the same window as SSIM. Per channel, then the mean over channels. Negative terms are
  clipped to 0 before the power (as pytorch-msssim does), so a value is always in [0, 1] and never NaN.
  Equals ``pytorch_msssim.ms_ssim(X, Y, data_range=1, win_size=11, win_sigma=1.5)``, pooling convention
  for odd sides included (see :func:`~optimizer.metrics._gaussian.downsample2`).

  Small images: five scales need the coarsest scale to hold one 11-pixel window, i.e. both sides larger
  than 160 pixels. Below that, MS-SSIM uses as many scales as fit (the first ``n`` weights, renormalised
  to sum to 1; the coarsest of those carries luminance), so thumbnails and icons can still be scored; at
  one scale it is SSIM clipped at 0. Pass ``allow_fewer_scales=False`` to get an error instead. Both
  variants raise below 11 pixels.
* **PSNR**: ``10 log10(1 / MSE)`` over all RGB samples; identical images give ``inf`` (composites clamp it).

Caching and sharing. ``prepare`` filters the reference once per scale: local mean ``mu_x``, ``mu_x^2`` and
variance ``sigma_x^2`` over the valid region (plus ``2x`` for the cross term), stored in the reference-side
``shared`` dict under ``"gauss1.5:stats:scale{k}@{device}"``, so SSIM and MS-SSIM prepare each scale once
between them. Per candidate, the three distorted planes (``y``, ``y^2``, ``2xy``) are filtered together;
the full-resolution per-channel SSIM and contrast-structure means land in the pair-side ``shared`` dict
under ``"gauss1.5:ssim_cs:scale0@{device}"``. Whichever of SSIM and MS-SSIM runs second gets scale 0, the
most expensive by far, for free. Results are identical whatever the order and whether cached or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import ImageSizeMismatchError, InvalidImageError
from ._gaussian import Workspace, downsample2, gaussian_taps, symmetric_pad, valid_filter
from .base import Metric
from .registry import get_spec

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["MSSSIM", "MS_SSIM_WEIGHTS", "PSNR", "SSIM", "ms_ssim_scales"]

SIGMA = 1.5
TRUNCATE = 3.5
K1 = 0.01
K2 = 0.03
C1 = K1**2  # (K1 * data_range)^2 with data range 1
C2 = K2**2
#: Wang, Simoncelli, Bovik (2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_TAPS = gaussian_taps(SIGMA, TRUNCATE)
WIN_SIZE = len(_TAPS)  # 11
_RADIUS = WIN_SIZE // 2
_NS = f"gauss{SIGMA:g}"
_WORKSPACE = Workspace()


# --------------------------------------------------------------------------------------- shared maths


@dataclass(frozen=True)
class _ScaleStats:
    """The reference side of one scale: the image and its valid-region Gaussian statistics."""

    image: "torch.Tensor"  # C x H x W
    image2: "torch.Tensor"  # 2 * image, so that filtering (2x) * y gives 2 E[xy] directly
    mu: "torch.Tensor"  # C x h x w, h = H - 10
    mu_sq: "torch.Tensor"
    var: "torch.Tensor"  # E[x^2] - mu^2 (population variance)


def _size(t: "torch.Tensor") -> str:
    return f"{t.shape[-1]}x{t.shape[-2]}"


def _as_planes(image: "torch.Tensor", device: "torch.device", what: str) -> "torch.Tensor":
    """Check the metric tensor contract and return ``C x H x W`` float32 planes on ``device``."""
    import torch

    if not isinstance(image, torch.Tensor):
        raise InvalidImageError(f"{what} must be a torch tensor (1 x C x H x W), got {type(image).__name__}")
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] < 1:
        raise InvalidImageError(f"{what} must be a 1 x C x H x W tensor, got shape {tuple(image.shape)}")
    return image[0].to(device=device, dtype=torch.float32).contiguous()


def _check_same_size(reference: "torch.Tensor", distorted: "torch.Tensor") -> None:
    if reference.shape != distorted.shape:
        if reference.shape[-2:] != distorted.shape[-2:]:
            raise ImageSizeMismatchError(f"expected equal sizes, got {_size(reference)} and {_size(distorted)}")
        raise ImageSizeMismatchError(
            f"expected equal channel counts, got {reference.shape[0]} and {distorted.shape[0]}"
        )


def _check_window_fits(image: "torch.Tensor", metric: str) -> None:
    h, w = image.shape[-2:]
    if min(h, w) < WIN_SIZE:
        raise InvalidImageError(
            f"{metric} needs both sides of at least {WIN_SIZE} pixels (its {WIN_SIZE}x{WIN_SIZE} Gaussian "
            f"window), got {w}x{h}"
        )


def _scale_stats(image: "torch.Tensor") -> _ScaleStats:
    """Filter one reference scale: mean, squared mean and variance over the valid region."""
    import torch

    c, h, w = image.shape
    hv, wv = h - WIN_SIZE + 1, w - WIN_SIZE + 1
    planes = _WORKSPACE.get("ref_planes", (2 * c, h, w), image.device)
    planes[:c].copy_(image)
    torch.mul(image, image, out=planes[c:])
    tmp = _WORKSPACE.get("ref_tmp", (2 * c, hv, w), image.device)
    filtered = image.new_empty((2 * c, hv, wv))  # kept: this becomes the cache
    valid_filter(planes, _TAPS, out=filtered, tmp=tmp)
    mu, e_xx = filtered[:c], filtered[c:]
    mu_sq = mu * mu
    var = e_xx.sub_(mu_sq)
    return _ScaleStats(image=image, image2=image * 2, mu=mu, mu_sq=mu_sq, var=var)


def _ssim_terms(
    ref: _ScaleStats, y: "torch.Tensor", *, luminance: bool = True, keep_map: bool = False
) -> tuple["torch.Tensor | None", "torch.Tensor", "torch.Tensor | None"]:
    """Per-channel means of the SSIM map (if ``luminance``) and of the contrast-structure map.

    ``y`` is the distorted ``C x H x W`` scale. Returns ``(ssim_c, cs_c, ssim_map)``; the map, a fresh
    ``C x h x w`` tensor, only with ``keep_map``. The arithmetic is ordered so that ``y == x`` gives maps of
    exactly 1: every term is a sum of two equal values or twice a value, which float rounding preserves.
    """
    import torch

    c, h, w = y.shape
    hv, wv = h - WIN_SIZE + 1, w - WIN_SIZE + 1
    dev = y.device
    planes = _WORKSPACE.get("planes", (3 * c, h, w), dev)
    planes[:c].copy_(y)
    torch.mul(y, y, out=planes[c : 2 * c])
    torch.mul(ref.image2, y, out=planes[2 * c :])
    filtered = _WORKSPACE.get("filtered", (3 * c, hv, wv), dev)
    valid_filter(planes, _TAPS, out=filtered, tmp=_WORKSPACE.get("tmp", (3 * c, hv, w), dev))
    mu_y, e_yy, e_xy2 = filtered[:c], filtered[c : 2 * c], filtered[2 * c :]

    mu_xy = _WORKSPACE.get("mu_xy", (c, hv, wv), dev)
    torch.mul(ref.mu, mu_y, out=mu_xy)
    mu_y.mul_(mu_y)  # mu_y^2
    # contrast-structure: (2 cov_xy + C2) / (var_x + var_y + C2)
    cs = e_xy2.sub_(mu_xy, alpha=2).add_(C2)
    den = e_yy.sub_(mu_y).add_(ref.var).add_(C2)
    cs.div_(den)
    cs_c = cs.mean(dim=(1, 2))
    if not luminance:
        return None, cs_c, None
    # luminance: (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), times cs
    lum_den = mu_y.add_(ref.mu_sq).add_(C1)
    ssim_map = mu_xy.mul_(2).add_(C1).div_(lum_den).mul_(cs)
    ssim_c = ssim_map.mean(dim=(1, 2))
    return ssim_c, cs_c, (ssim_map.clone() if keep_map else None)


def _device_tag(device: "torch.device") -> str:
    return str(device)


def _reference_stats(image: "torch.Tensor", scales: int, shared: dict[str, Any]) -> list[_ScaleStats]:
    """Get or compute the reference statistics of scales ``0 .. scales-1`` through ``shared``."""
    tag = _device_tag(image.device)
    out: list[_ScaleStats] = []
    current = image
    for k in range(scales):
        key = f"{_NS}:stats:scale{k}@{tag}"
        stats = shared.get(key)
        if not isinstance(stats, _ScaleStats) or stats.image.shape != current.shape:
            stats = _scale_stats(current)
            shared[key] = stats
        out.append(stats)
        if k + 1 < scales:
            current = downsample2(stats.image)
    return out


def _full_scale_terms(
    ref: _ScaleStats, y: "torch.Tensor", shared: dict[str, Any]
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Scale-0 per-channel (SSIM, cs) means, computed once per candidate and shared via ``shared``."""
    key = f"{_NS}:ssim_cs:scale0@{_device_tag(y.device)}"
    hit = shared.get(key)
    if hit is not None:
        return hit
    ssim_c, cs_c, _ = _ssim_terms(ref, y)
    hit = (cast("torch.Tensor", ssim_c), cs_c)
    shared[key] = hit
    return hit


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales (at most 5) keep an 11x11 window inside the coarsest scale."""
    n = 0
    side = min(height, width)
    while n < len(MS_SSIM_WEIGHTS) and side >= WIN_SIZE:
        n += 1
        side = (side + 1) // 2
    return n


# --------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class _PSNRState:
    image: "torch.Tensor"


class PSNR(Metric):
    """Peak signal-to-noise ratio over all RGB samples, data range 1 (``inf`` for identical images)."""

    spec = get_spec("psnr")

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _PSNRState:
        import torch

        with torch.inference_mode():
            return _PSNRState(_as_planes(reference, self.device, "reference").clone())

    def compute(self, state: _PSNRState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            y = _as_planes(distorted, self.device, "distorted image")
            _check_same_size(state.image, y)
            # One pass, pairwise summation: torch.dist's float32 norm drifts by ~1e-3 dB.
            mse = float(F.mse_loss(state.image, y))
        return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


class SSIM(Metric):
    """SSIM, Gaussian window sigma 1.5, mean over RGB channels (see the module docstring)."""

    spec = get_spec("ssim")

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _ScaleStats:
        import torch

        with torch.inference_mode():
            x = _as_planes(reference, self.device, "reference").clone()
            _check_window_fits(x, "SSIM")
            return _reference_stats(x, 1, shared)[0]

    def _distorted(self, state: _ScaleStats, distorted: "torch.Tensor") -> "torch.Tensor":
        y = _as_planes(distorted, self.device, "distorted image")
        _check_same_size(state.image, y)
        return y

    def compute(self, state: _ScaleStats, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            y = self._distorted(state, distorted)
            ssim_c, _ = _full_scale_terms(state, y, shared)
            values = ssim_c.double().cpu().tolist()
        return sum(values) / len(values)

    def compute_map(self, state: _ScaleStats, distorted: "torch.Tensor", shared: dict[str, Any]) -> "np.ndarray":
        """The full ``H x W`` SSIM map, mean over channels (float32), as skimage's ``full=True`` gives it.

        The border uses skimage's reflect padding; its valid interior is what the score averages. This is
        for heat maps, so it filters padded copies afresh instead of using the cache.
        """
        import torch

        with torch.inference_mode():
            y = self._distorted(state, distorted)
            padded = _scale_stats(symmetric_pad(state.image, _RADIUS))
            _, _, ssim_map = _ssim_terms(padded, symmetric_pad(y, _RADIUS), keep_map=True)
            return cast("torch.Tensor", ssim_map).mean(dim=0).cpu().numpy()


@dataclass(frozen=True)
class _MSSSIMState:
    scales: list[_ScaleStats]
    weights: tuple[float, ...]


class MSSSIM(Metric):
    """MS-SSIM (Wang, Simoncelli, Bovik 2003), mean over RGB channels (see the module docstring).

    ``allow_fewer_scales=False`` makes images with a side of 160 pixels or less an error instead of being
    scored on fewer scales with renormalised weights.
    """

    spec = get_spec("ms_ssim")

    def __init__(self, device: "torch.device | str | None" = None, *, allow_fewer_scales: bool = True) -> None:
        super().__init__(device)
        self.allow_fewer_scales = allow_fewer_scales

    def _weights(self, image: "torch.Tensor") -> tuple[float, ...]:
        h, w = image.shape[-2:]
        n = ms_ssim_scales(h, w)
        full = len(MS_SSIM_WEIGHTS)
        if n == full:
            return MS_SSIM_WEIGHTS
        min_side = (WIN_SIZE - 1) * 2 ** (full - 1) + 1
        if not self.allow_fewer_scales:
            raise InvalidImageError(
                f"MS-SSIM with {full} scales needs both sides of at least {min_side} pixels "
                f"(an {WIN_SIZE}x{WIN_SIZE} window at 1/{2 ** (full - 1)} scale), got {w}x{h}"
            )
        _check_window_fits(image, "MS-SSIM")
        total = sum(MS_SSIM_WEIGHTS[:n])
        return tuple(v / total for v in MS_SSIM_WEIGHTS[:n])

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _MSSSIMState:
        import torch

        with torch.inference_mode():
            x = _as_planes(reference, self.device, "reference").clone()
            weights = self._weights(x)
            return _MSSSIMState(scales=_reference_stats(x, len(weights), shared), weights=weights)

    def compute(self, state: _MSSSIMState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            y = _as_planes(distorted, self.device, "distorted image")
            _check_same_size(state.scales[0].image, y)
            n = len(state.weights)
            ssim_c, cs_c = _full_scale_terms(state.scales[0], y, shared)
            terms = [cs_c]
            for k in range(1, n):
                y = downsample2(y)
                ssim_c, cs_c, _ = _ssim_terms(state.scales[k], y, luminance=k == n - 1)
                terms.append(cs_c)
            terms[-1] = cast("torch.Tensor", ssim_c)  # luminance only at the coarsest scale
            values = torch.stack(terms).clamp_(min=0.0).double().cpu().tolist()
        per_channel = [math.prod(values[k][ch] ** state.weights[k] for k in range(n)) for ch in range(len(values[0]))]
        return sum(per_channel) / len(per_channel)
