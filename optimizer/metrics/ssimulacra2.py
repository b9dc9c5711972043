"""SSIMULACRA 2.1 in torch float32, reproducing the reference C++ tool (cloudinary/ssimulacra2).

What the C++ tool computes, and what this module reproduces step by step:

1. sRGB to linear RGB (the IEC 61966-2-1 curve).
2. At each of up to 6 scales: linear RGB to XYB (libjxl's opsin absorbance matrix and bias, clamp at zero,
   cube root minus the cube root of the bias, ``X = (r - g) / 2``, ``Y = (r + g) / 2``, ``B = b``), then
   the rescaling SSIMULACRA 2.1 applies so every plane lies roughly in 0..1:
   ``X' = 14 X + 0.42``, ``Y' = Y + 0.01``, ``B' = B - Y + 0.55``. Planes keep their natural orientation.
3. Blurs (libjxl's recursive Gaussian, sigma 1.5, zero borders; see :mod:`._recursive_gaussian`) of both
   images, their squares and their product give ``mu1, mu2, sigma11, sigma22, sigma12``.
4. Three error maps per plane:

   * SSIM' without the luminance denominator (2.1 drops it):
     ``d = 1 - (1 - (mu1 - mu2)^2) * (2 (sigma12 - mu1 mu2) + C2) / ((sigma11 - mu1^2) + (sigma22 - mu2^2) + C2)``
     with ``C2 = 0.0009``, clamped at zero;
   * edge difference ``d1 = (1 + |img2 - mu2|) / (1 + |img1 - mu1|) - 1``: ringing/blockiness
     ("artifact", ``max(d1, 0)``) and blur/smoothing ("detail lost", ``max(-d1, 0)``).

5. Each map is pooled with the 1-norm (mean) and the 4-norm (``mean(d^4)^(1/4)``).
6. Between scales the *linear RGB* image is box-downsampled 2x2 (odd sizes replicate the last row or
   column), and the XYB planes are recomputed from it.
7. The 108 pooled values are weighted by the published weights, and the sum goes through the 2.1 mapping:
   ``s = 0.9562382616834844 x``, ``s = 2.326765642916932 s - 0.020884521182843837 s^2 +
   6.248496625763138e-05 s^3``, score ``100 - 10 s^0.6276336467831387`` (100 when ``s <= 0``).

Small images follow the C++ tool exactly: it refuses anything under 8x8 (we raise
:class:`~optimizer.errors.InvalidImageError`), and before each further scale it checks the *previous*
scale's size, stopping when that is under 8 pixels in either direction (so one scale smaller than 8 pixels
can still be computed). With fewer than 6 scales the C++ walks the weight table sequentially, so later
planes use weights meant for other scales; that quirk is kept, since matching the tool is the point.

Agreement with the C++ tool on the 28 reference pairs in ``shared/datasets/ssimulacra2-reference``: mean
absolute difference 0.023 points, at most 0.11 (see ``tests/test_ssimulacra2.py``). What remains is the
C++ tool's own float32 rounding: its recursive blur has poles on the unit circle, so rounding errors
accumulate to a few 1e-6, and the SSIM' term, whose variances cancel against ``C2 = 0.0009``, turns that
noise into a small positive error (most visible near score 85). Replaying libjxl's float32 recursion
operation by operation (far too slow to ship) brings the mean difference to 0.010. A float64 transcription
of the C++ agrees with this module within about 0.001 points. The PyPI ``ssimulacra2`` package reads
0.64 points lower on average (up to 2.5): its blur, padding and a transposed XYB plane differ. On large
images the C++ tool's error grows along long rows (docs/metrics.md); this module's FIR blur has none.

How it runs (docs/metrics.md has the measurements). Nothing is computed on whole planes: rows of both
images stream through the six scales in stripes (:mod:`._stripes`). A scale converts the linear rows it
receives to XYB straight into its window of blur inputs, blurs a full stripe with small matrix products
(:class:`~._gaussian.BandFilter`), pools the stripe's maps into running float64 sums, and passes its rows,
pooled 2x2, to the next scale. The working set is a few stripes per scale (tens of megabytes whatever the
image size). The reference's side of the maps (about 40 bytes per pixel) is kept between candidates when it
fits the metric's ``reference_cache_bytes`` (64 MiB by default, references up to about 1.6 MP), which makes
each candidate about a third cheaper; larger references are recomputed stripe by stripe with every
candidate. Both paths give bitwise the same scores. Pixels stay in float32; pooled values and the final
weighting are float64, as in the C++. Maps whose two weights are both zero are skipped (about half of
them), which changes nothing in the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ImageSizeMismatchError, InvalidImageError, InvalidParameterError
from ._gaussian import Workspace
from ._recursive_gaussian import band_filter
from ._ssimulacra2_weights import WEIGHTS, score_from_subscores
from ._stripes import REFERENCE_CACHE_BYTES, RowWindow, StreamedScale, stripe_rows
from ._xyb import cube_roots, decode_srgb, linear_to_xyb, srgb_to_linear, xyb_from_roots
from .base import Metric
from .registry import get_spec

__all__ = [
    "MIN_SIZE",
    "NUM_SCALES",
    "SSIMULACRA2",
    "WEIGHTS",
    "cache_bytes",
    "linear_to_xyb",
    "score_from_subscores",
    "srgb_to_linear",
    "ssimulacra2",
]

#: Smallest accepted width and height (the C++ tool refuses smaller images).
MIN_SIZE = 8
#: Scales 1:1 to 1:32.
NUM_SCALES = 6
_SIGMA = 1.5
_C2 = 0.0009

_WORKSPACE = Workspace()


# ----------------------------------------------------------------------------------------------------
# Which maps carry weight
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The planes whose SSIM', artifact and detail-lost maps carry a non-zero weight at one scale.

    About half of the 108 weights are zero (at full resolution only Y's SSIM' and detail-lost maps and
    the X and B artifact maps count), so the maps behind them are never computed: same score, less work.
    """

    ssim: tuple[int, ...]
    artifact: tuple[int, ...]
    detail: tuple[int, ...]

    @property
    def edge(self) -> tuple[int, ...]:
        """Planes that need the edge-difference ratio (for either of its two maps)."""
        return tuple(sorted(set(self.artifact) | set(self.detail)))


