"""Writing one image's outcome: files checked from disk before they take their name, the original kept, or the
fallback.

Internal to ``compress`` (:mod:`optimizer.tuning.adaptive`). A candidate is **checked** by writing its exact
bytes to a temporary file next to the output, reading that file back, decoding it and scoring it at full
size (:meth:`ImageWriter.check`); the file takes its final name only when it is chosen
(:meth:`ImageWriter.commit`), and is removed otherwise. Nothing is ever written on the strength of a probe
or a proxy. Without an output folder the in-memory bytes are decoded and scored the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._files import commit_staged, discard_staged, source_times, stage_file
from ..errors import InvalidParameterError, OptimizerError
from ..evaluator import EvaluationResult, ReferenceScorer
from ..imageio import load_image
from .compress_memory import channel_first, return_freed_memory
from .compress_report import CompressResult, FormatOutcome
from .format_search import CompressRun
from .outputs import OutputJob, output_path

__all__ = ["Checked", "ImageWriter", "format_of"]


@dataclass
class Checked:
    """Bytes written to a temporary file (``staged``; None without an output folder or when the file is the
    input itself) and scored from disk."""

    data: bytes
    path: Path | None
    staged: Path | None
    result: EvaluationResult
    value: float
    passed: bool


class ImageWriter:
    """Checks, writes and reports one image's outcome."""

    def __init__(
        self,
        job: OutputJob,
        run: CompressRun,
        scorer: Callable[[], ReferenceScorer],
        original_bytes: int | None,
        width: int,
        height: int,
        started: float,
    ) -> None:
        self.job = job
        self.run = run
        self._scorer = scorer
        self.original_bytes = original_bytes
        self.width = width
        self.height = height
        self.started = started
        self.checks = 0

    def _path(self, extension: str) -> Path | None:
        if self.run.out_dir is None:
            return None
        return output_path(self.run.out_dir, self.job, extension)

    def check(self, data: bytes, extension: str) -> Checked:
        """Stage ``data`` as the output with ``extension``, read it back from disk and score it at full size."""
        self.checks += 1
        target = self.run.target
        path = self._path(extension)
        staged: Path | None = None
        if path is None:
            source: Any = data
        else:
            original = self.job.original
            if original is not None and path.resolve() == original.resolve():
                if original.read_bytes() != data:
                    raise InvalidParameterError(
                        f"refusing to overwrite the input {original} with its compressed version; "
                        "choose another output folder"
                    )
                source = path.read_bytes()
            else:
                times = source_times(original) if original is not None and self.run.preserve_times else None
                staged = stage_file(path, data, times)
                try:
                    source = staged.read_bytes()  # the complete file, read back from disk
                except BaseException:
                    discard_staged(staged)
                    raise
        try:
            decoded = channel_first(load_image(source, name=str(path) if path else self.job.label, color="keep"))
            return_freed_memory()  # the decoder's buffers, before the score's own peak
            result = self._scorer().score(decoded)
            del decoded
        except BaseException:
            if staged is not None:
                discard_staged(staged)
            raise
        value = target.value_of(result)
        return Checked(data, path, staged, result, value, target.is_met(value))

    def discard(self, checked: Checked) -> None:
        if checked.staged is not None:
            discard_staged(checked.staged)
            checked.staged = None

    def commit(self, checked: Checked) -> None:
        """Give a checked file its final name."""
        if checked.staged is not None and checked.path is not None:
            commit_staged(checked.staged, checked.path)
            checked.staged = None

    def keep_original(
        self, *, met: bool, reason: str, chosen: str | None, outcomes: tuple[FormatOutcome, ...]
    ) -> CompressResult:
        original = self.job.original
        if original is None:  # pragma: no cover - callers check original_bytes first
            raise InvalidParameterError("there is no original file to keep")
        data = original.read_bytes()
        checked = self.check(data, original.suffix)
        self.commit(checked)
        return self.result(
            format_of(original), {}, checked, met=met, kept_original=True, reason=reason, outcomes=outcomes
        )

    def write_unchecked_best(self, data: bytes, extension: str) -> Checked:
        """Write the fallback (it failed the target; the score read back from disk is reported)."""
        checked = self.check(data, extension)
        self.commit(checked)
        return checked

    def result(
        self,
        fmt: str,
        params: dict[str, Any],
        checked: Checked,
        *,
        met: bool,
        kept_original: bool,
        reason: str | None,
        outcomes: tuple[FormatOutcome, ...],
        minimal: bool = False,
        predicted_minimal: bool = False,
        proxy: str | None = None,
    ) -> CompressResult:
        data = checked.data
        return CompressResult(
            input=self.job.label,
            output=str(checked.path) if checked.path is not None else None,
            format=fmt,
            params=params,
            bytes=len(data),
            original_bytes=self.original_bytes,
            width=self.width,
            height=self.height,
            quality=checked.value,
            target=str(self.run.target),
            met=met,
            kept_original=kept_original,
            minimal=minimal,
            probes={o.format: o.probes for o in outcomes},
            formats=outcomes,
            scores=dict(checked.result.scores),
            seconds=time.perf_counter() - self.started,
            reason=reason,
            data=data if checked.path is None else None,
            proxy=proxy,
            predicted_minimal=predicted_minimal,
        )


def format_of(path: Path) -> str:
    """The codec name for a file's extension, or the bare extension when no codec writes it."""
    from ..codecs import codec_for_extension

    try:
        return codec_for_extension(path.suffix, require_available=False).name
    except OptimizerError:
        return path.suffix.lstrip(".").lower() or "original"
