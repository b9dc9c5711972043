"""Admission by memory: request bodies held at once, and the working memory of the scoring they ask for.

Counting requests is not enough to keep a server alive: forty stalled 24 MB uploads held a gigabyte before
any of them reached the work pool, and two 4000x4000 one-bit PNGs fit in a 4 KB request yet took 5.8 GB to
score. So every work request holds a :class:`Ticket` on two :class:`MemoryBudget` s:

* ``uploads``: the bytes of its body, counted chunk by chunk while it streams in (503 ``overloaded`` with
  ``reason: "uploads"`` once the bodies held by all requests would pass ``max_buffered_bytes``);
* ``work``: the memory its decoding and scoring will take, estimated from the images' headers before any
  pixel is decoded (:func:`header_pixels`) times a measured figure per pixel (:func:`work_bytes`): 413
  ``too_much_memory`` when one request alone needs more than the whole ``memory_budget``, 503 ``overloaded``
  with ``reason: "memory"`` while the running and queued requests leave too little of it.

A ticket is released when its job has really ended (a job past its timeout keeps its memory until it
stops), or when the request ends without reaching the pool.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable, Iterable

from ..evaluator import Profile
from .errors import ServiceError

__all__ = [
    "COMPRESS_BYTES_PER_PIXEL",
    "METRIC_BYTES_PER_PIXEL",
    "PAIR_BYTES_PER_PIXEL",
    "MemoryBudget",
    "Ticket",
    "header_pixels",
    "largest",
    "work_bytes",
]

#: Peak memory of scoring one pair, in bytes per pixel of one image: both images decoded, their tensors and
#: every metric's planes. Measured with ``benchmarks/bench_service_memory.py`` (CPU, 1000x1000 and
#: 1500x1500 PNG pairs, peak RSS over the RSS before the pair; the learned backbones with random weights of
#: the same shapes), the larger of the two rounded up by a few percent.
PAIR_BYTES_PER_PIXEL: dict[str, int] = {"fast": 320, "default": 410, "perceptual": 450, "seed": 2100}

#: The same for ``/compress`` on one image of that many pixels (the search decodes and scores candidates).
COMPRESS_BYTES_PER_PIXEL: dict[str, int] = {"fast": 340, "default": 500}

#: Each metric alone, decoding included, for profiles not measured above.
METRIC_BYTES_PER_PIXEL: dict[str, int] = {
    "psnr": 85,
    "ssim": 295,
    "ms_ssim": 315,
    "ssimulacra2": 250,
    "lpips": 225,
    "dists": 1850,
    "stlpips": 1170,
}

#: What every metric's figure includes: decoding both images and their tensors (PSNR alone is little more).
_SHARED_BYTES_PER_PIXEL = METRIC_BYTES_PER_PIXEL["psnr"]
#: A metric missing from the table is counted like the costliest known one.
_UNKNOWN_METRIC_BYTES_PER_PIXEL = max(METRIC_BYTES_PER_PIXEL.values())
#: Compressing costs about this much more than scoring a pair (measured: fast 1.06x, default 1.22x).
_COMPRESS_FACTOR = 1.25


def work_bytes(profile: Profile, pixels: int, *, compress: bool = False) -> int:
    """Estimated peak memory of scoring a pair (or compressing one image) of ``pixels`` pixels.

    Args:
        profile: the profile whose metrics run (the loaded evaluator's).
        pixels: width x height of the images.
        compress: estimate ``/compress`` rather than scoring a pair.

    Returns:
        Bytes. Measured profiles use their figure; others add up their metrics beyond the shared decoding
        (an over-estimate: metrics run one after another).
    """
    table = COMPRESS_BYTES_PER_PIXEL if compress else PAIR_BYTES_PER_PIXEL
    per_pixel = table.get(profile.name)
    if per_pixel is None:
        metrics = [name for name, weight in profile.weights.items() if weight > 0] or list(profile.weights)
        per_pixel = _SHARED_BYTES_PER_PIXEL + sum(
            max(0, METRIC_BYTES_PER_PIXEL.get(name, _UNKNOWN_METRIC_BYTES_PER_PIXEL) - _SHARED_BYTES_PER_PIXEL)
            for name in metrics
        )
        if compress:
            per_pixel = math.ceil(per_pixel * _COMPRESS_FACTOR)
    return per_pixel * max(0, pixels)


def header_pixels(data: bytes) -> int | None:
    """Width x height from an image's header, without decoding pixels (``None`` when it cannot be read).

    Pillow parses the headers of the formats the loader accepts; JPEG XL and anything unreadable give
    ``None`` (the loader will size or refuse them itself).

    Args:
        data: the file's bytes.

    Returns:
        The pixel count, or ``None``.
    """
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - any failure means "unknown": decoding will report it properly
        return None
    return int(width) * int(height) if width > 0 and height > 0 else None


_PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM", "TGA")


class MemoryBudget:
    """Bytes that admitted requests may hold at once (thread-safe: worker threads take from it too).

    Args:
        name: what is counted, for messages (``uploads``, ``memory``).
        limit: bytes.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self.on_change: Callable[[int], None] | None = None

    @property
    def used(self) -> int:
        """Bytes held now."""
        return self._used

    def take(self, count: int) -> bool:
        """Hold ``count`` more bytes if they fit.

        Args:
            count: bytes.

        Returns:
            Whether they were taken.
        """
        with self._lock:
            if self._used + count > self.limit:
                return False
            self._used += count
            used = self._used
        self._changed(used)
        return True

    def give(self, count: int) -> None:
        """Return ``count`` bytes.

        Args:
            count: bytes taken earlier.
        """
        with self._lock:
            self._used = max(0, self._used - count)
            used = self._used
        self._changed(used)

    def _changed(self, used: int) -> None:
        hook = self.on_change
        if hook is not None:
            hook(used)


class Ticket:
    """One request's hold on the upload and work budgets; :meth:`release` returns everything (idempotent).

    Args:
        uploads: the budget for request bodies.
        work: the budget for scoring memory.
        retry_after: seconds a refused client should wait (asked when refusing).
        on_refused: called with the budget's name when a hold is refused with 503.
    """

    def __init__(
        self,
        uploads: MemoryBudget,
        work: MemoryBudget,
        *,
        retry_after: Callable[[], int],
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self._uploads = uploads
        self._work = work
        self._retry_after = retry_after
        self._on_refused = on_refused
        self._held = {"uploads": 0, "work": 0}
        self._lock = threading.Lock()
        self._released = False

    @property
    def upload_bytes(self) -> int:
        """Body bytes held by this request."""
        return self._held["uploads"]

    @property
    def work_bytes(self) -> int:
        """Scoring memory held by this request."""
        return self._held["work"]

    def hold_upload(self, count: int) -> None:
        """Count ``count`` more body bytes; 503 ``overloaded`` when the bodies held would pass the budget.

        Args:
            count: bytes just received.
        """
        self._hold(self._uploads, "uploads", count)

    def hold_work(self, count: int, *, what: str, exact: bool = True) -> None:
        """Reserve ``count`` bytes of scoring memory for this request.

        Args:
            count: the estimate (:func:`work_bytes`).
            what: what needs it, for the messages (``"scoring 2 images of 4000x4000"``).
            exact: ``False`` when the size was not known and ``count`` is a worst case: it is then cut to
                the whole budget instead of being refused with 413.

        Raises:
            ServiceError: 413 ``too_much_memory`` when ``count`` exceeds the whole budget, 503 ``overloaded``
                while other requests hold too much of it.
        """
        limit = self._work.limit
        if count > limit:
            if exact:
                raise ServiceError(
                    413,
                    "too_much_memory",
                    f"{what} needs about {_gb(count)} of memory, more than this server's budget of {_gb(limit)}: "
                    "send smaller images",
                    limit=limit,
                    needed=count,
                )
            count = limit
        self._hold(self._work, "work", count)

    def hold_images(
        self, profile: Profile, sizes: Iterable[int | None], *, max_pixels: int, compress: bool = False
    ) -> None:
        """Reserve the scoring memory for images of these sizes, scored one group after another.

        Args:
            profile: the profile of the evaluator that will score them.
            sizes: each image's pixel count from its header (``None``: unknown, so ``max_pixels`` is assumed
                and the reservation never exceeds the whole budget).
            max_pixels: the per-image limit; larger images are counted at it (decoding refuses them).
            compress: estimate ``/compress`` instead of scoring pairs.
        """
        known = list(sizes)
        if not known:
            return
        pixels = largest(known)
        count = max_pixels if pixels is None else min(pixels, max_pixels)
        what = f"{'compressing an image' if compress else 'scoring images'} of {count:,} pixels"
        self.hold_work(work_bytes(profile, count, compress=compress), what=what, exact=pixels is not None)

    def _hold(self, budget: MemoryBudget, key: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            if self._released:
                raise RuntimeError("the ticket was released")
            if not budget.take(count):
                taken = False
            else:
                self._held[key] += count
                taken = True
        if not taken:
            if self._on_refused is not None:
                self._on_refused(budget.name)
            retry_after = self._retry_after()
            raise ServiceError(
                503,
                "overloaded",
                f"the server's {budget.name} budget is in use ({_gb(budget.used)} of {_gb(budget.limit)} held by "
                f"other requests, this one needs {_gb(count)} more); retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
                retry_after=retry_after,
                reason=budget.name,
            )

    def release(self) -> None:
        """Give back everything this request holds; later calls do nothing."""
        with self._lock:
            if self._released:
                return
            self._released = True
            held, self._held = self._held, {"uploads": 0, "work": 0}
        self._uploads.give(held["uploads"])
        self._work.give(held["work"])


def largest(values: Iterable[int | None]) -> int | None:
    """The largest known value, ``None`` if any is unknown (a worst case must then be assumed).

    Args:
        values: pixel counts, ``None`` where unknown.

    Returns:
        The maximum, or ``None``.
    """
    found = 0
    for value in values:
        if value is None:
            return None
        found = max(found, value)
    return found


def _gb(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 10_000_000 else f"{count / 1e6:.1f} MB"
