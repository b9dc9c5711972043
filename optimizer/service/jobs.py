"""The CPU work behind the endpoints, as plain functions that run in the work pool (no HTTP in here).

Evaluators are built and loaded once, at start-up, one per allowed profile (:class:`Models`); requests only
choose among them. A request naming ``metrics`` is scored by the smallest loaded evaluator that computes
them all, and its composite is recomputed with the weights the request implies (equal weights over the
named metrics, or the profile's when a profile is named too), so no request ever builds a model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..batch import IMAGE_EXTENSIONS, BatchReport, PairIssue, PairResult
from ..errors import ImageSizeMismatchError, InvalidImageError, OptimizerError, UnknownNameError
from ..evaluator import EvaluationResult, Evaluator, get_profile
from ..imageio import ColorMode, Image, load_image
from ..jsonio import json_safe
from ..metrics.registry import get_spec
from .archives import InputIssue, read_zip_pairs
from .config import ServiceConfig
from .errors import ServiceError, from_exception
from .uploads import Upload

__all__ = ["Models", "ScoringPlan", "compress_upload", "evaluate_batch", "evaluate_single", "pair_payload"]


@dataclass(frozen=True)
class ScoringPlan:
    """Which loaded evaluator scores a request, which of its metrics, and whose weights make the composite.

    Args:
        source: the loaded evaluator that computes the scores.
        composer: the evaluator whose weights make the composite (``source`` itself, or a cheap custom one).
        metrics: the subset of ``source``'s metrics to compute (``None``: all).
    """

    source: Evaluator
    composer: Evaluator
    metrics: tuple[str, ...] | None = None

    @property
    def profile(self) -> str:
        """The composite's profile name (``custom`` for a metrics list)."""
        return self.composer.profile.name

    def describe(self) -> dict[str, Any]:
        """The evaluator description reports carry (profile, weights, metrics, versions).

        Returns:
            A JSON-compatible dict.
        """
        return self.composer.describe()


class Models:
    """One loaded :class:`Evaluator` per allowed profile.

    Args:
        config: the service's settings (profiles, device, whether weights may be downloaded).
    """

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.evaluators: dict[str, Evaluator] = {
            name: Evaluator(profile=name, device=config.device) for name in config.profiles
        }

    def load(self) -> None:
        """Build every metric now (weights included): a missing file stops start-up, not a request.

        Network weights are downloaded only where the config allows it (``allow_download``).
        """
        for evaluator in self.evaluators.values():
            evaluator.load(allow_download=self.config.allow_download)

    def warm_up(self) -> None:
        """Score one small synthetic pair per profile, so the first request pays no first-call costs."""
        import numpy as np

        rng = np.random.default_rng(0)
        base = rng.random((64, 64, 3), dtype=np.float32)
        reference = Image(base)
        distorted = Image((np.round(base * 16.0) / 16.0).astype(np.float32))
        for evaluator in self.evaluators.values():
            evaluator.evaluate(reference, distorted)

    @property
    def metric_names(self) -> list[str]:
        """Every metric some loaded evaluator computes, in profile order."""
        return list(dict.fromkeys(m for ev in self.evaluators.values() for m in ev.metric_names))

    def evaluator(self, profile: str | None) -> Evaluator:
        """The loaded evaluator of ``profile`` (the default one when ``None``); 422 when it is not enabled.

        Args:
            profile: a profile name.

        Returns:
            The evaluator.
        """
        name = profile or self.config.default_profile
        evaluator = self.evaluators.get(name)
        if evaluator is None:
            try:
                get_profile(name)
                problem = "is not enabled on this server"
            except UnknownNameError:
                problem = "does not exist"
            raise ServiceError(
                422,
                "unknown_name",
                f"profile {name!r} {problem}; enabled: {', '.join(self.evaluators)}",
                kind="profile",
                name=name,
                known=list(self.evaluators),
            )
        return evaluator

    def plan(self, profile: str | None, metrics: Sequence[str] | None) -> ScoringPlan:
        """The :class:`ScoringPlan` for a request's ``profile`` and ``metrics`` (422 for what is not loaded).

        Args:
            profile: the profile named, if any.
            metrics: the metrics named, if any.

        Returns:
            The plan.
        """
        names = list(dict.fromkeys(metrics or ()))
        if not names:
            evaluator = self.evaluator(profile)
            return ScoringPlan(evaluator, evaluator)
        for name in names:
            get_spec(name)
        if profile is not None:
            composer = Evaluator(profile=self.evaluator(profile).profile, metrics=names, device=self.config.device)
        else:
            composer = Evaluator(metrics=names, device=self.config.device)
        needed = composer.metric_names
        candidates = [ev for ev in self.evaluators.values() if set(needed) <= set(ev.metric_names)]
        if not candidates:
            missing = [m for m in needed if m not in self.metric_names]
            raise ServiceError(
                422,
                "unknown_name",
                f"metric(s) {', '.join(missing) or ', '.join(needed)} are not loaded by this server"
                + ("" if missing else " in one profile")
                + f"; available: {', '.join(self.metric_names)}",
                kind="metric",
                name=",".join(missing or needed),
                known=self.metric_names,
            )
        source = min(candidates, key=lambda ev: len(ev.metric_names))
        subset = None if set(needed) == set(source.metric_names) else tuple(needed)
        return ScoringPlan(source, composer, subset)

    def compress_evaluator(self, profile: str | None, metric: str) -> Evaluator:
        """The evaluator for a compress target on ``metric``.

        ``composite`` uses the profile's (the default one when none is named). A metric uses the named
        profile's evaluator when it computes the metric, else the smallest loaded one that does.

        Args:
            profile: the profile the request names, if any.
            metric: the target's metric.

        Returns:
            A loaded evaluator.
        """
        if metric == "composite":
            return self.evaluator(profile)
        if profile is not None and metric in self.evaluator(profile).metric_names:
            return self.evaluator(profile)
        default = self.evaluator(None)
        if metric in default.metric_names:
            return default
        candidates = [ev for ev in self.evaluators.values() if metric in ev.metric_names]
        if not candidates:
            raise ServiceError(
                422,
                "unknown_name",
                f"metric {metric!r} is not loaded by this server; available: {', '.join(self.metric_names)}",
                kind="metric",
                name=metric,
                known=self.metric_names,
            )
        return min(candidates, key=lambda ev: len(ev.metric_names))


