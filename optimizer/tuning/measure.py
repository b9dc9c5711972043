"""Measuring settings on a study's corpus: encode, decode and score image by image, stopping early when
the result is already decided.

One measurement (a *probe*) encodes every corpus item with one set of settings and aggregates the quality
over the corpus (:mod:`optimizer.statistics`). Items are measured in the order given, usually hardest
first; with a bar, the probe stops as soon as the aggregate over the whole corpus can no longer reach it,
even if every remaining image scored the best possible value (exact: a probe reported failing does fail).
A passing probe always measures every image. Each (item, settings) pair is encoded once per process
(samplers and root finders revisit settings), and the number of fresh encodes is counted: it is the
unit of cost the benchmarks report.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..evaluator import Evaluator, ReferenceScorer
from ..metrics.registry import get_spec
from ..statistics import statistic
from .corpus import Corpus, CorpusItem
from .settings import EncodingSettings
from .target import COMPOSITE, Target

__all__ = ["CorpusMeter", "Probe", "image_quality"]


def image_quality(record: dict[str, Any], target: Target) -> float:
    """One image record's value of the quantity ``target`` is about."""
    return float(record["composite"] if target.metric == COMPOSITE else record["scores"][target.metric])


@dataclass
class Probe:
    """Settings measured on the corpus, or on its first images when the bar was already out of reach.

    ``images`` are per-image records in measurement order; ``quality`` is the aggregate of the target's
    quantity over them (over the whole corpus when ``complete``).
    """

    settings: EncodingSettings
    images: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    #: stopped after the hardest images because the bar would be met even if the rest scored their best:
    #: ``quality`` is then that optimistic aggregate (an estimate, to be confirmed on the whole corpus)
    optimistic: bool = False
    quality: float = math.nan
    total_bytes: int = 0
    pixels: int = 0
    encode_seconds: float = 0.0

    @property
    def bits_per_pixel(self) -> float:
        return self.total_bytes * 8.0 / self.pixels if self.pixels else math.nan


class CorpusMeter:
    """Measures settings on a corpus with one evaluator; reference-side work and encodes are cached."""

    def __init__(
        self, corpus: Corpus, evaluator: Evaluator, target: Target, aggregate_by: str, *, threads: int | None = None
    ) -> None:
        self.corpus = corpus
        self.evaluator = evaluator
        self.target = target
        self.aggregate_by = aggregate_by
        #: encoder threads per encode (None: the library default); worker processes set their share
        self.threads = threads
        #: fresh encodes of one corpus item (cache misses): the unit of cost
        self.encodes = 0
        self._scorers: list[ReferenceScorer] | None = None
        self._lock = threading.Lock()
        # Shared by the trial threads of ``n_jobs``: a race only measures the same settings twice.
        self._memo: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def scorers(self) -> list[ReferenceScorer]:
        """One cached reference scorer per corpus item, built once on first use (by one thread)."""
        if self._scorers is None:
            with self._lock:
                if self._scorers is None:
                    self._scorers = [self.evaluator.for_reference(item.reference) for item in self.corpus.items]
        return self._scorers

    def measure_item(self, index: int, settings: EncodingSettings) -> dict[str, Any]:
        """Encode, decode and score corpus item ``index`` with ``settings`` (at the item's width)."""
        item: CorpusItem = self.corpus.items[index]
        item_settings = settings.at_width(item.width)
        key = (item.name, json.dumps(item_settings.to_dict(), sort_keys=True))
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        encoded = item_settings.encode(item.source, threads=self.threads)
        result = self.scorers[index].score(encoded.decoded)
        record = {
            "name": item.name,
            "width": encoded.width,
            "height": encoded.height,
            "bytes": encoded.bytes,
            "bits_per_pixel": encoded.bits_per_pixel,
            "scores": dict(result.scores),
            "composite": result.composite,
            "encode_seconds": encoded.encode_seconds,
            "decode_seconds": encoded.decode_seconds,
            "score_seconds": result.seconds,
        }
        self._memo[key] = record
        self.encodes += 1
        return record

    def measure(
        self,
        settings: EncodingSettings,
        *,
        order: Sequence[int] | None = None,
        bar: Target | None = None,
        optimistic_after: int | None = None,
        on_image: Callable[[Probe], bool] | None = None,
    ) -> Probe:
        """Measure ``settings`` on the corpus items in ``order`` (default: corpus order).

        With ``bar``, stop as soon as the aggregate can no longer reach it (:meth:`certainly_fails`); with
        ``optimistic_after`` too, stop after that many images when the bar would be met even if every other
        image scored its best (the probe is then ``optimistic``: its quality is that best case, exact when
        the images measured are the hardest). ``on_image(probe)`` is called after each image; returning True
        stops the probe there too (a caller's own exact rule, such as trial pruning).
        """
        indices = list(order) if order is not None else list(range(len(self.corpus)))
        probe = Probe(settings)
        qualities: list[float] = []
        for index in indices:
            record = self.measure_item(index, settings)
            probe.images.append(record)
            probe.total_bytes += int(record["bytes"])
            probe.pixels += int(record["width"]) * int(record["height"])
            probe.encode_seconds += float(record["encode_seconds"])
            qualities.append(image_quality(record, self.target))
            probe.quality = self.target.aggregate(qualities, self.aggregate_by)
            if len(qualities) == len(indices):
                break
            if bar is not None and self.certainly_fails(qualities, bar):
                break
            if bar is not None and optimistic_after is not None and len(qualities) >= optimistic_after:
                best_case = self.best_case(qualities, bar)
                if bar.is_met(best_case):
                    probe.optimistic = True
                    probe.quality = best_case
                    break
            if on_image is not None and on_image(probe):
                break
        probe.complete = len(probe.images) == len(self.corpus)
        return probe

    def certainly_fails(self, qualities: Sequence[float], bar: Target) -> bool:
        """Whether the aggregate over the full corpus can no longer reach ``bar``, whatever the images not
        yet measured score.

        Every aggregate is monotone in each image's quality, so the probe is hopeless exactly when even
        the best possible score on every remaining image leaves the aggregate short of the bar.
        """
        if all(bar.is_met(q) for q in qualities):
            return False
        if bar.metric != COMPOSITE and math.isinf(bar.best_value):
            return False  # an unbounded best (PSNR) can rescue any mean or percentile
        return not bar.is_met(self.best_case(qualities, bar))

    def best_case(self, qualities: Sequence[float], bar: Target) -> float:
        """The aggregate over the whole corpus if every image not yet measured scored ``bar``'s best value."""
        remaining = len(self.corpus) - len(qualities)
        return bar.aggregate(list(qualities) + [bar.best_value] * remaining, self.aggregate_by)

    def deciding_images(self) -> int:
        """How many of the hardest images decide the aggregate (plus one to spare): a probe that measures
        them and would pass even if the rest scored their best is a good estimate of a pass. All of them
        for the mean, which every image moves."""
        n = len(self.corpus)
        if self.aggregate_by == "worst":
            return min(n, 2)
        if self.aggregate_by == "p10":
            return min(n, math.floor((n - 1) * 0.1) + 3)
        return n

    def aggregates(self, images: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Every metric's and the composite's aggregate over ``images``, each in its own direction."""
        out: dict[str, float] = {}
        for name in self.evaluator.metric_names:
            values = [float(img["scores"][name]) for img in images]
            out[name] = statistic(values, self.aggregate_by, higher_is_better=get_spec(name).higher_is_better)
        out[COMPOSITE] = statistic([img["composite"] for img in images], self.aggregate_by, higher_is_better=True)
        return out
