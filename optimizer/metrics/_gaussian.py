"""Short separable filters run as small matrix products, their Gaussian taps, and reusable scratch buffers.

Both blurs the metrics need are short separable FIR filters: SSIM's Gaussian (sigma 1.5, 11 taps, valid
region) and SSIMULACRA 2's recursive Gaussian (9 taps, zero borders; see :mod:`._recursive_gaussian`).
:class:`BandFilter` applies one to a stripe of rows with four small matrix products instead of ``2n``
shift-and-add passes:

* vertically, every block of ``B`` output rows is a ``B x (B + n - 1)`` band matrix times the ``B + n - 1``
  input rows under it (one batched product over all blocks and planes);
* horizontally, a row is cut into blocks of ``B`` columns; an output block is its own input block times a
  ``B x B`` band matrix, plus the first columns of the next block (and, for a centred filter, the last
  columns of the previous one) times two small matrices. Rows are laid out with a stride of whole blocks
  and at least one block of zero padding, so viewing a stripe as one tall ``(rows * blocks) x B`` matrix
  makes the neighbouring blocks the neighbouring matrix rows: three products filter every row at once.

Stripes interleave their planes row by row (``rows x planes x stride``), so that the vertical pass is a single
batched product over all planes, reading the overlapping row blocks in place.

On CPU the products run in BLAS at a fraction of the cost of ``2n`` memory-bound passes (about 0.7 ns per
sample and plane for both passes against 3 ns on the 2-core machines; see benchmarks/RESULTS.md). The
result is the same FIR filter up to float32 summation order (a few 1e-7). Band matrices are mostly zeros:
the zeros multiply finite data (every buffer is zero-filled before use), so they add exact zeros.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["BLOCK", "BandFilter", "Workspace", "gaussian_taps"]

#: Rows and columns per block of the band matrices; stripes are a whole number of blocks tall.
BLOCK = 16


@functools.lru_cache(maxsize=16)
def gaussian_taps(sigma: float = 1.5, truncate: float = 3.5) -> tuple[float, ...]:
    """Normalised 1-D Gaussian weights with scipy's radius ``int(truncate * sigma + 0.5)``.

    Computed in float64 and rounded to float32 once, because the filter runs in float32.
    """
    import numpy as np

    if not (sigma > 0 and truncate > 0):
        raise ValueError(f"sigma and truncate must be positive, got sigma={sigma}, truncate={truncate}")
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    return tuple(float(v) for v in g.astype(np.float32))


class BandFilter:
    """The separable filter ``out[i, c] = sum_a sum_b k[a] k[b] src[i + a, c + b - left]`` on row stripes.

    ``left`` is how many taps reach left of the output column: 0 for a valid-region filter (output column
    ``c`` reads input columns ``c .. c + n - 1``), ``n // 2`` for a centred one over zero-bordered rows.
    Vertically the filter is always valid: a stripe of ``R`` output rows reads ``R + halo`` input rows, and a
    caller that wants zero borders puts zero rows above and below the image.
    """

    def __init__(self, taps: Sequence[float], *, left: int, block: int = BLOCK) -> None:
        n = len(taps)
        if n < 1 or not 0 <= left < n or block < n:
            raise ValueError(f"need 0 <= left < taps <= block, got {n} taps, left {left}, block {block}")
        self.taps = tuple(float(t) for t in taps)
        self.left = left
        self.block = block
        self.halo = n - 1
        self._matrices: dict[tuple[str, int | None], tuple[torch.Tensor, ...]] = {}
        self._lock = threading.Lock()

    def stride(self, width: int) -> int:
        """Row stride of stripes ``width`` samples wide: whole blocks, the last one (at least) all padding."""
        return (-(-width // self.block) + 1) * self.block

    def rows(self, count: int) -> int:
        """``count`` output rows rounded up to whole blocks: what :meth:`__call__` computes."""
        return -(-count // self.block) * self.block

    def _band(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = (device.type, device.index)
        cached = self._matrices.get(key)
        if cached is not None:
            return cached
        import numpy as np
        import torch

        k, n, b, left = self.taps, len(self.taps), self.block, self.left
        vertical = np.zeros((b, b + n - 1), dtype=np.float32)
        within = np.zeros((b, b), dtype=np.float32)
        after = np.zeros((max(n - 1 - left, 1), b), dtype=np.float32)
        before = np.zeros((max(left, 1), b), dtype=np.float32)
        for i in range(b):
            vertical[i, i : i + n] = k
        for c in range(b):  # output column c of a block reads input columns c - left .. c - left + n - 1
            for j in range(n):
                t = c + j - left
                if t < 0:
                    before[t + left, c] = k[j]  # last `left` columns of the previous block
                elif t < b:
                    within[t, c] = k[j]
                else:
                    after[t - b, c] = k[j]  # first columns of the next block
        mats = tuple(torch.from_numpy(m).to(device) for m in (vertical, within, after, before))
        with self._lock:
            self._matrices[key] = mats
        return mats

    def __call__(self, src: torch.Tensor, *, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
        """Filter ``(R + halo) x P x S`` rows into ``out`` (``R x P x S``), through ``tmp`` (the same shape).

        Rows are interleaved: row ``i`` of every plane, then row ``i + 1``, so one batched product filters
        all planes. ``R`` is a whole number of blocks and ``S`` a :meth:`stride`; ``src`` must be contiguous
        (it may be the top rows of a taller buffer), finite, and zero in its padding columns (from the
        image width up to ``S``), which then hold meaningless values in ``out``. Returns ``out``.
        """
        import torch

        vertical, within, after, before = self._band(src.device)
        rows, planes, stride = out.shape
        b, n = self.block, len(self.taps)
        if rows % b or stride % b or src.shape != (rows + n - 1, planes, stride) or not src.is_contiguous():
            raise ValueError(
                f"stripe shapes do not fit the band filter: src {tuple(src.shape)}, out {tuple(out.shape)}"
            )
        # Vertical: blocks of b output rows, each from the b + n - 1 input rows under it (overlapping views).
        row = planes * stride
        blocks = src.as_strided((rows // b, b + n - 1, row), (b * row, row, 1), src.storage_offset())
        torch.bmm(vertical.expand(rows // b, b, b + n - 1), blocks, out=tmp.view(rows // b, b, row))
        # Horizontal: every row as consecutive blocks of b columns; the next matrix row is the next block.
        a = tmp.view(-1, b)
        o = out.view(-1, b)
        torch.mm(a, within, out=o)
        if n - 1 - self.left > 0:
            o[:-1].addmm_(a[1:, : n - 1 - self.left], after)
        if self.left > 0:
            o[1:].addmm_(a[:-1, b - self.left :], before)
        return out


class Workspace:
    """Float32 scratch buffers reused across calls, one set per thread and device.

    Every trial scores candidates of the same size, and allocating (and page-faulting) megabytes of fresh
    stripes per call costs as much as some of the arithmetic. A buffer only ever grows, to the largest
    request seen (stripes are bounded, so it stays bounded whatever the image size), and callers get a view
    of the size they ask for. Views are valid until the next request under the same name in the same
    thread: never return one or store it beyond the call.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
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

    def nbytes(self) -> int:
        """Bytes held by this thread's buffers."""
        pool = self._local.__dict__.get("pool", {})
        return sum(int(b.numel()) * b.element_size() for b in pool.values())

    def clear(self) -> None:
        """Drop this thread's buffers (memory comes back on the next garbage collection)."""
        self._local.__dict__.pop("pool", None)
