"""One image's search in one format: probes on the format's quality axis, cached, with a warm start.

Internal to ``compress`` (:mod:`optimizer.tuning.adaptive`): the per-format state of a run
(:class:`CompressRun`), an encoded and scored probe (:class:`Candidate`) and the search that finds the
smallest passing setting with :func:`~optimizer.tuning.rootfind.adaptive_search`. The search image is the
image itself or its proxy (:mod:`optimizer.tuning.proxy`); on a proxy it aims ``offset`` above the bar, in
the target's units. A lossless format (PNG, WebP with ``lossless``) has no axis: its one candidate is
probed once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codecs.base import Codec
from ..evaluator import Evaluator, ReferenceScorer
from ..imageio import ColorMode, Image, MetadataPolicy
from ..transforms import Transform
from .outputs import ExistingPolicy
from .proxy import GapModel
from .quality_axis import QualityAxis, prior_position, prior_slope, search_margin, target_level
from .rootfind import SearchTrace, adaptive_search, passes
from .target import COMPOSITE, Target

__all__ = ["Candidate", "CompressRun", "FormatAxis", "FormatSearch", "WarmStart", "shifted", "sort_margin"]


@dataclass(frozen=True)
class FormatAxis:
    """A format to search: its codec, its quality axis (``None``: a lossless candidate, one setting) and
    the fixed params."""

    codec: Codec
    axis: QualityAxis | None
    fixed: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def lossless(self) -> bool:
        return self.axis is None

    @property
    def size(self) -> int:
        """Positions to search (1 for a lossless candidate)."""
        return 1 if self.axis is None else len(self.axis)

    def params_at(self, position: int) -> dict[str, Any]:
        if self.axis is None:
            return self.codec.validate_params(self.fixed)
        return self.codec.validate_params({**self.fixed, self.axis.param: self.axis.value(position)})

    def setting_at(self, position: int) -> int | float | None:
        return None if self.axis is None else self.axis.value(position)

    def label_at(self, position: int) -> str:
        if self.axis is None:
            return f"{self.name} lossless"
        return f"{self.name} {self.axis.param}={self.axis.value(position):g}"


@dataclass(frozen=True)
class Candidate:
    format: FormatAxis
    position: int
    params: Mapping[str, Any]
    data: bytes
    value: float
    margin: float
    search_margin: float

    @property
    def setting(self) -> int | float | None:
        return self.format.setting_at(self.position)

    def label(self) -> str:
        return self.format.label_at(self.position)


@dataclass
class WarmStart:
    """Per format: the previous image's answer and the margin slope measured around it."""

    value: float | None = None
    slope: float | None = None


@dataclass
class CompressRun:
    """Everything fixed for one compress() call."""

    target: Target
    evaluator: Evaluator
    formats: list[FormatAxis]
    out_dir: Path | None
    transform: Transform | None
    max_probes: int | None
    keep_original_if_smaller: bool
    fallback: str
    prune: bool
    existing: ExistingPolicy = "error"
    metadata: MetadataPolicy | None = None
    color: ColorMode = "srgb"
    preserve_times: bool = False
    inputs: set[Path] = field(default_factory=set)
    warm: dict[str, WarmStart] = field(default_factory=dict)
    last_winner: str | None = None
    #: encoder threads per call (1 when images run in parallel; None: the library's default)
    threads: int | None = None
    #: smallest image searched on a proxy (:data:`~optimizer.tuning.proxy.PROXY_MIN_PIXELS`)
    proxy_min_pixels: int = 0
    gaps: GapModel = field(default_factory=lambda: GapModel(0.0))
    #: called with the image's label and a short description of each probe (progress within an image)
    on_probe: Callable[[str, str], None] | None = None
    #: Resize before the search, per image (``--max-width``/``--max-height``): the largest size that fits
    max_size: tuple[int | None, int | None] = (None, None)
    #: WebP lossless, tried beside lossy WebP when an image looks like it could win losslessly
    lossless_auto: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    local: threading.local = field(default_factory=threading.local, repr=False)
    #: set when the caller is interrupted: parallel images stop at their next probe
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def note_probe(self, text: str) -> None:
        """Report a probe of the image this thread is working on (and stop here if the run was interrupted)."""
        if self.cancelled.is_set():
            raise KeyboardInterrupt
        if self.on_probe is not None:
            self.on_probe(getattr(self.local, "label", ""), text)

    def record_winner(self, name: str) -> None:
        with self.lock:
            self.last_winner = name

    def transform_for(self, image: Image) -> Transform | None:
        """The run's transform, with a resize that fits ``image`` inside ``max_size`` (never enlarging)."""
        max_w, max_h = self.max_size
        if max_w is None and max_h is None:
            return self.transform
        scale = min(
            (max_w / image.width) if max_w is not None else 1.0,
            (max_h / image.height) if max_h is not None else 1.0,
        )
        if scale >= 1.0:
            return self.transform
        width = max(1, min(max_w or image.width, round(image.width * scale)))
        height = max(1, min(max_h or image.height, round(image.height * scale)))
        base = self.transform or Transform()
        return Transform(
            width=width,
            height=height,
            filter=base.filter,
            linear_light=base.linear_light,
            sharpen_amount=base.sharpen_amount,
            sharpen_radius=base.sharpen_radius,
            sharpen_threshold=base.sharpen_threshold,
        )

    def auto_lossless(self, lossy: list[FormatAxis]) -> list[FormatAxis]:
        """Lossless candidates tried without being asked for: WebP lossless beside lossy WebP."""
        if not self.lossless_auto:
            return []
        out = []
        for fmt in lossy:
            if fmt.name == "webp":
                fixed = {k: v for k, v in fmt.fixed.items() if k not in ("quality", "lossless")}
                out.append(FormatAxis(fmt.codec, None, {**fixed, "lossless": True}))
        return out

    @property
    def probe_metrics(self) -> list[str] | None:
        """Metrics scored while searching: the target's alone, or all of them for the composite."""
        return None if self.target.metric == COMPOSITE else [self.target.metric]


