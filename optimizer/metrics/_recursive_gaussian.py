"""libjxl's recursive Gaussian blur, applied as the separable FIR filter it is equivalent to.

SSIMULACRA 2 blurs with libjxl's ``FastGaussian``: the recursive (IIR) Gaussian of Charalampidis (2016),
"Recursive Implementation of the Gaussian Filter Using Truncated Cosine Functions", run over rows and
then over columns with zero-valued samples outside the image. Each 1-D pass is a sum of three
second-order resonators fed with ``x[n - N - 1] + x[n + N - 1]``::

    y_k[n] = n2_k * (x[n - N - 1] + x[n + N - 1]) - d1_k * y_k[n - 1] - y_k[n - 2]
    y[n] = y_1[n] + y_3[n] + y_5[n]

started at ``n = -N + 1`` with zero state. The filter is linear and shift-invariant on the zero-padded
signal, so it equals a convolution with its impulse response, and that response is finite: the paired
inputs make the truncated cosines cancel after ``2N - 1`` taps (9 taps for sigma 1.5, ``N = 5``). A
per-row recursion in Python would be hopelessly slow; a 9-tap separable FIR (run as small matrix products,
:class:`~._gaussian.BandFilter`) is fast and, with zero padding, has exactly the C++ border semantics
(outputs near the border are darker, as in the C++).

The taps come from running the recursion on a delta in float64 with the coefficients rounded to float32
as libjxl stores them. With those rounded coefficients the cancellation is not quite exact: a tail of at
most 1.5e-7 per tap oscillates on forever (the poles sit on the unit circle). It lies below float32
resolution of the blurred values, and the C++ float32 recursion adds rounding noise of the same order,
so the FIR keeps the ``2N - 1`` taps of the exact filter's support and drops that tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ._gaussian import BandFilter

if TYPE_CHECKING:
    import torch

__all__ = [
    "RecursiveGaussian",
    "band_filter",
    "fir_blur",
    "gaussian_kernel",
    "recursive_gaussian",
]


@dataclass(frozen=True)
class RecursiveGaussian:
    """Coefficients of libjxl's recursive Gaussian (``CreateRecursiveGaussian``), rounded to float32.

    ``radius`` is the recursion's ``N``; ``n2`` and ``d1`` hold the input and feedback multipliers of the
    three resonators (k = 1, 3, 5), as float64 numbers that are exactly representable in float32.
    """

    sigma: float
    radius: int
    n2: tuple[float, float, float]
    d1: tuple[float, float, float]


@lru_cache(maxsize=8)
def recursive_gaussian(sigma: float = 1.5) -> RecursiveGaussian:
    """Solve for the filter coefficients the way libjxl does (equations numbered as in the paper)."""
    radius = float(math.floor(3.2795 * sigma + 0.2546 + 0.5))  # (57): N, rounded half away from zero
    pi_div_2r = math.pi / (2.0 * radius)
    omega = (pi_div_2r, 3.0 * pi_div_2r, 5.0 * pi_div_2r)  # Table I, first row

    p = (1.0 / math.tan(0.5 * omega[0]), -1.0 / math.tan(0.5 * omega[1]), 1.0 / math.tan(0.5 * omega[2]))  # (37)
    r = (p[0] ** 2 / math.sin(omega[0]), -(p[1] ** 2) / math.sin(omega[1]), p[2] ** 2 / math.sin(omega[2]))  # (44)
    rho = [math.exp(-0.5 * sigma * sigma * w * w) / radius for w in omega]  # (50)

    d_13 = p[0] * r[1] - r[0] * p[1]  # (52)
    d_35 = p[1] * r[2] - r[1] * p[2]
    d_51 = p[2] * r[0] - r[2] * p[0]
    zeta_15 = d_35 / d_13
    zeta_35 = d_51 / d_13

    a = np.array([p, r, (zeta_15, zeta_35, 1.0)], dtype=np.float64)  # (56)
    gamma = np.array([1.0, radius * radius - sigma * sigma, zeta_15 * rho[0] + zeta_35 * rho[1] + rho[2]])  # (55)
    beta = np.linalg.inv(a) @ gamma  # (53)
    if abs(float(beta @ np.array(p)) - 1.0) > 1e-12:  # (39): the weights must be normalised
        raise ArithmeticError(f"recursive Gaussian weights do not sum to 1 for sigma {sigma}")

    n2 = tuple(float(np.float32(-beta[i] * math.cos(omega[i] * (radius + 1.0)))) for i in range(3))  # (33)
    d1 = tuple(float(np.float32(-2.0 * math.cos(omega[i]))) for i in range(3))  # (33)
    return RecursiveGaussian(sigma=float(sigma), radius=int(radius), n2=n2, d1=d1)  # type: ignore[arg-type]


@lru_cache(maxsize=8)
def _kernel(sigma: float) -> tuple[float, ...]:
    rg = recursive_gaussian(sigma)
    n = rg.radius
    half = n - 1  # support of the exact filter: offsets -(N-1) .. N-1
    length = 4 * n + 1
    centre = 2 * n
    x = np.zeros(length)
    x[centre] = 1.0
    n2 = np.array(rg.n2)
    d1 = np.array(rg.d1)
    prev = np.zeros(3)
    prev2 = np.zeros(3)
    y = np.zeros(length)
    for i in range(-n + 1, length):
        left, right = i - n - 1, i + n - 1
        s = (x[left] if 0 <= left < length else 0.0) + (x[right] if 0 <= right < length else 0.0)
        out = n2 * s - d1 * prev - prev2
        prev2, prev = prev, out
        if i >= 0:
            y[i] = out.sum()
    # y[centre + d] is the response at offset d from the delta; the convolution kernel is its mirror.
    taps = y[centre - half : centre + half + 1][::-1]
    return tuple(float(t) for t in taps)


def gaussian_kernel(sigma: float = 1.5) -> np.ndarray:
    """The FIR equivalent of the recursive Gaussian: ``2N - 1`` float64 taps, ``out[n] = sum k[j] x[n + j - R]``.

    Index ``j`` runs over offsets ``R - j`` from ``-R`` to ``R`` (``R = N - 1``); the taps are symmetric to
    within 1.5e-7, the float32 residue described in the module docstring.
    """
    return np.array(_kernel(float(sigma)))


def band_filter(sigma: float = 1.5) -> BandFilter:
    """The blur as a :class:`~._gaussian.BandFilter`: ``2N - 1`` taps centred on the output sample, over rows
    with ``N - 1`` zero samples (columns by the filter, rows by the caller) on each side."""
    return _band_filter(float(sigma))


@lru_cache(maxsize=8)
def _band_filter(sigma: float) -> BandFilter:
    taps = _kernel(sigma)
    return BandFilter(taps, left=len(taps) // 2)


def fir_blur(x: "torch.Tensor", sigma: float = 1.5) -> "torch.Tensor":
    """Blur the last two dimensions of ``x`` (``P x H x W``) with zero borders, as libjxl does.

    The whole image as one stripe, in float32 whatever the input type: a reference for tests and small
    planes; the metric itself blurs stripe by stripe.
    """
    import torch

    from ..errors import InvalidParameterError

    if x.dim() != 3:
        raise InvalidParameterError(f"fir_blur expects a P x H x W tensor, got shape {tuple(x.shape)}")
    band = band_filter(sigma)
    planes, height, width = x.shape
    r = band.halo // 2
    rows, stride = band.rows(height), band.stride(width)
    src = torch.zeros((rows + band.halo, planes, stride), dtype=torch.float32, device=x.device)
    src[r : r + height, :, :width] = x.permute(1, 0, 2)
    out = torch.empty((rows, planes, stride), dtype=torch.float32, device=x.device)
    band(src, out=out, tmp=torch.empty_like(out))
    return out[:height, :, :width].permute(1, 0, 2).to(x.dtype)
