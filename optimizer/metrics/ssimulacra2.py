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
0.64 points lower on average (up to 2.5): its blur, padding and a transposed XYB plane differ.

Pixels stay in float32; pooled values and the final weighting are float64, as in the C++. Maps whose two
weights are both zero are skipped (about half of them), which changes nothing in the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ImageSizeMismatchError, InvalidImageError
from ._recursive_gaussian import blur_padded, padded_planes
from .base import Metric
from .registry import get_spec

__all__ = [
    "MIN_SIZE",
    "NUM_SCALES",
    "SSIMULACRA2",
    "WEIGHTS",
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

# libjxl's opsin absorbance matrix and bias (lib/jxl/cms/opsin_params.h), with the diagonal terms
# computed in float32 as libjxl does (1.0f - kM02 - kM00...).
_f = np.float32
_M = np.array(
    [
        [_f(0.30), _f(1.0) - _f(0.078) - _f(0.30), _f(0.078)],
        [_f(0.23), _f(1.0) - _f(0.078) - _f(0.23), _f(0.078)],
        [
            _f(0.24342268924547819),
            _f(0.20476744424496821),
            _f(1.0) - _f(0.24342268924547819) - _f(0.20476744424496821),
        ],
    ],
    dtype=np.float32,
)
_BIAS = np.float32(0.0037930732552754493)
_NEG_CBRT_BIAS = -float(np.cbrt(np.float64(_BIAS)))

#: The 108 SSIMULACRA 2.1 weights, in the C++ order: plane (X, Y, B), scale, norm (1, 4), then map
#: (SSIM', artifact, detail lost) within each row.
WEIGHTS: tuple[float, ...] = (
    0.0, 0.0007376606707406586, 0.0,  # X 1:1 1-norm
    0.0, 0.0007793481682867309, 0.0,  # X 1:1 4-norm
    0.0, 0.0004371155730107379, 0.0,  # X 1:2 1-norm
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752,  # X 1:2 4-norm
    0.0, 0.0016406437456599754, 0.0,  # X 1:4 1-norm
    1.8422455520539298, 11.441172603757666, 0.0,  # X 1:4 4-norm
    0.0007989109436015163, 0.000176816438078653, 0.0,  # X 1:8 1-norm
    1.8787594979546387, 10.94906990605142, 0.0,  # X 1:8 4-norm
    0.0007289346991508072, 0.9677937080626833, 0.0,  # X 1:16 1-norm
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053,  # X 1:16 4-norm
    0.0004550992113792063, 0.0, 0.0,  # X 1:32 1-norm
    0.0013648766163243398, 0.0, 0.0,  # X 1:32 4-norm
    0.0, 0.0, 0.0,  # Y 1:1 1-norm
    7.466890328078848, 0.0, 17.445833984131262,  # Y 1:1 4-norm
    0.0006235601634041466, 0.0, 0.0,  # Y 1:2 1-norm
    6.683678146179332, 0.00037724407979611296, 1.027889937768264,  # Y 1:2 4-norm
    225.20515300849274, 0.0, 0.0,  # Y 1:4 1-norm
    19.213238186143016, 0.0011401524586618361, 0.001237755635509985,  # Y 1:4 4-norm
    176.39317598450694, 0.0, 0.0,  # Y 1:8 1-norm
    24.43300999870476, 0.28520802612117757, 0.0004485436923833408,  # Y 1:8 4-norm
    0.0, 0.0, 0.0,  # Y 1:16 1-norm
    34.77906344483772, 44.835625328877896, 0.0,  # Y 1:16 4-norm
    0.0, 0.0, 0.0,  # Y 1:32 1-norm
    0.0, 0.0, 0.0,  # Y 1:32 4-norm
    0.0, 0.0008680556573291698, 0.0,  # B 1:1 1-norm
    0.0, 0.0, 0.0,  # B 1:1 4-norm
    0.0, 0.0005313191874358747, 0.0,  # B 1:2 1-norm
    0.00016533814161379112, 0.0, 0.0,  # B 1:2 4-norm
    0.0, 0.0, 0.0,  # B 1:4 1-norm
    0.0004179171803251336, 0.0017290828234722833, 0.0,  # B 1:4 4-norm
    0.0020827005846636437, 0.0, 0.0,  # B 1:8 1-norm
    8.826982764996862, 23.19243343998926, 0.0,  # B 1:8 4-norm
    95.1080498811086, 0.9863978034400682, 0.9834382792465353,  # B 1:16 1-norm
    0.0012286405048278493, 171.2667255897307, 0.9807858872435379,  # B 1:16 4-norm
    0.0, 0.0, 0.0,  # B 1:32 1-norm
    0.0005130064588990679, 0.0, 0.00010854057858411537,  # B 1:32 4-norm
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# Colour
# ----------------------------------------------------------------------------------------------------


def srgb_to_linear(srgb: torch.Tensor) -> torch.Tensor:
    """The sRGB transfer curve inverted: ``v / 12.92`` up to 0.04045, ``((v + 0.055) / 1.055) ^ 2.4`` above."""
    high = torch.add(srgb, 0.055).mul_(1.0 / 1.055).pow_(2.4)
    return torch.where(srgb <= 0.04045, srgb / 12.92, high)


def linear_to_xyb(linear: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Linear RGB ``3 x H x W`` to SSIMULACRA 2.1's positive XYB ``3 x H x W`` (X', Y', B' - Y' rescaled).

    With ``m_i = cbrt(max(M rgb + bias, 0))``: ``X' = 7 (m0 - m1) + 0.42``,
    ``Y' = (m0 + m1) / 2 - cbrt(bias) + 0.01``, ``B' = m2 - (m0 + m1) / 2 + 0.55`` (the cube root of the
    bias cancels in X' and B'). Differences are taken before scaling, so X' keeps full float32 precision.
    ``out`` may be a strided view (the interior of a padded blur buffer).
    """
    _, h, w = linear.shape
    opsin = torch.from_numpy(_M).to(linear.device)
    mixed = torch.matmul(opsin, linear.reshape(3, h * w)).add_(float(_BIAS)).clamp_min_(0.0).pow_(1.0 / 3.0)
    m0, m1, m2 = mixed.view(3, h, w).unbind(0)
    half_sum = torch.add(m0, m1).mul_(0.5)
    if out is None:
        out = torch.empty((3, h, w), dtype=linear.dtype, device=linear.device)
    torch.sub(m0, m1, out=out[0]).mul_(7.0).add_(0.42)
    torch.add(half_sum, 0.01 + _NEG_CBRT_BIAS, out=out[1])
    torch.sub(m2, half_sum, out=out[2]).add_(0.55)
    return out


def _downsample(linear: torch.Tensor) -> torch.Tensor:
    """2x2 box average; an odd last row or column is averaged with itself (index clamping in the C++)."""
    _, h, w = linear.shape
    if h % 2 or w % 2:
        linear = torch.nn.functional.pad(linear[None], (0, w % 2, 0, h % 2), mode="replicate")[0]
    out = linear[:, 0::2, 0::2] + linear[:, 0::2, 1::2]
    out.add_(linear[:, 1::2, 0::2]).add_(linear[:, 1::2, 1::2])
    return out.mul_(0.25)


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
    """Planes ``planes`` of ``t``, whose planes are ``among``; a view when they are consecutive."""
    pos = [among.index(p) for p in planes]
    if not pos or pos == list(range(pos[0], pos[0] + len(pos))):
        start = pos[0] if pos else 0
        return t[start : start + len(pos)]
    return t[pos]


# ----------------------------------------------------------------------------------------------------
# Reference-side state and per-scale maps
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ScaleState:
    """What scoring a candidate needs of the reference at one scale (``mu = blur(xyb)``), nothing more."""

    plan: _Plan
    xyb_ssim: torch.Tensor  # xyb of the SSIM planes
    mu_ssim: torch.Tensor  # mu of the SSIM planes
    variance: torch.Tensor  # blur(xyb^2) - mu^2 of the SSIM planes, as the SSIM' denominator uses it
    edge: torch.Tensor  # |xyb - mu| of the edge planes
    inv_edge: torch.Tensor  # 1 / (1 + edge) of the edge planes


@dataclass(frozen=True)
class SSIMULACRA2State:
    """The reference side of SSIMULACRA 2, at every scale the C++ tool would compute."""

    height: int
    width: int
    scales: tuple[_ScaleState, ...]


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


def _prepare(reference: torch.Tensor) -> SSIMULACRA2State:
    _check_tensor(reference, "reference")
    h, w = (int(v) for v in reference.shape[-2:])
    plans = _plans(len(_scale_sizes(h, w)))
    linear = srgb_to_linear(reference[0].float())
    scales: list[_ScaleState] = []
    for scale, plan in enumerate(plans):
        if scale:
            linear = _downsample(linear)
        n_ssim = len(plan.ssim)
        padded, interior = padded_planes(3 + n_ssim, linear.shape[1], linear.shape[2], sigma=_SIGMA, like=linear)
        xyb = linear_to_xyb(linear, out=interior[:3])
        xyb_ssim = _take(xyb, plan.ssim).contiguous()
        torch.mul(xyb_ssim, xyb_ssim, out=interior[3:])
        blurred = blur_padded(padded, _SIGMA)
        mu, sigma_sq = blurred[:3], blurred[3:]
        mu_ssim = _take(mu, plan.ssim).clone()  # a copy, so the state does not keep the whole blur buffer
        edge = torch.sub(_take(xyb, plan.edge), _take(mu, plan.edge)).abs_()
        scales.append(
            _ScaleState(
                plan=plan,
                xyb_ssim=xyb_ssim,
                mu_ssim=mu_ssim,
                variance=sigma_sq - mu_ssim * mu_ssim,
                edge=edge,
                inv_edge=torch.reciprocal(edge + 1.0),
            )
        )
    return SSIMULACRA2State(height=h, width=w, scales=tuple(scales))


def _norms(maps: torch.Tensor) -> torch.Tensor:
    """1-norm and 4-norm of each ``h x w`` map in ``... x h x w``: ``... x 2``, float64.

    Sums run in float32 (torch sums float32 pairwise, so the relative error stays near 1e-7, far below
    what moves a score); converting the maps to float64 first would cost more than the rest of the pooling.
    """
    flat = maps.flatten(-2)
    n = flat.shape[-1]
    mean = flat.sum(dim=-1).double() / n
    fourth = flat.square().square_().sum(dim=-1).double() / n
    return torch.stack([mean, fourth.sqrt().sqrt()], dim=-1)


def _scale_maps(ref: _ScaleState, linear: torch.Tensor, keep_maps: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled error maps of one scale (``3 maps x 3 planes x 2 norms``, float64; maps: SSIM', artifact,
    detail lost) and, when asked, the maps themselves (``3 x 3 x h x w``; zeros where the plan skips)."""
    plan = ref.plan
    ssim_planes, edge_planes = plan.ssim, plan.edge
    n_ssim = len(ssim_planes)
    _, h, w = linear.shape

    # One buffer, one blur: [xyb (3 planes), xyb^2 and xyb * reference of the SSIM planes].
    padded, interior = padded_planes(3 + 2 * n_ssim, h, w, sigma=_SIGMA, like=linear)
    xyb = linear_to_xyb(linear, out=interior[:3])
    xyb_ssim = _take(xyb, ssim_planes)
    torch.mul(xyb_ssim, xyb_ssim, out=interior[3 : 3 + n_ssim])
    torch.mul(ref.xyb_ssim, xyb_ssim, out=interior[3 + n_ssim :])
    blurred = blur_padded(padded, _SIGMA)
    mu2 = blurred[:3]

    pooled = torch.zeros((3, 3, 2), dtype=torch.float64, device=linear.device)
    kept = torch.zeros((3, 3, h, w), dtype=linear.dtype, device=linear.device) if keep_maps else None

    if n_ssim:
        # SSIM' without the luminance denominator, as the C++ computes it:
        # d = 1 - (1 - (mu1 - mu2)^2) * (2 (s12 - mu1 mu2) + C2) / ((s11 - mu1^2) + (s22 - mu2^2) + C2)
        mu1, mu2s = ref.mu_ssim, _take(mu2, ssim_planes)
        sigma22 = blurred[3 : 3 + n_ssim]
        sigma12 = blurred[3 + n_ssim :]
        num_s = sigma12.sub_(mu1 * mu2s).mul_(2.0).add_(_C2)
        denom_s = sigma22.sub_(mu2s * mu2s).add_(ref.variance).add_(_C2)
        ssim = torch.sub(mu1, mu2s).square_().neg_().add_(1.0).mul_(num_s)
        ssim.div_(denom_s).neg_().add_(1.0).clamp_min_(0.0)
        pooled[0, list(ssim_planes)] = _norms(ssim)
        if kept is not None:
            kept[0, list(ssim_planes)] = ssim

    if edge_planes:
        # (1 + |img2 - mu2|) / (1 + |img1 - mu1|) - 1, written as (e2 - e1) / (1 + e1).
        d1 = torch.sub(_take(xyb, edge_planes), _take(mu2, edge_planes)).abs_()
        d1.sub_(ref.edge).mul_(ref.inv_edge)
        for kind, planes, sign in ((1, plan.artifact, 1.0), (2, plan.detail, -1.0)):
            if not planes:
                continue
            # artifact: edges the original does not have; detail lost: edges the distorted lacks.
            part = torch.mul(_take(d1, planes, edge_planes), sign).clamp_min_(0.0)
            pooled[kind, list(planes)] = _norms(part)
            if kept is not None:
                kept[kind, list(planes)] = part
    return pooled, kept


def _subscores(
    state: SSIMULACRA2State, distorted: torch.Tensor, keep_maps: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    _check_tensor(distorted, "distorted")
    h, w = (int(v) for v in distorted.shape[-2:])
    if (h, w) != (state.height, state.width):
        raise ImageSizeMismatchError(f"expected equal sizes, got {state.width}x{state.height} and {w}x{h}")
    linear = srgb_to_linear(distorted[0].float())
    pooled: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    for scale, ref in enumerate(state.scales):
        if scale:
            linear = _downsample(linear)
        p, maps = _scale_maps(ref, linear, keep_maps)
        pooled.append(p)
        if maps is not None:
            kept.append(maps)
    return torch.stack(pooled), kept  # scales x 3 maps x 3 planes x 2 norms


def _ordered(pooled: torch.Tensor) -> np.ndarray:
    """Pooled values in the C++ order: plane, scale, norm, map (SSIM', artifact, detail lost)."""
    return pooled.permute(2, 0, 3, 1).reshape(-1).cpu().numpy()


def score_from_subscores(values: np.ndarray | list[float]) -> float:
    """Weighted sum of the pooled values (walked sequentially, as the C++ does) and the 2.1 mapping."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    total = float(np.dot(np.asarray(WEIGHTS[: values.size]), values))
    s = total * 0.9562382616834844
    s = 2.326765642916932 * s - 0.020884521182843837 * s * s + 6.248496625763138e-05 * s * s * s
    if s > 0:
        return 100.0 - 10.0 * math.pow(s, 0.6276336467831387)
    return 100.0


def _weight_map(state: SSIMULACRA2State, kept: list[torch.Tensor]) -> np.ndarray:
    """Full-resolution local error: every scale's maps, weighted and upsampled by pixel replication."""
    n_scales = len(kept)
    weights = np.asarray(WEIGHTS[: 18 * n_scales]).reshape(3, n_scales, 2, 3)  # plane, scale, norm, map
    per_map = weights.sum(axis=2)  # both norms of a (plane, scale, map) weigh its per-pixel values
    h, w = state.height, state.width
    device = kept[0].device
    total = torch.zeros((h, w), dtype=torch.float32, device=device)
    for scale, maps in enumerate(kept):
        wt = torch.tensor(per_map[:, scale, :].T.copy(), dtype=torch.float32, device=device)  # map x plane
        combined = (maps * wt[:, :, None, None]).sum(dim=(0, 1))
        if scale:
            rows = torch.arange(h, device=device) >> scale
            cols = torch.arange(w, device=device) >> scale
            combined = combined[rows][:, cols]
        total += combined
    return total.cpu().numpy()


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def ssimulacra2(reference: torch.Tensor, distorted: torch.Tensor) -> float:
    """SSIMULACRA 2.1 score of ``distorted`` against ``reference`` (float32 ``1 x 3 x H x W`` sRGB in [0, 1]).

    100 means identical; 90 visually lossless, 80 high, 70 medium, 50 low quality; it can go negative.
    """
    with torch.inference_mode():
        pooled, _ = _subscores(_prepare(reference), distorted)
        return score_from_subscores(_ordered(pooled))


class SSIMULACRA2(Metric):
    """SSIMULACRA 2.1 with the reference side (XYB pyramid, its blurred means and squares) cached."""

    spec = get_spec("ssimulacra2")

    def prepare(self, reference: torch.Tensor, shared: dict[str, Any]) -> SSIMULACRA2State:
        with torch.inference_mode():
            return _prepare(reference.to(self.device))

    def compute(self, state: SSIMULACRA2State, distorted: torch.Tensor, shared: dict[str, Any]) -> float:
        with torch.inference_mode():
            pooled, _ = _subscores(state, distorted.to(self.device))
            return score_from_subscores(_ordered(pooled))

    def compute_map(self, state: SSIMULACRA2State, distorted: torch.Tensor, shared: dict[str, Any]) -> np.ndarray:
        """``H x W`` float32 local error (0 where the images agree, higher is worse).

        Each scale's SSIM', artifact and detail-lost maps, weighted by the sum of the two weights their
        1-norm and 4-norm carry in the score, summed over planes, upsampled by pixel replication and
        summed over scales. A picture of where the score's error comes from, not a per-pixel score.
        """
        with torch.inference_mode():
            _, kept = _subscores(state, distorted.to(self.device), keep_maps=True)
            return _weight_map(state, kept)