_FULL_PLAN = _Plan(ssim=(0, 1, 2), artifact=(0, 1, 2), detail=(0, 1, 2))


def _plans(n_scales: int) -> tuple[_Plan, ...]:
    """Per-scale plans. Pruning needs the weight layout of a full 6-scale run; fewer scales use all maps."""
    if n_scales != NUM_SCALES:
        return (_FULL_PLAN,) * n_scales
    w = np.asarray(WEIGHTS).reshape(3, NUM_SCALES, 2, 3)  # plane, scale, norm, map

    def used(scale: int, kind: int) -> tuple[int, ...]:
        return tuple(c for c in range(3) if w[c, scale, :, kind].any())

    return tuple(_Plan(ssim=used(s, 0), artifact=used(s, 1), detail=used(s, 2)) for s in range(NUM_SCALES))


def _take(t: torch.Tensor, planes: tuple[int, ...], among: tuple[int, ...] = (0, 1, 2)) -> torch.Tensor:
    """Planes ``planes`` of ``t`` (``rows x planes x width``), whose planes are ``among``; a view when they
    are consecutive."""
    pos = [among.index(p) for p in planes]
    if not pos or pos == list(range(pos[0], pos[0] + len(pos))):
        start = pos[0] if pos else 0
        return t[:, start : start + len(pos)]
    return t[:, pos]


# ----------------------------------------------------------------------------------------------------
# One scale of the stream
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Heat:
    """Where :meth:`SSIMULACRA2.compute_map` collects the weighted maps: the full-resolution ``H x W`` map and
    each map's weight, ``plane x scale x map`` (the two norms' weights summed)."""

    total: torch.Tensor
    weights: np.ndarray


Role = Literal["pair", "reference", "distorted"]


