"""SSIM and MS-SSIM in torch float32, with the reference side cached and the work shared.

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
  for odd sides included (see :func:`~optimizer.metrics._stripes.pool_pairs`).

  Small images: five scales need the coarsest scale to hold one 11-pixel window, i.e. both sides larger
  than 160 pixels. Below that, MS-SSIM uses as many scales as fit (the first ``n`` weights, renormalised
  to sum to 1; the coarsest of those carries luminance), so thumbnails and icons can still be scored; at
  one scale it is SSIM clipped at 0. Pass ``allow_fewer_scales=False`` to get an error instead. Both
  variants raise below 11 pixels.

How it runs. Nothing is computed on whole planes: rows of both images stream through the scales in
stripes (:mod:`._stripes`); each scale filters ``x, y, x^2, y^2, xy`` of one stripe at a time with small
matrix products (:class:`~._gaussian.BandFilter`), adds the stripe's SSIM and contrast-structure sums to
running float64 totals, and passes its rows, pooled 2x2, to the next scale. The working set is a few
stripes per scale, whatever the image size. The reference's pyramid and local means and variances (about
36 bytes per pixel for RGB) are kept between candidates when they fit the metric's
``reference_cache_bytes`` (64 MiB by default); SSIM and MS-SSIM build them once between them through the
reference-side ``shared`` dict under ``"gauss1.5:cache@{device}"``. Larger references are recomputed with
every candidate; both paths give bitwise the same values. Per candidate, the full-resolution
per-channel SSIM and contrast-structure means land in the pair-side ``shared`` dict under
``"gauss1.5:ssim_cs:scale0@{device}"``: whichever of SSIM and MS-SSIM runs second gets scale 0, the most
expensive by far, for free (MS-SSIM then only pools it on to the coarser scales). Results are identical
whatever the order and whether cached or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ..errors import InvalidImageError, InvalidParameterError
from ._gaussian import BandFilter, Workspace, gaussian_taps
from ._planes import as_planes, check_same_size
from ._stripes import REFERENCE_CACHE_BYTES, RowWindow, StreamedScale, stripe_rows
from .base import Metric
from .registry import get_spec

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["MSSSIM", "MS_SSIM_WEIGHTS", "SSIM", "ms_ssim_scales"]

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
_BAND = BandFilter(_TAPS, left=0)
_WORKSPACE = Workspace()


# --------------------------------------------------------------------------------------- checks


def _check_window_fits(image: "torch.Tensor", metric: str) -> None:
    h, w = image.shape[-2:]
    if min(h, w) < WIN_SIZE:
        raise InvalidImageError(
            f"{metric} needs both sides of at least {WIN_SIZE} pixels (its {WIN_SIZE}x{WIN_SIZE} Gaussian "
            f"window), got {w}x{h}"
        )


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales (at most 5) keep an 11x11 window inside the coarsest scale."""
    n = 0
    side = min(height, width)
    while n < len(MS_SSIM_WEIGHTS) and side >= WIN_SIZE:
        n += 1
        side = (side + 1) // 2
    return n


# --------------------------------------------------------------------------------------- the stream


Role = Literal["pair", "reference", "distorted"]


@dataclass(frozen=True, eq=False)
class _ScaleCache:
    """The reference at one scale: its planes (``C x H x W``; None at full resolution, where the reference
    itself serves) and, over the valid region, its local mean and variance (``h x 2C x w``, rows
    interleaved: ``[mu_x (C), var_x (C)]``)."""

    image: "torch.Tensor | None"
    stats: "torch.Tensor"


def _cache_bytes(channels: int, sizes: list[tuple[int, int]]) -> int:
    """Bytes of the reference caches at these scale sizes (about 36 per pixel for RGB)."""
    total = 0
    for k, (h, w) in enumerate(sizes):
        total += 4 * 2 * channels * (h - WIN_SIZE + 1) * (w - WIN_SIZE + 1)
        if k:
            total += 4 * channels * h * w
    return total