class FormatSearch:
    """One format's search on one image (or its proxy), with its probe cache."""

    def __init__(
        self, fmt: FormatAxis, image: Image, scorer: ReferenceScorer, run: CompressRun, *, proxy: bool = False
    ) -> None:
        self.format = fmt
        self.image = image
        self.scorer = scorer
        self.run_state = run
        self.on_proxy = proxy
        self.cache: dict[int, Candidate] = {}
        self.trace: SearchTrace | None = None
        self.extra_probes = 0
        self.answer: Candidate | None = None
        self.walked = False
        self.note: str | None = None

    @property
    def probes(self) -> int:
        return len(self.cache)

    def probe(self, position: int) -> Candidate:
        cached = self.cache.get(position)
        if cached is not None:
            return cached
        fmt, run = self.format, self.run_state
        params = fmt.params_at(position)
        run.note_probe(f"{fmt.label_at(position)}{' on the proxy' if self.on_proxy else ''}")
        data = fmt.codec.encode(self.image, params, threads=run.threads, metadata=run.metadata)
        result = self.scorer.score(fmt.codec.decode(data), metrics=run.probe_metrics)
        target = run.target
        value = target.value_of(result)
        candidate = Candidate(fmt, position, params, data, value, target.margin(value), search_margin(target, value))
        self.cache[position] = candidate
        return candidate

    def run(self, best_bytes: int | None, *, offset: float = 0.0, floor: int = 0) -> None:
        """Search for the lowest position whose probe passes ``offset`` above the bar (no lower than
        ``floor``); ``best_bytes``: another format's passing size, for pruning."""
        run, fmt = self.run_state, self.format
        if fmt.axis is None:
            self.answer = self.probe(0)
            return
        axis = fmt.axis
        goal = shifted(run.target, offset)
        with run.lock:
            warm = run.warm.setdefault(fmt.name, WarmStart())
            warm_value, warm_slope = warm.value, warm.slope
        guess = axis.position(warm_value) if warm_value is not None else prior_position(axis, target_level(goal))
        size = len(axis) - floor

        def margin_at(i: int) -> float:
            return search_margin(goal, self.probe(i + floor).value)

        def stop(i: int, margin: float) -> bool:
            data = self.cache[i + floor].data
            return best_bytes is not None and not passes(margin) and len(data) >= best_bytes

        trace = adaptive_search(
            margin_at,
            size,
            guess=max(guess - floor, 0),
            slope=warm_slope if warm_slope is not None else prior_slope(axis, goal),
            max_probes=run.max_probes,
            stop=stop if run.prune and best_bytes is not None else None,
        )
        self.trace = trace
        self.answer = self.cache[trace.answer + floor] if trace.answer is not None else None
        if trace.answer is not None:
            with run.lock:
                warm.value = axis.values[trace.answer + floor]
                warm.slope = trace.slope() or warm.slope
        self.note = None
        if trace.stopped:
            self.note = f"search stopped: its failing settings were already no smaller than {best_bytes:,} bytes"
        elif trace.exhausted and not trace.certified:
            self.note = f"search budget of {run.max_probes} probes ran out"
        elif trace.answer is None:
            self.note = f"no setting in {axis.describe()} meets {run.target}"

    def certified(self) -> bool:
        """Whether the answer is the lowest passing setting (the one below it was probed and failed)."""
        return bool(self.trace is not None and self.trace.certified and not self.walked and self.answer is not None)

    def walk_up(self, candidate: Candidate) -> Candidate | None:
        """The next better setting that passes its probe (after a failed check of ``candidate``)."""
        self.walked = True
        position = candidate.position + 1
        while position < self.format.size:
            fresh = position not in self.cache
            nxt = self.probe(position)
            self.extra_probes += int(fresh)
            if passes(nxt.margin):
                self.answer = nxt
                return nxt
            position += 1
        self.answer = None
        self.note = f"no setting above {candidate.label()} passed the check of the written file"
        return None


def shifted(target: Target, offset: float) -> Target:
    """``target`` made ``offset`` stricter (in its own units), kept inside the metric's possible values."""
    if offset == 0.0:
        return target
    step = offset if target.higher_is_better else -offset
    value = target.value + step
    best = target.best_value
    if math.isfinite(best):
        value = min(value, best) if target.higher_is_better else max(value, best)
    if target.metric == COMPOSITE:
        value = min(max(value, 0.0), 1.0)
    return Target(target.metric, value)


def sort_margin(margin: float) -> float:
    return -math.inf if math.isnan(margin) else margin
