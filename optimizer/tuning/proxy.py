"""A small stand-in for a large image, searched instead of it, and the gap between the two learned as a run goes.

At photo scale one encode and one score of the whole image cost seconds, and a search needs several. The
search runs on a **proxy** instead: a mosaic of tiles cut from the image at its native resolution, chosen
at evenly spaced quantiles of local activity (mean absolute luma gradient), so the flat sky, the middling
texture and the busiest regions are all represented in proportion, the hardest ones included. Tiles are
256 pixels square and aligned to a 256-pixel grid, which every codec's block grid divides (JPEG 8/16, WebP
16, AVIF 64), so tile edges fall on block edges.

Measured on 15-20 megapixel photographs (``benchmarks/bench_compress_scale.py``, RESULTS.md), the tile
mosaic predicts the full-size SSIMULACRA 2 of the same setting within about 1.5 points near usual targets
and reads a little *high* (it over-predicts), while a 4x downscale misses by 2-7 points with a sign that
changes with the codec. Proxy bytes times the pixel ratio predict full-size bytes within about 10%.

The proxy is only a guide: :class:`GapModel` records, per format, the difference between the full-size
margin and the proxy margin at every setting checked at full size, and the next search aims that much
higher (per image as it goes, and across the images of a batch). Nothing is written on the proxy's word:
the file written is always checked at full size, from disk (:mod:`optimizer.tuning.compress_writer`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from ..imageio import Image
from ..statistics import statistic

__all__ = ["PROXY_MIN_PIXELS", "GapModel", "Proxy", "build_proxy"]

#: Images with fewer pixels are searched at full size: below this a proxy saves too little to pay for the
#: full-size confirmation it needs (a 4 MP image has four times the proxy's pixels).
PROXY_MIN_PIXELS = 4_000_000
#: Side of one tile, in pixels.
TILE = 256
#: Tiles in the mosaic (a 4 x 4 mosaic of 256-pixel tiles: one megapixel).
TILES = 16
#: The margin a first search aims above the bar before any full-size check in its format, in the target's
#: normalised units (:func:`~optimizer.metrics.registry.MetricSpec.normalise`; SSIMULACRA 2 points / 100):
#: the tile mosaic read 0.3-1.6 points high near SSIMULACRA 2 80 on the benchmark photos.
PRIOR_GAP = 0.012


@dataclass(frozen=True)
class Proxy:
    """The proxy image, where its tiles came from (``(x, y)`` of each tile's top-left corner) and the
    share of the full image's pixels it holds."""

    image: Image
    origins: tuple[tuple[int, int], ...]
    tile: int
    fraction: float

    def describe(self) -> str:
        return (
            f"{len(self.origins)} tiles of {self.tile}x{self.tile} ({self.image.width}x{self.image.height}, "
            f"{self.fraction:.1%} of the pixels)"
        )


def build_proxy(
    image: Image, *, tile: int = TILE, tiles: int = TILES, min_pixels: int = PROXY_MIN_PIXELS
) -> Proxy | None:
    """The tile mosaic of ``image`` (see the module doc), or ``None`` when it has fewer than ``min_pixels``.

    Args:
        image: The encoder's input (alpha is carried along tile by tile).
        tile: Tile side in pixels.
        tiles: Number of tiles (laid out in a square-ish mosaic, filled row by row).
        min_pixels: Smallest image that gets a proxy.

    Returns:
        The :class:`Proxy`, or ``None`` for an image searched at full size.
    """
    columns, rows = image.width // tile, image.height // tile
    if image.pixels < min_pixels or columns * rows < tiles:
        return None
    activity = _tile_activity(image.rgb, tile, rows, columns)
    order = np.argsort(activity, kind="stable")
    picks = sorted({int(order[round(i * (len(order) - 1) / (tiles - 1))]) for i in range(tiles)})
    origins = tuple(((i % columns) * tile, (i // columns) * tile) for i in picks)
    side = math.ceil(math.sqrt(len(origins)))
    height = math.ceil(len(origins) / side)
    rgb = np.empty((height * tile, side * tile, 3), dtype=np.float32)
    alpha = None if image.alpha is None else np.empty((height * tile, side * tile), dtype=np.float32)
    for slot in range(side * height):
        x, y = origins[slot % len(origins)]  # a last row left short repeats the first tiles
        r, c = divmod(slot, side)
        rgb[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = image.rgb[y : y + tile, x : x + tile]
        if alpha is not None and image.alpha is not None:
            alpha[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = image.alpha[y : y + tile, x : x + tile]
    mosaic = Image(rgb, alpha, source=f"{image.source or 'image'} (proxy)", info=image.info)
    return Proxy(mosaic, origins, tile, mosaic.pixels / image.pixels)


def _tile_activity(rgb: np.ndarray, tile: int, rows: int, columns: int) -> np.ndarray:
    """Mean absolute luma gradient of every grid tile, row by row (one tile row in memory at a time)."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    out = np.empty(rows * columns, dtype=np.float64)
    for r in range(rows):
        luma = rgb[r * tile : (r + 1) * tile, : columns * tile] @ weights
        gradient = np.abs(np.diff(luma, axis=1))[:-1] + np.abs(np.diff(luma, axis=0))[:, :-1]
        # each tile's mean over its own interior (the last column and row of gradients straddle tiles)
        per_tile = gradient[:, : columns * tile - 1].reshape(tile - 1, -1)
        for c in range(columns):
            out[r * columns + c] = float(per_tile[:, c * tile : c * tile + tile - 1].mean())
    return out


@dataclass
class GapModel:
    """Per format, the full-size margin minus the proxy margin at the settings checked at full size.

    :meth:`offset` is how far above the bar the next proxy search aims, in the target's own units: the
    largest gap seen in this format (the proxy read that much high), or :data:`PRIOR_GAP` scaled to the
    target's units before the first check. Shared by the images of a run (thread-safe).
    """

    prior: float
    gaps: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, fmt: str, proxy_margin: float, full_margin: float) -> None:
        """Remember one full-size check: the gap ``proxy_margin - full_margin`` (positive: the proxy read high)."""
        if math.isfinite(proxy_margin) and math.isfinite(full_margin):
            with self._lock:
                self.gaps.setdefault(fmt, []).append(proxy_margin - full_margin)

    def offset(self, fmt: str) -> float:
        """The margin a proxy search in ``fmt`` should aim above the bar (never below zero)."""
        with self._lock:
            seen = list(self.gaps.get(fmt, ()))
        if not seen:
            return self.prior
        return max(0.0, statistic(seen[-8:], "median") + 0.25 * self.prior)