class _Scale(StreamedScale):
    """One SSIM scale, in one of three roles; per-channel sums of its terms accumulate.

    ``pair``: ``2C`` planes come in (reference then distorted). ``reference``: the reference alone, at
    prepare time, filling ``cache`` (its planes at this scale, its local mean and variance). ``distorted``:
    the distorted image alone, its terms completed from ``cache`` and ``ref_planes``.

    Window planes (rows interleaved), by role: pair ``[x (C), y (C), x^2, y^2, x y]``; distorted
    ``[y, y^2, x y]``; reference ``[x, x^2, unused]`` (the same slots as a distorted image's, so that identical
    images get identical statistics). Window row ``i`` holds image row ``top + i``, where ``top`` is the
    first valid output row of the stripe (the filter is valid-region only, so there is no border).
    ``compute=False`` only pools the rows on to the next scale (scale 0 when its terms are shared); with
    ``heat``, the stripe's SSIM map (mean over channels) is written into its rows.
    """

    def __init__(
        self,
        index: int,
        height: int,
        width: int,
        channels: int,
        next_scale: "_Scale | None",
        *,
        role: Role = "pair",
        cache: _ScaleCache | None = None,
        ref_planes: "torch.Tensor | None" = None,
        compute: bool = True,
        luminance: bool = True,
        heat: "torch.Tensor | None" = None,
        device: "torch.device",
    ) -> None:
        import torch

        self.out_height = height - WIN_SIZE + 1
        self.out_width = width - WIN_SIZE + 1
        rows = stripe_rows(self.out_width, self.out_height, index)
        super().__init__(
            height=height,
            width=width,
            channels=2 * channels if role == "pair" else channels,
            rows=rows,
            next_scale=next_scale,
            odd="zero_first",
            workspace=_WORKSPACE,
            name=f"scale{index}",
            device=device,
        )
        self.channels = channels
        self.role = role
        self.cache = cache
        self.ref_planes = ref_planes
        self.compute = compute
        self.luminance = luminance
        self.heat = heat
        self.top = 0
        self.row_in = 0  # image rows consumed so far
        c = channels
        # window slots (first plane of each group), None where the role has no such group
        slots: tuple[int | None, int | None, int | None, int | None, int | None]
        if role == "pair":
            slots = (0, c, 2 * c, 3 * c, 4 * c)
        elif role == "distorted":
            slots = (None, 0, None, c, 2 * c)
        else:
            slots = (0, None, c, None, None)
        self.x: int | None = slots[0]
        self.y: int | None = slots[1]
        self.xx: int | None = slots[2]
        self.yy: int | None = slots[3]
        self.xy: int | None = slots[4]
        self.planes = 5 * c if role == "pair" else 3 * c
        self.window: RowWindow | None = None
        if compute:
            shape = (rows + _BAND.halo, self.planes, _BAND.stride(width))
            self.window = RowWindow(
                _WORKSPACE.get(f"window{index}", shape, device), rows=rows, halo=_BAND.halo, width=width
            )
        # float64 running sums per channel: contrast-structure, then SSIM
        self.sums = torch.zeros(2 * channels, dtype=torch.float64, device=device)

    def _consume(self, rows: "torch.Tensor") -> None:
        import torch

        c, n = self.channels, rows.shape[1]
        if self.role == "reference" and self.cache is not None and self.cache.image is not None:
            self.cache.image[:, self.row_in : self.row_in + n].copy_(rows)  # the pooled reference, kept
        window = self.window
        if window is None:
            self.row_in += n
            return
        done = 0
        while done < n:
            m = min(n - done, window.free)
            dst = window.take(m)
            dst[:, : rows.shape[0]].copy_(rows[:, done : done + m].permute(1, 0, 2))
            if self.x is not None and self.xx is not None:
                x = dst[:, self.x : self.x + c]
                torch.mul(x, x, out=dst[:, self.xx : self.xx + c])
            if self.y is not None and self.yy is not None and self.xy is not None:
                y = dst[:, self.y : self.y + c]
                torch.mul(y, y, out=dst[:, self.yy : self.yy + c])
                if self.x is not None:
                    x = dst[:, self.x : self.x + c]
                else:
                    assert self.ref_planes is not None
                    x = self.ref_planes[:, self.row_in : self.row_in + m].permute(1, 0, 2)
                torch.mul(x, y, out=dst[:, self.xy : self.xy + c])
            self.row_in += m
            done += m
            if window.full:
                self._stripe(window.rows)
                window.slide()

    def _finish(self) -> None:
        if self.window is not None and self.top < self.out_height:
            self._stripe(self.out_height - self.top)

    def _stripe(self, count: int) -> None:
        """Filter the window and add the SSIM terms of its first ``count`` valid rows to the sums (or, for the
        reference role, keep the reference's statistics).

        The arithmetic is ordered so that ``y == x`` gives terms of exactly 1: every term is a sum of two
        equal values or twice a value, which float rounding preserves.
        """
        import torch

        assert self.window is not None
        c = self.channels
        rows = _BAND.rows(count)
        shape = (rows, self.planes, _BAND.stride(self.width))
        filtered = _BAND(
            self.window.buffer[: rows + _BAND.halo],
            out=_WORKSPACE.get("filtered", shape, self.device),
            tmp=_WORKSPACE.get("filter_tmp", shape, self.device),
        )[:count, :, : self.out_width]
        if self.x is not None and self.xx is not None:
            mu_x = filtered[:, self.x : self.x + c]
            var_x = filtered[:, self.xx : self.xx + c].addcmul_(mu_x, mu_x, value=-1.0)
            if self.role == "reference":
                assert self.cache is not None
                stats = self.cache.stats[self.top : self.top + count]
                stats[:, :c].copy_(mu_x)
                stats[:, c:].copy_(var_x)
                self.top += count
                return
        else:
            assert self.cache is not None
            stats = self.cache.stats[self.top : self.top + count]
            mu_x, var_x = stats[:, :c], stats[:, c:]
        assert self.y is not None and self.yy is not None and self.xy is not None
        mu_y, e_yy, e_xy = filtered[:, self.y : self.y + c], filtered[:, self.yy : self.yy + c], filtered[:, self.xy :]
        # contrast-structure: (2 cov_xy + C2) / (var_x + var_y + C2), the three (co)variances computed alike
        cs = e_xy.addcmul_(mu_x, mu_y, value=-1.0).mul_(2.0).add_(C2)
        cs.div_(e_yy.addcmul_(mu_y, mu_y, value=-1.0).add_(var_x).add_(C2))
        self.sums[:c] += cs.sum(dim=(0, 2))
        if self.luminance:
            # luminance: (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), times cs
            ssim = torch.mul(mu_x, mu_y).mul_(2.0).add_(C1)
            ssim.div_(torch.square(mu_x).add_(mu_y.square_()).add_(C1)).mul_(cs)
            self.sums[c:] += ssim.sum(dim=(0, 2))
            if self.heat is not None:
                torch.mean(ssim, dim=1, out=self.heat[self.top : self.top + count])
        self.top += count

    def means(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Per-channel means over the valid region: (SSIM, contrast-structure), float64."""
        n = float(self.out_height * self.out_width)
        return self.sums[self.channels :] / n, self.sums[: self.channels] / n


def _scale_sizes(height: int, width: int, scales: int) -> list[tuple[int, int]]:
    """Sizes of ``scales`` MS-SSIM scales: each side halved, rounded up (odd sides are padded, then pooled)."""
    sizes = [(height, width)]
    for _ in range(scales - 1):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    return sizes


def _stream(
    ref: "torch.Tensor",
    dist: "torch.Tensor | None",
    scales: int,
    *,
    first: bool = True,
    caches: "tuple[_ScaleCache, ...] | None" = None,
    heat: "torch.Tensor | None" = None,
    pad: int = 0,
) -> list[_Scale]:
    """Stream ``C x H x W`` planes through ``scales`` scales; scale 0 computes its terms when ``first``.

    Roles: with ``dist`` and no ``caches``, both images (pair); with ``dist`` and ``caches``, the distorted
    image against them; without ``dist``, the reference alone, filling ``caches``. ``pad`` reflects the
    images by that many samples first (scipy's ``'reflect'``, which repeats the edge sample), row by row:
    the full-size SSIM map is the valid map of the padded images (pair role only).
    """
    c, h, w = ref.shape
    device = ref.device
    role: Role = "reference" if dist is None else ("distorted" if caches is not None else "pair")
    sizes = _scale_sizes(h + 2 * pad, w + 2 * pad, scales)
    chain: list[_Scale] = []
    nxt: _Scale | None = None
    for k in reversed(range(scales)):
        cache = None if caches is None else caches[k]
        nxt = _Scale(
            k,
            *sizes[k],
            c,
            nxt,
            role=role,
            cache=cache,
            ref_planes=ref if cache is None or cache.image is None else cache.image,
            compute=first or k > 0,
            luminance=k == 0 or k == scales - 1,
            heat=heat if k == 0 else None,
            device=device,
        )
        chain.append(nxt)
    chain.reverse()
    top_scale = chain[0]
    row_index = _reflected(h, pad, device) if pad else None
    col_index = _reflected(w, pad, device) if pad else None
    height = sizes[0][0]
    top = 0
    while top < height:
        n = min(top_scale.free, height - top)
        rows = top_scale.take(n)
        sources = [ref, dist] if role == "pair" else [ref if dist is None else dist]
        for k, planes in enumerate(s for s in sources if s is not None):
            if row_index is not None and col_index is not None:
                index = row_index[top : top + n]
                rows[k * c : (k + 1) * c].copy_(planes.index_select(1, index).index_select(2, col_index))
            else:
                rows[k * c : (k + 1) * c].copy_(planes[:, top : top + n])
        top_scale.commit()
        top += n
    top_scale.finish()
    return chain


def _reference_cache(
    image: "torch.Tensor", scales: int, shared: dict[str, Any], budget: int
) -> "tuple[_ScaleCache, ...] | None":
    """The reference's caches for ``scales`` scales, through ``shared`` (SSIM and MS-SSIM build them once
    between them), or None when they would take more than ``budget`` bytes."""
    import torch

    c, h, w = image.shape
    sizes = _scale_sizes(h, w, scales)
    if _cache_bytes(c, sizes) > budget:
        return None
    key = f"{_NS}:cache@{image.device}"
    hit = shared.get(key)
    known: tuple[_ScaleCache, ...] = ()
    if isinstance(hit, tuple) and hit and hit[0].stats.shape[0] == h - WIN_SIZE + 1:
        known = hit
        if len(known) >= scales:
            return known[:scales]
    caches = known + tuple(
        _ScaleCache(
            image=None if k == 0 else torch.empty((c, sh, sw), dtype=torch.float32, device=image.device),
            stats=torch.empty((sh - WIN_SIZE + 1, 2 * c, sw - WIN_SIZE + 1), dtype=torch.float32, device=image.device),
        )
        for k, (sh, sw) in enumerate(sizes)
        if k >= len(known)
    )
    # With scale 0 already cached (by SSIM), it only pools its rows on; coarser scales are (re)computed.
    _stream(image, None, scales, first=not known, caches=caches)
    shared[key] = caches
    return caches


def _reflected(size: int, radius: int, device: "torch.device") -> "torch.Tensor":
    """Indices of ``size`` samples padded by ``radius`` repeating the edge sample (``d c b a | a b c d |``)."""
    import torch

    if radius > size:
        raise ValueError(f"cannot pad {size} samples by {radius} with one reflection")
    return torch.cat(
        [
            torch.arange(radius - 1, -1, -1, device=device),
            torch.arange(size, device=device),
            torch.arange(size - 1, size - 1 - radius, -1, device=device),
        ]
    )


def _full_scale_terms(
    ref: "torch.Tensor", dist: "torch.Tensor", caches: "tuple[_ScaleCache, ...] | None", shared: dict[str, Any]
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Scale-0 per-channel (SSIM, cs) means, computed once per candidate and shared via ``shared``."""
    key = f"{_NS}:ssim_cs:scale0@{ref.device}"
    hit = shared.get(key)
    if hit is None:
        hit = _stream(ref, dist, 1, caches=None if caches is None else caches[:1])[0].means()
        shared[key] = hit
    return cast("tuple[torch.Tensor, torch.Tensor]", hit)


# --------------------------------------------------------------------------------------- metrics


def _check_budget(value: int) -> int:
    if value < 0:
        raise InvalidParameterError(f"reference_cache_bytes must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class _SSIMState:
    image: "torch.Tensor"  # the reference planes (the caller's tensor, not a copy)
    caches: "tuple[_ScaleCache, ...] | None"


class SSIM(Metric):
    """SSIM, Gaussian window sigma 1.5, mean over RGB channels (see the module docstring).

    ``reference_cache_bytes``: the reference's local means and variances are kept between candidates when
    they take at most this many bytes (24 per pixel; shared with MS-SSIM); 0 never keeps them.
    """

    spec = get_spec("ssim")

    def __init__(
        self, device: "torch.device | str | None" = None, *, reference_cache_bytes: int = REFERENCE_CACHE_BYTES
    ) -> None:
        super().__init__(device)
        self.reference_cache_bytes = _check_budget(reference_cache_bytes)

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _SSIMState:
        import torch

        with torch.inference_mode():
            x = as_planes(reference, self.device, "reference")
            _check_window_fits(x, "SSIM")
            return _SSIMState(image=x, caches=_reference_cache(x, 1, shared, self.reference_cache_bytes))

    def _distorted(self, state: _SSIMState, distorted: "torch.Tensor") -> "torch.Tensor":
        y = as_planes(distorted, self.device, "distorted image")
        check_same_size(state.image, y)
        return y

    def compute(self, state: _SSIMState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            y = self._distorted(state, distorted)
            ssim_c, _ = _full_scale_terms(state.image, y, state.caches, shared)
            values: list[float] = ssim_c.cpu().tolist()
        return sum(values) / len(values)

    def compute_map(self, state: _SSIMState, distorted: "torch.Tensor", shared: dict[str, Any]) -> "np.ndarray":
        """The full ``H x W`` SSIM map, mean over channels (float32), as skimage's ``full=True`` gives it.

        The border uses skimage's reflect padding; its valid interior is what the score averages.
        """
        import torch

        with torch.inference_mode():
            y = self._distorted(state, distorted)
            h, w = state.image.shape[-2:]
            heat = torch.empty((h, w), dtype=torch.float32, device=state.image.device)
            _stream(state.image, y, 1, heat=heat, pad=_RADIUS)
            return heat.cpu().numpy()


@dataclass(frozen=True)
class _MSSSIMState:
    image: "torch.Tensor"
    weights: tuple[float, ...]
    caches: "tuple[_ScaleCache, ...] | None"


class MSSSIM(Metric):
    """MS-SSIM (Wang, Simoncelli, Bovik 2003), mean over RGB channels (see the module docstring).

    ``allow_fewer_scales=False`` makes images with a side of 160 pixels or less an error instead of being
    scored on fewer scales with renormalised weights. ``reference_cache_bytes``: the reference's pyramid and
    local statistics are kept between candidates when they take at most this many bytes (about 36 per pixel;
    shared with SSIM); 0 never keeps them.
    """

    spec = get_spec("ms_ssim")

    def __init__(
        self,
        device: "torch.device | str | None" = None,
        *,
        allow_fewer_scales: bool = True,
        reference_cache_bytes: int = REFERENCE_CACHE_BYTES,
    ) -> None:
        super().__init__(device)
        self.allow_fewer_scales = allow_fewer_scales
        self.reference_cache_bytes = _check_budget(reference_cache_bytes)

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
            x = as_planes(reference, self.device, "reference")
            weights = self._weights(x)
            caches = _reference_cache(x, len(weights), shared, self.reference_cache_bytes)
            return _MSSSIMState(image=x, weights=weights, caches=caches)

    def compute(self, state: _MSSSIMState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            x = state.image
            y = as_planes(distorted, self.device, "distorted image")
            check_same_size(x, y)
            n = len(state.weights)
            key = f"{_NS}:ssim_cs:scale0@{x.device}"
            known = shared.get(key)
            chain = _stream(x, y, n, first=known is None, caches=state.caches)
            if known is None:
                known = chain[0].means()
                shared[key] = known
            terms = [known[1]] + [scale.means()[1] for scale in chain[1:]]
            terms[-1] = known[0] if n == 1 else chain[-1].means()[0]  # luminance only at the coarsest scale
            values: list[list[float]] = torch.stack(terms).clamp_(min=0.0).cpu().tolist()
        per_channel: list[float] = [
            math.prod(values[k][ch] ** state.weights[k] for k in range(n)) for ch in range(len(values[0]))
        ]
        return sum(per_channel) / len(per_channel)
