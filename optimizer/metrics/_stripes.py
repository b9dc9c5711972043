"""Scoring in stripes of rows: a working set that does not grow with the image.

A full-reference metric at photo scale cannot afford whole-image planes: SSIMULACRA 2 needs about ten
float32 planes per scale, SSIM fifteen, and at 15 MP each plane is 60 MB. The metrics here stream rows of
both images through their scales instead. A :class:`StreamedScale` stages the rows it receives; when the
stage is full it pools them 2x2 into the next, coarser scale and hands them to the metric
(:meth:`StreamedScale._consume`), which writes its filter inputs into a :class:`RowWindow`: one stripe of
output rows plus the rows its filter reaches below them. When the window is full the metric filters the
stripe, pools its error maps into running sums, and slides the window down, keeping only the overlap.

Memory per scale is a few stripes, independent of the image height; stripes are sized by samples, so a
wide image gets shorter ones, and a coarse scale or a small image is a single stripe (and a handful of
tensor operations, which is what keeps small images fast: every operation costs a few microseconds of
dispatch whatever its size).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Literal

from ._gaussian import BLOCK, Workspace

if TYPE_CHECKING:
    import torch

__all__ = ["REFERENCE_CACHE_BYTES", "STRIPE_SAMPLES", "RowWindow", "StreamedScale", "pool_pairs", "stripe_rows"]

#: Samples per plane in one stripe at full resolution; each coarser scale gets half as many (it has a quarter
#: of the rows, so it still needs only half as many stripes). Large stripes mean few tensor operations, which
#: is what counts most: every operation pays a dispatch, and on a busy machine each parallel one may wait for
#: a descheduled thread. Memory is the limit: the scratch buffers of the `default` profile come to about
#: 55 MiB at this setting for a 5120-pixel-wide image (16-row stripes), whatever its height; twice the
#: setting roughly doubles them.
STRIPE_SAMPLES = 1 << 17

#: Default budget, per metric, for keeping the reference's side of the error maps between candidates.
#: Small references (the usual tuning corpus) fit and each candidate costs a third less; photo-size ones do
#: not, and are recomputed with every candidate so that memory stays bounded.
REFERENCE_CACHE_BYTES = 64 << 20

Odd = Literal["replicate", "zero_first"]


def stripe_rows(width: int, height: int, scale: int = 0, samples: int | None = None) -> int:
    """Output rows per stripe for a scale ``width`` wide: about ``samples`` (default :data:`STRIPE_SAMPLES`,
    halved for each ``scale`` below full resolution) per plane, whole blocks, and no more than the scale
    needs (so small images and coarse scales are one stripe)."""
    samples = (STRIPE_SAMPLES if samples is None else samples) >> scale
    rows = max(BLOCK, samples // max(width, 1) // BLOCK * BLOCK)
    return min(rows, -(-height // BLOCK) * BLOCK)


def pool_pairs(top: torch.Tensor, bottom: torch.Tensor, out: torch.Tensor, odd: Odd) -> None:
    """2x2 averages of row pairs (``top[:, i]`` with ``bottom[:, i]``) into ``out`` (``C x n x ceil(W/2)``).

    ``odd="replicate"`` (SSIMULACRA 2, as the C++ tool clamps indices): an odd last column is averaged with
    itself. ``odd="zero_first"`` (MS-SSIM, as pytorch-msssim pads before ``avg_pool2d``): an odd width
    gets a zero column before its first one, counted in the average.
    """
    import torch

    s = torch.add(top, bottom)
    w = s.shape[-1]
    if w % 2 == 0:
        torch.add(s[..., 0::2], s[..., 1::2], out=out)
    elif odd == "replicate":
        torch.add(s[..., 0 : w - 1 : 2], s[..., 1:w:2], out=out[..., : w // 2])
        torch.add(s[..., w - 1 :], s[..., w - 1 :], out=out[..., w // 2 :])
    else:
        out[..., :1].copy_(s[..., :1])
        torch.add(s[..., 1::2], s[..., 2::2], out=out[..., 1:])
    out.mul_(0.25)


class RowWindow:
    """The filter inputs of one stripe: ``rows + halo`` rows of ``P`` planes (rows interleaved: ``rows x P x
    stride``, as :class:`~._gaussian.BandFilter` takes them).

    Image rows enter at the bottom (:meth:`take` returns the ``n x P x width`` view to write them into);
    when the window is :attr:`full`, the owner filters the stripe and calls :meth:`slide`, which moves the
    last ``halo`` rows to the top. The buffer is zero-filled at the start, so its padding columns (from
    ``width`` to the stride) and rows not yet written are zeros.
    """

    def __init__(self, buffer: torch.Tensor, *, rows: int, halo: int, width: int) -> None:
        if buffer.shape[0] != rows + halo or halo > rows or buffer.shape[2] < width:
            raise ValueError(f"window buffer {tuple(buffer.shape)} does not fit {rows}+{halo} rows of {width}")
        buffer.zero_()
        self.buffer = buffer
        self.rows = rows
        self.halo = halo
        self.width = width
        self.filled = 0

    @property
    def free(self) -> int:
        return self.rows + self.halo - self.filled

    @property
    def full(self) -> bool:
        return self.filled == self.rows + self.halo

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` rows (``n x P x width``) to write image rows into."""
        if not 0 < n <= self.free:
            raise ValueError(f"cannot take {n} rows, {self.free} free")
        view = self.buffer[self.filled : self.filled + n, :, : self.width]
        self.filled += n
        return view

    def zeros(self, n: int) -> None:
        """Append ``n`` zero rows (a zero border below or above the image)."""
        if n:
            self.take(n).zero_()

    def slide(self) -> None:
        """Keep the last ``halo`` rows as the top of the next stripe."""
        if self.halo:
            self.buffer[: self.halo].copy_(self.buffer[self.rows : self.rows + self.halo])
        self.filled = self.halo