# --------------------------------------------------------------------------------------------------
# Evaluation


def _load(upload: Upload, max_pixels: int, color: ColorMode = "srgb") -> Image:
    try:
        return load_image(upload.data, max_pixels=max_pixels, name=upload.label, color=color)
    except InvalidImageError as exc:
        if upload.filename is None and len(upload.data) < 4096 and upload.data.isascii():
            hint = f"field {upload.field!r} holds {len(upload.data)} bytes of text, not an image file (curl: -F {upload.field}=@PATH)"
            raise InvalidImageError(f"{exc}; {hint}") from None
        raise


def _score(plan: ScoringPlan, original: Upload, processed: Upload, max_pixels: int) -> EvaluationResult:
    reference = _load(original, max_pixels)
    distorted = _load(processed, max_pixels)
    if reference.size != distorted.size:
        raise ImageSizeMismatchError(
            f"expected equal sizes, got {reference.width}x{reference.height} (original {original.label!r}) and "
            f"{distorted.width}x{distorted.height} (processed {processed.label!r})"
        )
    raw = plan.source.for_reference(reference).score(distorted, metrics=plan.metrics)
    if plan.composer is plan.source:
        return raw
    return plan.composer.result_from_scores(
        raw.scores,
        width=raw.width,
        height=raw.height,
        reference=raw.reference,
        distorted=raw.distorted,
        seconds=raw.seconds,
    )


def pair_payload(key: str, original: Upload, processed: Upload, result: EvaluationResult) -> dict[str, Any]:
    """The JSON of one scored pair: the batch report's pair shape (bytes, bits per pixel, every score).

    Args:
        key: the pair's key.
        original: the reference upload.
        processed: the processed upload.
        result: its evaluation.

    Returns:
        The JSON-safe dict.
    """
    pair = PairResult(key, original.label, processed.label, result, original.size, processed.size)
    payload: dict[str, Any] = json_safe(pair.to_dict())
    return payload


def evaluate_single(
    plan: ScoringPlan, original: Upload, processed: Upload, max_pixels: int
) -> tuple[dict[str, Any], EvaluationResult]:
    """One pair's JSON and its result (for the metrics); errors are raised for the app to map.

    Args:
        plan: how to score.
        original: the reference upload.
        processed: the processed upload.
        max_pixels: the per-image pixel limit.

    Returns:
        ``(payload, result)``.
    """
    result = _score(plan, original, processed, max_pixels)
    return pair_payload(processed.label, original, processed, result), result


def read_archive(archive: Upload, config: ServiceConfig) -> tuple[list[tuple[str, Upload, Upload]], list[InputIssue]]:
    """The pairs of a batch archive under the config's limits, and the entries left out.

    Args:
        archive: the uploaded zip.
        config: the limits (entries, bytes, ratio, pairs).

    Returns:
        ``(pairs, issues)``; see :func:`~optimizer.service.archives.read_zip_pairs`.
    """
    return read_zip_pairs(
        archive.data,
        image_extensions=IMAGE_EXTENSIONS,
        max_entries=config.max_zip_entries,
        max_file_bytes=config.max_file_bytes,
        max_total_bytes=config.max_request_bytes,
        max_ratio=config.max_zip_ratio,
        max_pairs=config.max_batch_pairs,
    )