class _Scale(StreamedScale):
    """One scale of the stream, in one of three roles.

    ``pair``: the linear rows of both images come in and the pooled error maps accumulate.
    ``reference``: the reference alone, at prepare time; its side of every map (its XYB and blurred XYB on
    the SSIM' planes, its variance there, its edge magnitude ``|img1 - mu1|``) goes into ``cache``, a
    ``height x planes x width`` tensor kept for the scale (see :func:`_cache_planes`).
    ``distorted``: the distorted image alone, its maps completed from ``cache``.

    Window planes, all XYB, by role: pair ``[ref (3), dist (3), ref^2, dist^2, ref * dist]``; distorted
    ``[dist (3), dist^2, ref * dist]``; reference ``[ref (3), ref^2, unused]`` (the squares land in the same
    slots and the blur does the same products as for a distorted image, so identical images get identical
    statistics). Squares and products are of the SSIM' planes of the plan only. Window row ``i`` holds image
    row ``top - R + i`` (``R`` the blur radius, 4), so the first stripe starts with ``R`` zero rows: libjxl's
    zero border above the image. The zero padding columns of the window are the zero border at the right
    (and, through the band matrices, at the left).
    """

    def __init__(
        self,
        index: int,
        height: int,
        width: int,
        plan: _Plan,
        next_scale: _Scale | None,
        *,
        role: Role,
        cache: torch.Tensor | None,
        heat: _Heat | None,
        device: torch.device,
    ) -> None:
        rows = stripe_rows(width, height, index)
        super().__init__(
            height=height,
            width=width,
            channels=6 if role == "pair" else 3,
            rows=rows,
            next_scale=next_scale,
            odd="replicate",
            workspace=_WORKSPACE,
            name=f"scale{index}",
            device=device,
        )
        self.index = index
        self.plan = plan
        self.role = role
        self.cache = cache
        self.heat = heat
        self.band = band_filter(_SIGMA)
        self.radius = self.band.halo // 2
        ns = len(plan.ssim)
        # window slots (first plane of each group), None where the role has no such group
        slots: tuple[int | None, int | None, int | None, int | None, int | None]
        if role == "pair":
            slots = (0, 3, 6, 6 + ns, 6 + 2 * ns)
        elif role == "distorted":
            slots = (None, 0, None, 3, 3 + ns)
        else:
            slots = (0, None, 3, None, None)
        self.ref: int | None = slots[0]
        self.dist: int | None = slots[1]
        self.ref_sq: int | None = slots[2]
        self.dist_sq: int | None = slots[3]
        self.cross: int | None = slots[4]
        self.planes = 6 + 3 * ns if role == "pair" else 3 + 2 * ns
        stride = self.band.stride(width)
        buffer = _WORKSPACE.get(f"window{index}", (rows + self.band.halo, self.planes, stride), device)
        self.window = RowWindow(buffer, rows=rows, halo=self.band.halo, width=width)
        self.window.zeros(self.radius)
        self.top = 0  # first output row of the current stripe
        self.row_in = 0  # image rows written into the window so far
        # Running sums, float64: sum(d) and sum(d^4) of each plane of the stripe's maps (see _kinds).
        self.sums = torch.zeros((2, ns + 2 * len(plan.edge)), dtype=torch.float64, device=device)

    def _consume(self, rows: torch.Tensor) -> None:
        ssim, ns = self.plan.ssim, len(self.plan.ssim)
        c, n = rows.shape[0], rows.shape[1]
        xyb = _WORKSPACE.get("xyb", (c, n, self.width), self.device)
        xyb_from_roots(cube_roots(rows), xyb)  # both images at once in the pair role
        done = 0
        while done < n:
            m = min(n - done, self.window.free)
            dst = self.window.take(m)
            dst[:, 0:c].copy_(xyb[:, done : done + m].permute(1, 0, 2))
            if ns:
                if self.ref is not None and self.ref_sq is not None:
                    a = _take(dst[:, self.ref : self.ref + 3], ssim)
                    torch.mul(a, a, out=dst[:, self.ref_sq : self.ref_sq + ns])
                if self.dist is not None and self.dist_sq is not None and self.cross is not None:
                    b = _take(dst[:, self.dist : self.dist + 3], ssim)
                    torch.mul(b, b, out=dst[:, self.dist_sq : self.dist_sq + ns])
                    if self.ref is not None:
                        a = _take(dst[:, self.ref : self.ref + 3], ssim)
                    else:
                        assert self.cache is not None
                        a = self.cache[self.row_in : self.row_in + m, 0:ns]
                    torch.mul(a, b, out=dst[:, self.cross : self.cross + ns])
            self.row_in += m
            done += m
            if self.window.full:
                self._stripe(self.window.rows)
                self.window.slide()

    def _finish(self) -> None:
        """Add the zero border below the image and score the last stripes."""
        while self.top < self.height:
            left = self.height - self.top  # output rows still to compute
            needed = left + self.band.halo - self.window.filled  # zero rows until their blur is covered
            self.window.zeros(min(needed, self.window.free))
            if self.window.full:
                self._stripe(self.window.rows)
                self.window.slide()
            else:
                self._stripe(left)

    def _stripe(self, count: int) -> None:
        """Blur the window and compute (or, for the reference role, cache) the first ``count`` output rows."""
        band, w = self.band, self.width
        rows = band.rows(count)
        shape = (rows, self.planes, band.stride(w))
        blurred = band(
            self.window.buffer[: rows + band.halo],
            out=_WORKSPACE.get("blurred", shape, self.device),
            tmp=_WORKSPACE.get("blur_tmp", shape, self.device),
        )[:count, :, :w]
        xyb = self.window.buffer[self.radius : self.radius + count, :, :w]
        if self.role == "reference":
            self._cache_stripe(xyb, blurred, count)
        else:
            self._maps(xyb, blurred, count)
        self.top += count

    def _reference_side(
        self, xyb: torch.Tensor, blurred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The reference's SSIM' planes' mean and variance, its edge planes' mean and ``|img1 - mu1|``, from
        the window (ref slots), fresh tensors or views of the blur output."""
        assert self.ref is not None and self.ref_sq is not None
        plan, ns = self.plan, len(self.plan.ssim)
        mu1 = blurred[:, self.ref : self.ref + 3]
        m1 = _take(mu1, plan.ssim)
        var1 = blurred[:, self.ref_sq : self.ref_sq + ns].addcmul_(m1, m1, value=-1.0)
        e1 = torch.sub(_take(xyb[:, self.ref : self.ref + 3], plan.edge), _take(mu1, plan.edge)).abs_()
        return m1, var1, _take(mu1, plan.edge), e1

    def _cache_stripe(self, xyb: torch.Tensor, blurred: torch.Tensor, count: int) -> None:
        assert self.cache is not None and self.ref is not None
        ns = len(self.plan.ssim)
        rows = self.cache[self.top : self.top + count]
        m1, var1, _, e1 = self._reference_side(xyb, blurred)
        rows[:, 0:ns].copy_(_take(xyb[:, self.ref : self.ref + 3], self.plan.ssim))
        rows[:, ns : 2 * ns].copy_(m1)
        rows[:, 2 * ns : 3 * ns].copy_(var1)
        rows[:, 3 * ns :].copy_(e1)

    def _maps(self, xyb: torch.Tensor, blurred: torch.Tensor, count: int) -> None:
        """The stripe's SSIM', artifact and detail-lost maps, pooled into the running sums."""
        assert self.dist is not None and self.dist_sq is not None and self.cross is not None
        plan, w = self.plan, self.width
        n_ssim, n_edge = len(plan.ssim), len(plan.edge)
        if self.cache is not None:
            cached = self.cache[self.top : self.top + count]
            m1, var1, e1 = cached[:, n_ssim : 2 * n_ssim], cached[:, 2 * n_ssim : 3 * n_ssim], cached[:, 3 * n_ssim :]
        else:
            m1, var1, _, e1 = self._reference_side(xyb, blurred)
        mu2 = blurred[:, self.dist : self.dist + 3]
        # Every map of the stripe, side by side: SSIM' planes, artifact planes, detail-lost planes.
        maps = _WORKSPACE.get("maps", (count, n_ssim + 2 * n_edge, w), self.device)

        if n_ssim:
            # SSIM' without the luminance denominator, as the C++ computes it:
            # d = 1 - (1 - (mu1 - mu2)^2) * (2 (s12 - mu1 mu2) + C2) / ((s11 - mu1^2) + (s22 - mu2^2) + C2)
            # The three covariance terms are computed alike (addcmul), so identical images give d = 0 exactly.
            m2 = _take(mu2, plan.ssim)
            s22 = blurred[:, self.dist_sq : self.dist_sq + n_ssim]
            s12 = blurred[:, self.cross : self.cross + n_ssim]
            ratio = s12.addcmul_(m1, m2, value=-1.0).mul_(2.0).add_(_C2)
            ratio.div_(s22.addcmul_(m2, m2, value=-1.0).add_(var1).add_(_C2))
            # 1 - (1 - dm) ratio, as 1 - (ratio - ratio dm)
            ratio.addcmul_(ratio, torch.sub(m1, m2).square_(), value=-1.0).neg_().add_(1.0)
            torch.clamp_min(ratio, 0.0, out=maps[:, :n_ssim])

        if n_edge:
            # (1 + |img2 - mu2|) / (1 + |img1 - mu1|) - 1, written as (e2 - e1) / (1 + e1).
            d1 = torch.sub(_take(xyb[:, self.dist : self.dist + 3], plan.edge), _take(mu2, plan.edge)).abs_()
            d1.sub_(e1).div_(torch.add(e1, 1.0))
            # artifact: edges the original does not have; detail lost: edges the distorted lacks (kept as
            # min(d1, 0): its sums come out negated, and the 4th powers are the same).
            torch.clamp_min(d1, 0.0, out=maps[:, n_ssim : n_ssim + n_edge])
            torch.clamp_max(d1, 0.0, out=maps[:, n_ssim + n_edge :])

        if self.heat is not None:
            self._add_heat(self.heat, maps, count)
        # 1-norm and 4-norm sums, float32 within the stripe, float64 across stripes
        self.sums[0] += maps.sum(dim=(0, 2))
        self.sums[1] += maps.square_().square_().sum(dim=(0, 2))

    def _kinds(self) -> list[tuple[int, int]]:
        """(map kind, plane) of each plane of the stripe's maps: SSIM', artifact, detail lost."""
        plan = self.plan
        return [(0, p) for p in plan.ssim] + [(1, p) for p in plan.edge] + [(2, p) for p in plan.edge]

    def _add_heat(self, heat: _Heat, maps: torch.Tensor, count: int) -> None:
        """Add this stripe's weighted maps to the full-resolution heat map, upsampled by pixel replication."""
        combined = torch.zeros((count, self.width), dtype=torch.float32, device=self.device)
        for i, (kind, plane) in enumerate(self._kinds()):
            weight = float(heat.weights[plane, self.index, kind])
            if weight:
                # detail-lost values are held negated (min(d1, 0)); the map shows max(-d1, 0)
                combined.add_(maps[:, i], alpha=-weight if kind == 2 else weight)
        s = self.index
        height, width = heat.total.shape
        first, last = self.top << s, min((self.top + count) << s, height)
        rows = (torch.arange(first, last, device=self.device) >> s) - self.top
        cols = torch.arange(width, device=self.device) >> s
        heat.total[first:last] += combined.index_select(0, rows).index_select(1, cols)

    def pooled(self) -> torch.Tensor:
        """``3 maps x 3 planes x 2 norms`` (1-norm, 4-norm), float64; zeros for maps the plan skips."""
        n = float(self.height * self.width)
        out = torch.zeros((3, 3, 2), dtype=torch.float64, device=self.device)
        means = self.sums / n
        for i, (kind, plane) in enumerate(self._kinds()):
            out[kind, plane, 0] = means[0, i].abs()  # detail-lost sums are negated
            out[kind, plane, 1] = means[1, i].sqrt().sqrt()
        return out


# ----------------------------------------------------------------------------------------------------
# Reference-side state and the stream
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSIMULACRA2State:
    """The reference side of SSIMULACRA 2: its sRGB planes (the caller's tensor, not a copy), its size, and,
    when they fit the metric's cache budget, its per-scale caches (see :class:`_Scale`).

    Without caches, the reference's side of every map is recomputed stripe by stripe with each candidate, so
    memory does not grow with the image. The tensor must not be modified while prepared.
    """

    height: int
    width: int
    planes: torch.Tensor  # 3 x H x W sRGB
    caches: tuple[torch.Tensor, ...] | None = None


def _check_tensor(t: torch.Tensor, what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise InvalidImageError(f"{what} must be a 1 x 3 x H x W tensor, got {shape}")
    h, w = t.shape[-2:]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise InvalidImageError(
            f"SSIMULACRA 2 needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {w}x{h} ({what})"
        )


def _scale_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes of the scales the C++ tool computes: it stops when the *previous* scale is under 8 pixels."""
    sizes = [(height, width)]
    while len(sizes) < NUM_SCALES and min(sizes[-1]) >= MIN_SIZE:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _cache_planes(plan: _Plan) -> int:
    """Planes a scale's reference cache holds: XYB, mean and variance of the SSIM' planes, ``|img1 - mu1|`` of
    the edge planes."""
    return 3 * len(plan.ssim) + len(plan.edge)


def cache_bytes(height: int, width: int) -> int:
    """Bytes the reference caches of a ``width x height`` reference take (about 40 per pixel): it is cached
    when this is at most the metric's ``reference_cache_bytes``.

    Args:
        height: reference height in pixels.
        width: reference width in pixels.

    Returns:
        The size in bytes of the float32 caches over all scales.
    """
    sizes = _scale_sizes(height, width)
    return sum(4 * h * w * _cache_planes(plan) for (h, w), plan in zip(sizes, _plans(len(sizes))))


def _prepare(reference: torch.Tensor, device: torch.device, cache_budget: int) -> SSIMULACRA2State:
    _check_tensor(reference, "reference")
    h, w = (int(v) for v in reference.shape[-2:])
    planes = reference[0].to(device=device, dtype=torch.float32)
    if cache_bytes(h, w) > cache_budget:
        return SSIMULACRA2State(height=h, width=w, planes=planes)
    sizes = _scale_sizes(h, w)
    caches = tuple(
        torch.empty((sh, _cache_planes(plan), sw), dtype=torch.float32, device=device)
        for (sh, sw), plan in zip(sizes, _plans(len(sizes)))
    )
    _stream(planes, None, caches, None)
    return SSIMULACRA2State(height=h, width=w, planes=planes, caches=caches)


def _stream(
    ref: torch.Tensor, dist: torch.Tensor | None, caches: tuple[torch.Tensor, ...] | None, heat: _Heat | None
) -> list[_Scale]:
    """Stream ``3 x H x W`` sRGB planes through every scale. Roles: with ``dist`` and no caches, both images
    (pair); with ``dist`` and caches, the distorted image against them; without ``dist``, the reference
    alone, filling the caches."""
    h, w = ref.shape[-2:]
    sizes = _scale_sizes(h, w)
    plans = _plans(len(sizes))
    role: Role = "reference" if dist is None else ("distorted" if caches is not None else "pair")
    scales: list[_Scale] = []
    nxt: _Scale | None = None
    for index in reversed(range(len(sizes))):
        nxt = _Scale(
            index,
            *sizes[index],
            plans[index],
            nxt,
            role=role,
            cache=None if caches is None else caches[index],
            heat=heat,
            device=ref.device,
        )
        scales.append(nxt)
    scales.reverse()
    first = scales[0]
    top = 0
    while top < h:
        n = min(first.free, h - top)
        if role == "pair":
            assert dist is not None
            sources = [ref[:, top : top + n], dist[:, top : top + n]]
        else:
            sources = [(ref if dist is None else dist)[:, top : top + n]]
        decode_srgb(sources, first.take(n))
        first.commit()
        top += n
    first.finish()
    return scales


def _subscores(state: SSIMULACRA2State, distorted: torch.Tensor, heat: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled values of every scale: ``scales x 3 maps x 3 planes x 2 norms``, float64.

    With ``heat`` (``H x W`` float32 zeros), also adds each scale's weighted maps into it.
    """
    _check_tensor(distorted, "distorted")
    h, w = (int(v) for v in distorted.shape[-2:])
    if (h, w) != (state.height, state.width):
        raise ImageSizeMismatchError(f"expected equal sizes, got {state.width}x{state.height} and {w}x{h}")
    dist = distorted[0].to(device=state.planes.device, dtype=torch.float32)
    collect = None
    if heat is not None:
        n_scales = len(_scale_sizes(h, w))
        weights = np.asarray(WEIGHTS[: 18 * n_scales]).reshape(3, n_scales, 2, 3).sum(axis=2)
        collect = _Heat(total=heat, weights=weights)
    scales = _stream(state.planes, dist, state.caches, collect)
    return torch.stack([s.pooled() for s in scales])


def _ordered(pooled: torch.Tensor) -> np.ndarray:
    """Pooled values in the C++ order: plane, scale, norm, map (SSIM', artifact, detail lost)."""
    return pooled.permute(2, 0, 3, 1).reshape(-1).cpu().numpy()


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def ssimulacra2(reference: torch.Tensor, distorted: torch.Tensor) -> float:
    """SSIMULACRA 2.1 score of ``distorted`` against ``reference`` (float32 ``1 x 3 x H x W`` sRGB in [0, 1]).

    100 means identical; 90 visually lossless, 80 high, 70 medium, 50 low quality; it can go negative.
    """
    with torch.inference_mode():
        pooled = _subscores(_prepare(reference, reference.device, 0), distorted)
        return score_from_subscores(_ordered(pooled))


class SSIMULACRA2(Metric):
    """SSIMULACRA 2.1, streamed in stripes (see the module docstring).

    ``reference_cache_bytes``: the reference's side of every map is computed once and kept when it takes at
    most this many bytes (about 40 per pixel: up to 1.6 MP with the default 64 MiB), which makes scoring a
    candidate about a third cheaper; larger references are recomputed with each candidate, so memory stays
    bounded. 0 never caches.
    """

    spec = get_spec("ssimulacra2")

    def __init__(
        self, device: torch.device | str | None = None, *, reference_cache_bytes: int = REFERENCE_CACHE_BYTES
    ) -> None:
        super().__init__(device)
        if reference_cache_bytes < 0:
            raise InvalidParameterError(f"reference_cache_bytes must be >= 0, got {reference_cache_bytes}")
        self.reference_cache_bytes = reference_cache_bytes

    def prepare(self, reference: torch.Tensor, shared: dict[str, Any]) -> SSIMULACRA2State:
        with torch.inference_mode():
            return _prepare(reference, self.device, self.reference_cache_bytes)

    def compute(self, state: SSIMULACRA2State, distorted: torch.Tensor, shared: dict[str, Any]) -> float:
        with torch.inference_mode():
            pooled = _subscores(state, distorted)
            return score_from_subscores(_ordered(pooled))

    def compute_map(self, state: SSIMULACRA2State, distorted: torch.Tensor, shared: dict[str, Any]) -> np.ndarray:
        """``H x W`` float32 local error (0 where the images agree, higher is worse).

        Each scale's SSIM', artifact and detail-lost maps, weighted by the sum of the two weights their
        1-norm and 4-norm carry in the score, summed over planes, upsampled by pixel replication and
        summed over scales. A picture of where the score's error comes from, not a per-pixel score.
        """
        with torch.inference_mode():
            heat = torch.zeros((state.height, state.width), dtype=torch.float32, device=state.planes.device)
            _subscores(state, distorted, heat=heat)
            return heat.cpu().numpy()