class StreamedScale(ABC):
    """One scale of a streamed pyramid: stages incoming rows of ``channels`` planes (both images' colour
    planes), pools them 2x2 into ``next_scale`` and hands them to the metric in batches of ``rows``.

    The owner of the finest scale writes rows into :meth:`take` views and calls :meth:`commit`; coarser
    scales get theirs from the scale above. :meth:`finish`, once every row is in, flushes the stage, lets
    the metric finish its last stripes (:meth:`_finish`), and finishes the coarser scales in turn.
    ``odd`` is the pooling rule for odd sides (see :func:`pool_pairs`); with ``"zero_first"`` an odd height
    also gets a zero row before the first one.
    """

    def __init__(
        self,
        *,
        height: int,
        width: int,
        channels: int,
        rows: int,
        next_scale: StreamedScale | None,
        odd: Odd,
        workspace: Workspace,
        name: str,
        device: torch.device,
    ) -> None:
        import torch

        self.height = height
        self.width = width
        self.next = next_scale
        self.odd: Odd = odd
        self.device = device
        self._stage = workspace.get(f"{name}:stage", (channels, rows, width), device)
        self._staged = 0
        self._pending: torch.Tensor | None = None
        if next_scale is not None and odd == "zero_first" and height % 2:
            self._pending = torch.zeros((channels, 1, width), dtype=torch.float32, device=device)

    @property
    def free(self) -> int:
        return self._stage.shape[1] - self._staged

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` staged rows (``channels x n x width``) to write into; then call :meth:`commit`."""
        if not 0 < n <= self.free:
            raise ValueError(f"cannot stage {n} rows, {self.free} free")
        view = self._stage[:, self._staged : self._staged + n]
        self._staged += n
        return view

    def commit(self) -> None:
        """Flush the stage when it is full."""
        if self._staged == self._stage.shape[1]:
            self._flush()

    def finish(self) -> None:
        """Every row is in: flush, finish this scale's stripes, then the coarser scales."""
        self._flush()
        self._finish()
        if self.next is not None:
            if self._pending is not None:  # an odd last row (replicate rule): averaged with itself
                self._pool_into_next(self._pending, self._pending)
                self._pending = None
            self.next.finish()

    def _flush(self) -> None:
        if not self._staged:
            return
        rows = self._stage[:, : self._staged]
        if self.next is not None:
            self._pool(rows)
        self._consume(rows)
        self._staged = 0

    def _pool(self, rows: torch.Tensor) -> None:
        """Pool the staged rows, after a row left over from the last flush, into the next scale."""
        if self._pending is not None and rows.shape[1]:
            self._pool_into_next(self._pending, rows[:, :1])
            self._pending = None
            rows = rows[:, 1:]
        pairs = rows.shape[1] // 2
        if pairs:
            self._pool_into_next(rows[:, 0 : 2 * pairs : 2], rows[:, 1 : 2 * pairs : 2])
        if rows.shape[1] % 2:
            self._pending = rows[:, -1:].clone()  # the stage is overwritten before its partner arrives

    def _pool_into_next(self, top: torch.Tensor, bottom: torch.Tensor) -> None:
        nxt = self.next
        assert nxt is not None
        done, n = 0, top.shape[1]
        while done < n:
            m = min(n - done, nxt.free)
            pool_pairs(top[:, done : done + m], bottom[:, done : done + m], nxt.take(m), self.odd)
            nxt.commit()
            done += m

    @abstractmethod
    def _consume(self, rows: torch.Tensor) -> None:
        """Take the next image rows of this scale (``channels x n x width``, a view of the stage)."""

    @abstractmethod
    def _finish(self) -> None:
        """Every row of this scale has been consumed: compute the last stripes."""
