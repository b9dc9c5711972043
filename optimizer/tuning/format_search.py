"""One image's search in one format: probes on the format's quality axis, cached, with a warm start.

Internal to ``compress`` (:mod:`optimizer.tuning.adaptive`): the per-format state of a run
(:class:`CompressRun`), an encoded and scored probe (:class:`Candidate`) and the search that finds the
smallest passing setting with :func:`~optimizer.tuning.rootfind.adaptive_search`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codecs.base import Codec
from ..evaluator import Evaluator, ReferenceScorer
from ..imageio import ColorMode, Image, MetadataPolicy
from ..transforms import Transform
from .compress_report import FormatOutcome
from .outputs import ExistingPolicy
from .quality_axis import QualityAxis, prior_position, prior_slope, search_margin, target_level
from .rootfind import SearchTrace, adaptive_search, passes
from .target import COMPOSITE, Target

__all__ = ["Candidate", "CompressRun", "FormatAxis", "FormatSearch", "WarmStart", "sort_margin"]


@dataclass(frozen=True)
class FormatAxis:
    codec: Codec
    axis: QualityAxis
    fixed: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.codec.name

    def params_at(self, position: int) -> dict[str, Any]:
        return self.codec.validate_params({**self.fixed, self.axis.param: self.axis.value(position)})


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
    def setting(self) -> int | float:
        return self.format.axis.value(self.position)

    def label(self) -> str:
        return f"{self.format.name} {self.format.axis.param}={self.setting:g}"


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

    @property
    def probe_metrics(self) -> list[str] | None:
        """Metrics scored while searching: the target's alone, or all of them for the composite."""
        return None if self.target.metric == COMPOSITE else [self.target.metric]


class FormatSearch:
    """One format's search on one image, with its probe cache."""

    def __init__(self, fmt: FormatAxis, image: Image, scorer: ReferenceScorer, run: CompressRun) -> None:
        self.format = fmt
        self.image = image
        self.scorer = scorer
        self.run_state = run
        self.cache: dict[int, Candidate] = {}
        self.trace: SearchTrace | None = None
        self.extra_probes = 0
        self.answer: Candidate | None = None
        self.walked = False
        self.note: str | None = None

    @property
    def probes(self) -> int:
        return (self.trace.probes if self.trace is not None else 0) + self.extra_probes

    def probe(self, position: int) -> Candidate:
        cached = self.cache.get(position)
        if cached is not None:
            return cached
        fmt = self.format
        params = fmt.params_at(position)
        data = fmt.codec.encode(self.image, params, metadata=self.run_state.metadata)
        result = self.scorer.score(fmt.codec.decode(data), metrics=self.run_state.probe_metrics)
        target = self.run_state.target
        value = target.value_of(result)
        candidate = Candidate(fmt, position, params, data, value, target.margin(value), search_margin(target, value))
        self.cache[position] = candidate
        return candidate

    def run(self, best_bytes: int | None) -> None:
        run, fmt = self.run_state, self.format
        warm = run.warm.setdefault(fmt.name, WarmStart())
        if warm.value is not None:
            guess = fmt.axis.position(warm.value)
        else:
            guess = prior_position(fmt.axis, target_level(run.target))

        def stop(position: int, margin: float) -> bool:
            data = self.cache[position].data
            return best_bytes is not None and not passes(margin) and len(data) >= best_bytes

        trace = adaptive_search(
            lambda p: self.probe(p).search_margin,
            len(fmt.axis),
            guess=guess,
            slope=warm.slope if warm.slope is not None else prior_slope(fmt.axis, run.target),
            max_probes=run.max_probes,
            stop=stop if run.prune else None,
        )
        self.trace = trace
        self.answer = self.cache[trace.answer] if trace.answer is not None else None
        if trace.answer is not None:
            warm.value = fmt.axis.values[trace.answer]
            warm.slope = trace.slope() or warm.slope
        if trace.stopped:
            self.note = f"search stopped: its failing settings were already no smaller than {best_bytes:,} bytes"
        elif trace.exhausted and not trace.certified:
            self.note = f"search budget of {run.max_probes} probes ran out"
        elif trace.answer is None:
            self.note = f"no setting in {fmt.axis.describe()} meets {run.target}"

    def walk_up(self, candidate: Candidate) -> Candidate | None:
        """The next better setting that passes its probe (after a failed check of ``candidate``)."""
        self.walked = True
        position = candidate.position + 1
        while position < len(self.format.axis):
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

    def outcome(self) -> FormatOutcome:
        trace = self.trace
        best = self.answer
        if best is None and self.cache:
            best = max(self.cache.values(), key=lambda c: (sort_margin(c.margin), -len(c.data)))
        return FormatOutcome(
            format=self.format.name,
            axis=self.format.axis.param,
            probes=self.probes,
            met=self.answer is not None,
            setting=best.setting if best is not None else None,
            params=dict(best.params) if best is not None else None,
            bytes=len(best.data) if best is not None else None,
            quality=best.value if best is not None else None,
            certified=bool(trace is not None and trace.certified and not self.walked and self.answer is not None),
            note=self.note,
        )


def sort_margin(margin: float) -> float:
    return -math.inf if math.isnan(margin) else margin
