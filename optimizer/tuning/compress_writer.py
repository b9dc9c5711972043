"""Writing one image's outcome: the chosen file checked from disk, the original kept, or the fallback.

Internal to ``compress`` (:mod:`optimizer.tuning.adaptive`). The file written is the exact bytes that
were scored; it takes its final name only once read back from disk and scored again
(:func:`~optimizer.tuning.outputs.write_output`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, OptimizerError
from ..evaluator import EvaluationResult, ReferenceScorer
from ..imageio import load_image
from .compress_report import CompressResult
from .format_search import Candidate, CompressRun, FormatSearch, sort_margin
from .outputs import OutputJob, output_path, write_output

__all__ = ["ImageWriter", "format_of"]


class ImageWriter:
    """Writes, verifies and reports one image's outcome."""

    def __init__(
        self,
        job: OutputJob,
        run: CompressRun,
        scorer: ReferenceScorer,
        searches: list[FormatSearch],
        original_bytes: int | None,
        width: int,
        height: int,
        started: float,
    ) -> None:
        self.job = job
        self.run = run
        self.scorer = scorer
        self.searches = searches
        self.original_bytes = original_bytes
        self.width = width
        self.height = height
        self.started = started

    def _path(self, extension: str) -> Path | None:
        if self.run.out_dir is None:
            return None
        return output_path(self.run.out_dir, self.job, extension)

    def _write_checked(
        self, data: bytes, path: Path | None, *, must_meet: bool = False
    ) -> tuple[EvaluationResult, bool]:
        """Write ``data``, read the file back, decode and score those bytes: (scores, whether kept).

        The file goes through a temporary name and takes its final name only once scored, and, with
        ``must_meet``, only when it meets the target (otherwise nothing is left on disk). Without an output
        folder the in-memory bytes are decoded and scored instead.
        """
        target = self.run.target

        def acceptable(result: EvaluationResult) -> bool:
            return not must_meet or target.is_met(target.value_of(result))

        if path is None:
            result = self.scorer.score(load_image(data, name=self.job.label, color="keep"))
            return result, acceptable(result)
        original = self.job.original
        if original is not None and path.resolve() == original.resolve():
            if original.read_bytes() != data:
                raise InvalidParameterError(
                    f"refusing to overwrite the input {original} with its compressed version; "
                    "choose another output folder"
                )
            result = self.scorer.score(load_image(path, color="keep"))
            return result, acceptable(result)
        scored: list[EvaluationResult] = []

        def check(written: Path) -> bool:  # the complete temporary file, read back from disk
            scored.append(self.scorer.score(load_image(written.read_bytes(), name=str(path), color="keep")))
            return acceptable(scored[-1])

        times_from = original if self.run.preserve_times else None
        kept = write_output(path, data, check, times_from=times_from)
        return scored[-1], kept

    def write_and_verify(self, candidate: Candidate, search: FormatSearch) -> CompressResult | None:
        """Write ``candidate`` if the written file meets the target; ``None`` (nothing written) otherwise."""
        path = self._path(candidate.format.codec.extension)
        result, kept = self._write_checked(candidate.data, path, must_meet=True)
        if not kept:
            return None
        reason = None
        if self.original_bytes is not None and len(candidate.data) > self.original_bytes:
            reason = f"the output is larger than the original ({len(candidate.data):,} > {self.original_bytes:,} bytes)"
        return self._result(
            candidate.format.name,
            dict(candidate.params),
            candidate.data,
            path,
            result,
            met=True,
            kept_original=False,
            reason=reason,
            chosen=search,
        )

    def keep_original(self, *, met: bool, reason: str, chosen: FormatSearch | None) -> CompressResult:
        original = self.job.original
        if original is None:  # pragma: no cover - callers check original_bytes first
            raise InvalidParameterError("there is no original file to keep")
        data = original.read_bytes()
        path = self._path(original.suffix)
        result, _ = self._write_checked(data, path)
        return self._result(
            format_of(original), {}, data, path, result, met=met, kept_original=True, reason=reason, chosen=chosen
        )

    def fallback(self) -> CompressResult:
        """Nothing met the target: keep the best-quality candidate, or the original, and say why."""
        run = self.run
        candidates = [c for s in self.searches for c in s.cache.values()]
        best = max(candidates, key=lambda c: (sort_margin(c.margin), -len(c.data))) if candidates else None
        notes = "; ".join(f"{s.format.name}: {s.note}" for s in self.searches if s.note)
        head = f"no setting of {', '.join(s.format.name for s in self.searches)} met {run.target}"
        if best is not None:
            head += f" (best: {best.label()} scored {best.value:.4g})"
        if notes:
            head += f" [{notes}]"
        owner = next((s for s in self.searches if best is not None and s.format is best.format), None)
        use_original = self.original_bytes is not None and (
            run.fallback == "original" or best is None or self.original_bytes <= len(best.data)
        )
        if use_original:
            why = (
                "the original was kept"
                if run.fallback == "original" or best is None
                else (f"the original was kept, being no larger ({self.original_bytes:,} bytes) than the best candidate")
            )
            return self.keep_original(met=False, reason=f"{head}; {why}", chosen=owner)
        if best is None:  # pragma: no cover - every search probes at least once
            raise InvalidParameterError(f"{self.job.label}: nothing was encoded")
        path = self._path(best.format.codec.extension)
        result, _ = self._write_checked(best.data, path)
        return self._result(
            best.format.name,
            dict(best.params),
            best.data,
            path,
            result,
            met=False,
            kept_original=False,
            reason=f"{head}; the best-quality candidate was kept",
            chosen=owner,
        )

    def _result(
        self,
        fmt: str,
        params: dict[str, Any],
        data: bytes,
        path: Path | None,
        result: EvaluationResult,
        *,
        met: bool,
        kept_original: bool,
        reason: str | None,
        chosen: FormatSearch | None,
    ) -> CompressResult:
        outcomes = tuple(s.outcome() for s in self.searches)
        minimal = bool(met and not kept_original and chosen is not None and chosen.outcome().certified)
        return CompressResult(
            input=self.job.label,
            output=str(path) if path is not None else None,
            format=fmt,
            params=params,
            bytes=len(data),
            original_bytes=self.original_bytes,
            width=self.width,
            height=self.height,
            quality=self.run.target.value_of(result),
            target=str(self.run.target),
            met=met,
            kept_original=kept_original,
            minimal=minimal,
            probes={s.format.name: s.probes for s in self.searches},
            formats=outcomes,
            scores=dict(result.scores),
            seconds=time.perf_counter() - self.started,
            reason=reason,
            data=data if path is None else None,
        )


def format_of(path: Path) -> str:
    """The codec name for a file's extension, or the bare extension when no codec writes it."""
    from ..codecs import codec_for_extension

    try:
        return codec_for_extension(path.suffix, require_available=False).name
    except OptimizerError:
        return path.suffix.lstrip(".").lower() or "original"