def evaluate_batch(
    plan: ScoringPlan,
    config: ServiceConfig,
    *,
    pairs: list[tuple[str, Upload, Upload]] | None = None,
    archive: Upload | None = None,
    issues: list[InputIssue] | None = None,
    cancelled: threading.Event | None = None,
) -> tuple[dict[str, Any], list[EvaluationResult]]:
    """Score explicit pairs, or the pairs of a zip archive; failures are listed per pair, never raised.

    Args:
        plan: which evaluator scores and whose weights compose.
        config: the limits.
        pairs: ``(key, original, processed)`` triples.
        archive: a zip to read the pairs from instead.
        issues: inputs already left out (unpaired fields).
        cancelled: once set, the remaining pairs are listed as timed out.

    Returns:
        The response body and the results (for the metrics).
    """
    issues = list(issues or [])
    if archive is not None:
        pairs, zip_issues = read_archive(archive, config)
        issues += zip_issues
    scored: list[PairResult] = []
    payloads: list[dict[str, Any]] = []
    results: list[EvaluationResult] = []
    for key, original, processed in pairs or []:
        if cancelled is not None and cancelled.is_set():
            issues.append(InputIssue(processed.label, "not scored: the request ran out of time", "failed", "timeout"))
            continue
        try:
            result = _score(plan, original, processed, config.max_pixels)
        except OptimizerError as exc:
            issues.append(InputIssue(processed.label, str(exc), "failed", from_exception(exc).type))
            continue
        except MemoryError:
            issues.append(
                InputIssue(processed.label, "the server ran out of memory for this pair", "failed", "out_of_memory")
            )
            continue
        scored.append(PairResult(key, original.label, processed.label, result, original.size, processed.size))
        payloads.append(json_safe(scored[-1].to_dict()))
        results.append(result)
    report = BatchReport(
        pairs=scored, issues=[PairIssue(i.path, i.reason, i.kind) for i in issues], evaluator=plan.describe()
    )
    body = {
        "evaluator": json_safe(report.evaluator),
        "summary": json_safe(report.summary()),
        "pairs": payloads,
        "issues": [{"path": i.path, "reason": i.reason, "kind": i.kind, "type": i.type} for i in issues],
    }
    return body, results


# --------------------------------------------------------------------------------------------------
# Compression


def compress_upload(
    evaluator: Evaluator,
    upload: Upload,
    *,
    target: str,
    formats: Sequence[str] | None,
    max_probes: int,
    max_pixels: int,
    metadata: str = "web",
    color: ColorMode = "srgb",
) -> tuple[dict[str, Any], bytes]:
    """The adaptive search's smallest encoding of one upload that meets ``target``.

    Args:
        evaluator: the loaded evaluator that measures the target.
        upload: the image.
        target: ``METRIC:VALUE``.
        formats: formats to try (``None``: the search's defaults).
        max_probes: encodes per format at most.
        max_pixels: the pixel limit.
        metadata: which of the upload's metadata the file keeps (``web``, ``all``, ``none``, ``exif,icc``...).
        color: ``srgb`` converts a wide-gamut upload to sRGB; ``keep`` encodes it in its own profile.

    Returns:
        ``(report, file bytes)``.
    """
    from ..codecs import get_codec
    from ..tuning.adaptive import compress

    image = _load(upload, max_pixels, color)
    report = compress(
        image,
        target=target,
        formats=list(formats) if formats else None,
        evaluator=evaluator,
        max_probes=max_probes,
        keep_original_if_smaller=False,
        metadata=metadata,
    )
    if report.failures:
        raise ServiceError(422, "compress_failed", report.failures[0].reason)
    result = report.results[0]
    data = result.data
    if data is None:  # pragma: no cover - without out_dir the search always keeps the bytes
        raise ServiceError(422, "compress_failed", "the search returned no encoded bytes")
    payload = result.to_dict()
    payload.pop("output", None)
    payload["input"] = upload.label
    payload["original_bytes"] = upload.size
    payload["saved"] = 1.0 - result.bytes / upload.size if upload.size else None
    try:
        codec = get_codec(result.format, require_available=False)
        payload["media_type"], payload["extension"] = codec.mime_type, codec.extension
    except UnknownNameError:  # pragma: no cover - the result always names a codec here
        payload["media_type"], payload["extension"] = "application/octet-stream", ""
    payload["evaluator"] = report.evaluator
    return json_safe(payload), data
