"""sRGB to SSIMULACRA 2.1's positive XYB: libjxl's opsin absorbance matrix, bias and cube root, written as
matrix products and ``exp``/``log`` so that a stripe of several images' planes converts in one chain of
operations (the colour half of :mod:`optimizer.metrics.ssimulacra2`)."""

from __future__ import annotations

import numpy as np
import torch

from ._gaussian import Workspace

__all__ = ["decode_srgb", "cube_roots", "linear_to_xyb", "srgb_to_linear", "xyb_from_roots"]

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
# From the cube roots m to SSIMULACRA 2.1's planes: X' = 7 (m0 - m1) + 0.42, Y' = (m0 + m1) / 2 - cbrt(bias)
# + 0.01, B' = m2 - (m0 + m1) / 2 + 0.55 (the cube root of the bias cancels in X' and B').
_XYB = np.array([[7.0, -7.0, 0.0], [0.5, 0.5, 0.0], [-0.5, -0.5, 1.0]], dtype=np.float32)
_XYB_OFFSET = np.array([[0.42], [0.01 + _NEG_CBRT_BIAS], [0.55]], dtype=np.float32)

_SRGB_THRESHOLD = 0.04045

_WORKSPACE = Workspace()


def srgb_to_linear(srgb: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """The sRGB transfer curve inverted: ``v / 12.92`` up to 0.04045, ``((v + 0.055) / 1.055) ^ 2.4`` above.

    Written without a mask (``torch.where`` costs ten times an addition here) and with the power as
    ``exp(2.4 log(.))`` (a quarter of ``pow``'s cost, within 1e-6 relative). ``out`` gets the result.
    """
    if out is None:
        out = torch.empty(srgb.shape, dtype=torch.float32, device=srgb.device)
    decode_srgb([srgb], out)
    return out


def decode_srgb(sources: list[torch.Tensor], out: torch.Tensor) -> None:
    """:func:`srgb_to_linear` of several ``C x n x W`` tensors into consecutive planes of ``out``: one chain
    of operations for all of them. Below the threshold the power branch is clamped to its value there (the
    knee, ``0.04045 / 12.92``) and above it the linear branch is clamped to the same value, so
    ``knee + power(max(v, t)) - knee + (min(v, t) - t) / 12.92`` is whichever branch applies."""
    high = _WORKSPACE.get("srgb_high", tuple(out.shape), out.device)
    k = 0
    for src in sources:
        c = src.shape[0]
        torch.clamp_min(src, _SRGB_THRESHOLD, out=high[k : k + c])
        torch.clamp_max(src, _SRGB_THRESHOLD, out=out[k : k + c])
        k += c
    high.add_(0.055).mul_(1.0 / 1.055).log_().mul_(2.4).exp_()
    torch.add(high, out.sub_(_SRGB_THRESHOLD), alpha=1.0 / 12.92, out=out)


def linear_to_xyb(linear: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Linear RGB ``3k x H x W`` (``k`` images' planes) to SSIMULACRA 2.1's positive XYB, plane for plane.

    With ``m_i = cbrt(max(M rgb + bias, 0))``: ``X' = 7 (m0 - m1) + 0.42``,
    ``Y' = (m0 + m1) / 2 - cbrt(bias) + 0.01``, ``B' = m2 - (m0 + m1) / 2 + 0.55`` (the cube root of the
    bias cancels in X' and B'). Both linear maps are matrix products (block-diagonal over the images); the
    cube root is ``exp(log(.) / 3)``, within 2e-7 relative. ``linear`` needs contiguous rows.
    """
    c, h, w = linear.shape
    xyb = torch.empty((c, h, w), dtype=torch.float32, device=linear.device)
    xyb_from_roots(cube_roots(linear), xyb)
    return xyb if out is None else out.copy_(xyb)


def cube_roots(linear: torch.Tensor) -> torch.Tensor:
    """``cbrt(max(M rgb + bias, 0))`` of ``3k x H x W`` linear planes, as a ``3k x (H W)`` matrix."""
    c, h, w = linear.shape
    opsin, bias, _, _ = _xyb_matrices(c // 3, linear.device)
    return torch.addmm(bias, opsin, linear.reshape(c, h * w)).clamp_min_(0.0).log_().mul_(1.0 / 3.0).exp_()


def xyb_from_roots(roots: torch.Tensor, out: torch.Tensor) -> None:
    """The XYB planes from :func:`cube_roots` into ``out`` (contiguous ``3k x h x w``)."""
    c, h, w = out.shape
    _, _, to_xyb, offset = _xyb_matrices(c // 3, out.device)
    torch.addmm(offset, to_xyb, roots, out=out.view(c, h * w))


_XYB_MATRICES: dict[tuple[int, str, int | None], tuple[torch.Tensor, ...]] = {}


def _xyb_matrices(images: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Block-diagonal opsin matrix, bias column, XYB matrix and offset column for ``images`` images."""
    key = (images, device.type, device.index)
    cached = _XYB_MATRICES.get(key)
    if cached is None:
        eye = np.eye(images, dtype=np.float32)
        cached = tuple(
            torch.from_numpy(np.ascontiguousarray(m)).to(device)
            for m in (
                np.kron(eye, _M),
                np.full((3 * images, 1), _BIAS, dtype=np.float32),
                np.kron(eye, _XYB),
                np.tile(_XYB_OFFSET, (images, 1)),
            )
        )
        _XYB_MATRICES[key] = cached
    return cached
