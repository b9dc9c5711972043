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
per-row recursion in Python would be hopelessly slow; a 9-tap separable FIR in torch is fast and, with
zero padding, has exactly the C++ border semantics (outputs near the border are darker, as in the C++).

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

if TYPE_CHECKING:
    import torch

__all__ = [
    "RecursiveGaussian",
    "blur_padded",
    "fir_blur",
    "gaussian_kernel",
    "padded_planes",
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


def padded_planes(
    planes: int, height: int, width: int, *, sigma: float = 1.5, like: "torch.Tensor"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """A zero-bordered ``planes x (H + 2R) x (W + 2R)`` buffer and its ``planes x H x W`` interior view.

    Writing the planes to blur straight into the interior (``torch.mul(a, b, out=interior[i])``) saves
    the copy that padding would otherwise make. Only the border is zeroed.
    """
    import torch

    r = len(_kernel(float(sigma))) // 2
    padded = torch.empty((planes, height + 2 * r, width + 2 * r), dtype=like.dtype, device=like.device)
    if r:
        padded[:, :r].zero_()
        padded[:, height + r :].zero_()
        padded[:, r : height + r, :r].zero_()
        padded[:, r : height + r, width + r :].zero_()
    return padded, padded[:, r : height + r, r : width + r]


#: Largest strip blurred at once, in samples (8 MB of float32).
_STRIP_SAMPLES = 1 << 21


def blur_padded(
    padded: "torch.Tensor",
    sigma: float = 1.5,
    *,
    out: "torch.Tensor | None" = None,
    rows_per_chunk: int | None = None,
) -> "torch.Tensor":
    """Blur a buffer from :func:`padded_planes` (zero border of ``R`` samples); returns ``P x H x W``.

    Horizontal pass then vertical pass (the order of libjxl's ``FastGaussian``), each a shift-and-add of
    ``2N - 1`` shifted slices. Large inputs are processed in horizontal strips (``rows_per_chunk`` output
    rows; by default as many as fit in 8 MB) so the intermediate stays in cache. Strips are kept large on
    purpose: every tensor operation is a parallel region, and on a busy machine each one can wait for a
    descheduled thread, so small strips (many operations) were up to 5x slower there.
    """
    import torch

    taps = _kernel(float(sigma))
    k = len(taps)
    r = k // 2
    planes, height, width = padded.shape[0], padded.shape[1] - 2 * r, padded.shape[2] - 2 * r
    if out is None:
        out = torch.empty((planes, height, width), dtype=padded.dtype, device=padded.device)
    if rows_per_chunk is None:
        rows_per_chunk = max(16, _STRIP_SAMPLES // max(1, planes * (width + 2 * r)) - 2 * r)
    rows = max(1, min(rows_per_chunk, height))
    tmp = torch.empty((planes, rows + 2 * r, width), dtype=padded.dtype, device=padded.device)
    for r0 in range(0, height, rows):
        n = min(rows, height - r0)
        src = padded[:, r0 : r0 + n + 2 * r]
        horiz = tmp[:, : n + 2 * r]
        torch.mul(src[..., 0:width], taps[0], out=horiz)
        for j in range(1, k):
            horiz.add_(src[..., j : j + width], alpha=taps[j])
        dst = out[:, r0 : r0 + n]
        torch.mul(horiz[:, 0:n], taps[0], out=dst)
        for j in range(1, k):
            dst.add_(horiz[:, j : j + n], alpha=taps[j])
    return out


def fir_blur(x: "torch.Tensor", sigma: float = 1.5) -> "torch.Tensor":
    """Blur the last two dimensions of ``x`` (``P x H x W``, float32) with zero borders, as libjxl does."""
    from ..errors import InvalidParameterError

    if x.dim() != 3:
        raise InvalidParameterError(f"fir_blur expects a P x H x W tensor, got shape {tuple(x.shape)}")
    padded, interior = padded_planes(x.shape[0], x.shape[1], x.shape[2], sigma=sigma, like=x)
    interior.copy_(x)
    return blur_padded(padded, sigma)
