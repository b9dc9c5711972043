"""Separable Gaussian filtering, the MS-SSIM pyramid step and reusable scratch buffers.

The filter works on the *valid* region only: an ``H x W`` plane comes out ``(H - 2r) x (W - 2r)`` for a
window of radius ``r``. That single convention serves both references SSIM is checked against:

* pytorch-msssim convolves without padding, which is the valid region by definition;
* skimage filters with ``mode='reflect'`` and then crops ``(win_size - 1) // 2`` pixels from every side
  before averaging. With ``truncate=3.5`` and sigma 1.5 the window has radius 5 and 11 taps, so the crop
  equals the radius and every kept pixel's window lies wholly inside the image: the padding never enters.

So the valid maps computed once serve SSIM and MS-SSIM alike. Only the full-size SSIM heat map needs the
padding, which :func:`symmetric_pad` reproduces (scipy's ``'reflect'`` repeats the edge sample:
``d c b a | a b c d | d c b a``; torch's ``'reflect'`` does not).

The filter is written as shift-and-add over strided views rather than a depthwise convolution: for an
11-tap kernel on a few full-size float32 planes it runs several times faster than ``conv2d`` on CPU and
needs no im2col buffers.
"""

from __future__ import annotations

import functools
import math
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "Workspace",
    "downsample2",
    "gaussian_taps",
    "symmetric_pad",
    "valid_filter",
]


@functools.lru_cache(maxsize=16)
def gaussian_taps(sigma: float = 1.5, truncate: float = 3.5) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights with scipy's radius ``int(truncate * sigma + 0.5)``.

    Computed in float64 and rounded to float32 once, because the filter runs in float32 and torch would
    round each ``alpha`` the same way.
    """
    import numpy as np

    if not (sigma > 0 and truncate > 0):
        raise ValueError(f"sigma and truncate must be positive, got sigma={sigma}, truncate={truncate}")
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return tuple(float(v) for v in g.astype(np.float32))


def valid_filter(
    planes: "torch.Tensor",
    taps: tuple[float, ...],
    *,
    out: "torch.Tensor",
    tmp: "torch.Tensor",
) -> "torch.Tensor":
    """Filter ``P x H x W`` planes separably with ``taps`` (vertical then horizontal), valid region only.

    ``tmp`` must be ``P x (H - n + 1) x W`` and ``out`` ``P x (H - n + 1) x (W - n + 1)`` for ``n`` taps;
    both are overwritten. The vertical pass goes first: its shifted views are contiguous row blocks, and the
    horizontal pass then runs on fewer rows. Returns ``out``.
    """
    import torch

    n = len(taps)
    h = planes.shape[-2] - n + 1
    w = planes.shape[-1] - n + 1
    torch.mul(planes[:, 0:h], taps[0], out=tmp)
    for i in range(1, n):
        tmp.add_(planes[:, i : i + h], alpha=taps[i])
    torch.mul(tmp[:, :, 0:w], taps[0], out=out)
    for i in range(1, n):
        out.add_(tmp[:, :, i : i + w], alpha=taps[i])
    return out


def downsample2(image: "torch.Tensor") -> "torch.Tensor":
    """One MS-SSIM pyramid step: 2x2 average pooling of ``C x H x W`` planes.

    Odd sides follow pytorch-msssim, the implementation MS-SSIM is checked against (``avg_pool2d`` with
    ``padding=side % 2``): a zero row (column) is put before the first one and counted in the average, so
    the output side is ``ceil(side / 2)``. Even sides, the usual case, are a plain 2x2 mean. Written as two
    strided adds, which on CPU runs several times faster than ``avg_pool2d``.
    """
    import torch
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    if h % 2 or w % 2:
        image = F.pad(image, (w % 2, 0, h % 2, 0))
    rows = image[..., 0::2, :] + image[..., 1::2, :]
    return torch.add(rows[..., 0::2], rows[..., 1::2]).mul_(0.25)


def symmetric_pad(image: "torch.Tensor", radius: int) -> "torch.Tensor":
    """Pad the last two dims by ``radius`` repeating the edge sample (scipy ``mode='reflect'``)."""
    import torch

    h, w = image.shape[-2:]
    if radius > min(h, w):
        raise ValueError(f"cannot pad a {w}x{h} image by {radius} with one reflection")
    dev = image.device
    rows = torch.cat(
        [
            torch.arange(radius - 1, -1, -1, device=dev),
            torch.arange(h, device=dev),
            torch.arange(h - 1, h - 1 - radius, -1, device=dev),
        ]
    )
    cols = torch.cat(
        [
            torch.arange(radius - 1, -1, -1, device=dev),
            torch.arange(w, device=dev),
            torch.arange(w - 1, w - 1 - radius, -1, device=dev),
        ]
    )
    return image.index_select(-2, rows).index_select(-1, cols)


class Workspace:
    """Float32 scratch buffers reused across calls, one set per thread and device.

    Every trial scores candidates of the same size, and allocating (and page-faulting) tens of megabytes
    of fresh planes per call costs as much as some of the arithmetic. A buffer only ever grows, to the
    largest image seen, and callers get a view of the size they ask for. Views are valid until the next
    request under the same name in the same thread: never return one or store it.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, name: str, shape: tuple[int, ...], device: "torch.device") -> "torch.Tensor":
        import torch

        pool: dict[tuple[str, torch.device], torch.Tensor] = self._local.__dict__.setdefault("pool", {})
        n = math.prod(shape)
        key = (name, device)
        buf = pool.get(key)
        if buf is None or buf.numel() < n:
            pool.pop(key, None)  # free the old one before allocating its successor
            buf = torch.empty(n, dtype=torch.float32, device=device)
            pool[key] = buf
        return buf[:n].view(shape)

    def clear(self) -> None:
        """Drop this thread's buffers (memory comes back on the next garbage collection)."""
        self._local.__dict__.pop("pool", None)
