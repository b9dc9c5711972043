"""Per-image adaptive compression: for each image, the smallest encoding that meets a quality target.

A preset is one setting for a whole corpus, so it must be good enough for the hardest image and wastes
bytes on the easy ones. :func:`compress` instead searches each image's own quality axis
(:class:`~optimizer.tuning.quality_axis.QualityAxis`) in every requested format with the root finder of
:mod:`optimizer.tuning.rootfind`, and keeps the smallest file that meets the target. The search starts
from the previous image's answer in the same format (else a per-codec prior for the target's level) and
uses the margin slope seen on the previous image for its first step.

Guarantee
    The file written is the exact bytes that were scored, and it is checked once more before it takes its
    final name: it is read back from disk, decoded and scored (:mod:`optimizer.tuning.outputs`). If that
    check fails, the search walks up the axis until a setting passes. When no setting of any format meets
    the target, the best-quality candidate is kept (or the original file, when it is smaller or when
    ``fallback="original"``), and the result says so with ``met=False`` and a reason. Unless
    ``keep_original_if_smaller=False``, a file larger than the original is never written: the original is
    copied instead, and the result says so.

Outputs
    Named, and existing ones handled, by :mod:`optimizer.tuning.outputs` (the rule ``apply`` follows too).

Metadata and colour
    Every candidate carries the metadata ``metadata`` selects (default ``web``; :mod:`optimizer.imageio.
    metadata`), so the bytes compared and written are the bytes shipped. ``color="keep"`` encodes a
    wide-gamut source in its own profile (embedded); scores compare both sides in sRGB. An original kept
    because it is smaller is copied byte for byte, its metadata included. ``preserve_times`` gives each
    output its source's modification time.

Transparency
    An image with transparency is searched only in the requested formats that keep alpha (a format
    without alpha would flatten it onto white); when none of them keeps alpha, all are searched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ..codecs import get_codec
from ..codecs.base import Codec
from ..errors import InvalidParameterError, OptimizerError
from ..evaluator import Evaluator
from ..imageio import COLOR_MODES, DEFAULT_METADATA, ColorMode, Image, ImageSource, MetadataPolicy, load_image
from ..transforms import Transform
from .compress_report import CompressFailure, CompressReport, CompressResult, FormatOutcome
from .compress_writer import ImageWriter
from .format_search import CompressRun, FormatAxis, FormatSearch
from .outputs import ExistingPolicy, OutputJob, output_path, plan_outputs, refusal
from .quality_axis import QualityAxis
from .target import COMPOSITE, Target

__all__ = [
    "DEFAULT_FORMATS",
    "FALLBACKS",
    "CompressFailure",
    "CompressReport",
    "CompressResult",
    "FormatOutcome",
    "compress",
]

#: Formats tried when none are named (those whose library is missing are skipped).
DEFAULT_FORMATS: tuple[str, ...] = ("avif", "webp", "jpeg")
Fallback = Literal["best", "original"]
#: What to keep when no format meets the target.
FALLBACKS: tuple[Fallback, ...] = ("best", "original")


def compress(
    inputs: Iterable[ImageSource | Image] | ImageSource | Image,
    *,
    target: Target | str,
    formats: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    evaluator: Evaluator | None = None,
    profile: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    transform: Transform | None = None,
    quality_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    max_probes: int | None = None,
    keep_original_if_smaller: bool = True,
    fallback: Fallback = "best",
    prune: bool = True,
    existing: ExistingPolicy = "error",
    progress: Callable[[int, int, str], None] | None = None,
    metadata: MetadataPolicy | str = DEFAULT_METADATA,
    color: ColorMode = "srgb",
    preserve_times: bool = False,
) -> CompressReport:
    """For each image, the smallest encoding over ``formats`` that meets ``target``; see the module doc.

    Args:
        inputs: Image files, folders (searched recursively; the output keeps the relative layout), bytes,
            arrays or :class:`Image` objects.
        target: The quality bar, ``METRIC:VALUE``.
        formats: Formats to search (default :data:`DEFAULT_FORMATS`, those installed).
        out_dir: Where files are written (None: nothing is written; each result keeps its bytes in
            ``data``).
        evaluator: The evaluator to score with (default: the target's metric alone, or the profile's
            metrics for a composite target).
        profile: Evaluator profile for a composite target.
        params: Fixed non-quality settings per format (``{"avif": {"speed": 6}}``).
        transform: Resize/sharpen applied before encoding (the reference is resized the same way).
        quality_range: ``(low, high)`` on every format's quality axis, or a mapping per format, in the
            axis's own units (JPEG XL: distance).
        max_probes: Encodes per image and format at most.
        keep_original_if_smaller: Copy the original when no encoding that meets the target is smaller.
        fallback: When nothing meets the target, keep the ``"best"``-quality candidate (or the original
            when that is smaller) or always the ``"original"``.
        prune: Stop searching a format once its failing settings are already larger than another
            format's passing file.
        existing: What to do with outputs that exist: ``error``, ``overwrite`` or ``skip``
            (:mod:`optimizer.tuning.outputs`).
        progress: Called as ``progress(done, total, label)`` after each image.
        metadata: What outputs keep of their source's metadata: ``all``, ``none``, ``web`` (the default) or
            a comma list of ``exif``, ``icc``, ``xmp`` (:class:`~optimizer.imageio.MetadataPolicy`).
        color: ``srgb`` converts an embedded profile's colours to sRGB; ``keep`` encodes them as they are
            and embeds the profile (scores still compare in sRGB). It applies to the inputs compress loads
            (paths, bytes, arrays); an :class:`Image` keeps the mode it was loaded with.
        preserve_times: Give each output file its source's access and modification times.

    Returns:
        The :class:`CompressReport`. Inputs that cannot be processed are listed in ``failures`` (and those
        skipped in ``skipped``); they do not stop the run.
    """
    started = time.perf_counter()
    goal = Target.parse(target)
    if fallback not in FALLBACKS:
        raise InvalidParameterError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if max_probes is not None and (not isinstance(max_probes, int) or isinstance(max_probes, bool) or max_probes < 1):
        raise InvalidParameterError(f"max_probes must be an integer >= 1, got {max_probes!r}")
    if existing not in ("error", "overwrite", "skip"):
        raise InvalidParameterError(f"existing must be error, overwrite or skip, got {existing!r}")
    if transform is not None and not isinstance(transform, Transform):
        raise InvalidParameterError(f"transform must be a Transform, got {type(transform).__name__}")
    if color not in COLOR_MODES:
        raise InvalidParameterError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    policy = MetadataPolicy.parse(metadata)
    evaluator = _evaluator_for(goal, evaluator, profile)
    run = CompressRun(
        target=goal,
        evaluator=evaluator,
        formats=_formats_for(formats, params, quality_range),
        out_dir=Path(out_dir) if out_dir is not None else None,
        transform=transform,
        max_probes=max_probes,
        keep_original_if_smaller=keep_original_if_smaller,
        fallback=fallback,
        prune=prune,
        existing=existing,
        metadata=policy,
        color=color,
        preserve_times=preserve_times,
    )
    jobs, issues = plan_outputs(inputs, out_dir=run.out_dir)
    failures = [CompressFailure(issue.path, issue.reason) for issue in issues]
    skipped: list[CompressFailure] = []
    run.inputs = {job.original.resolve() for job in jobs if job.original is not None}
    evaluator.load()
    results: list[CompressResult] = []
    for done, job in enumerate(jobs, start=1):
        try:
            blocked = _blocked(job, run)
            if blocked is None:
                results.append(_compress_one(job, run))
            elif blocked[0] == "skipped":
                skipped.append(CompressFailure(job.label, blocked[1]))
            else:
                failures.append(CompressFailure(job.label, blocked[1]))
        except (OptimizerError, OSError) as exc:
            failures.append(CompressFailure(job.label, str(exc) or type(exc).__name__))
        if progress is not None:
            progress(done, len(jobs), job.label)
    return CompressReport(
        skipped=skipped,
        results=results,
        failures=failures,
        target=str(goal),
        formats=tuple(f.name for f in run.formats),
        evaluator=evaluator.describe(),
        seconds=time.perf_counter() - started,
    )


def _evaluator_for(target: Target, evaluator: Evaluator | None, profile: str | None) -> Evaluator:
    if evaluator is not None:
        if profile is not None:
            raise InvalidParameterError("give either a profile or an evaluator, not both")
        target.check_computed(evaluator.metric_names)
        return evaluator
    if target.metric == COMPOSITE:
        return Evaluator(profile=profile or "default")
    if profile is not None:
        return Evaluator(profile=profile, metrics=[target.metric])
    return Evaluator(metrics=[target.metric])


def _formats_for(
    names: Sequence[str] | None,
    params: Mapping[str, Mapping[str, Any]] | None,
    quality_range: tuple[float, float] | Mapping[str, tuple[float, float]] | None,
) -> list[FormatAxis]:
    """Resolve formats, their quality axes and fixed params; refuse what cannot be searched."""
    if isinstance(names, str):
        names = [names]
    explicit = names is not None
    codecs: list[Codec] = []
    for name in names if names is not None else DEFAULT_FORMATS:
        codec = get_codec(name, require_available=explicit)
        if not codec.available():
            continue
        if codec not in codecs:
            codecs.append(codec)
    if not codecs:
        raise InvalidParameterError(
            "no format to search: "
            + (
                "give at least one format"
                if explicit
                else f"none of the default formats ({', '.join(DEFAULT_FORMATS)}) is installed"
            )
        )
    chosen = {c.name for c in codecs}
    by_codec = _per_format("params", params or {}, chosen)
    ranges = _per_format("quality_range", quality_range, chosen) if isinstance(quality_range, Mapping) else {}
    out: list[FormatAxis] = []
    skipped: list[str] = []
    for codec in codecs:
        axis_range = ranges.get(codec.name) if isinstance(quality_range, Mapping) else quality_range
        axis = QualityAxis.for_codec(codec, axis_range)
        if axis is None:
            skipped.append(codec.name)
            continue
        fixed = dict(by_codec.get(codec.name, {}))
        checked = codec.validate_params(fixed)
        if axis.param in fixed or checked[axis.param] != codec.defaults()[axis.param]:
            raise InvalidParameterError(
                f"{codec.name}: {axis.param} is the axis the search scans; restrict it with quality_range "
                f"instead of fixing it in params (got {dict(fixed)})"
            )
        if codec.is_lossless(checked):
            raise InvalidParameterError(
                f"{codec.name}: these params encode losslessly ({dict(fixed)}), which leaves no quality to search"
            )
        out.append(FormatAxis(codec, axis, fixed))
    if not out:
        raise InvalidParameterError(
            f"none of the formats has a quality axis to search ({', '.join(skipped)}); try avif, webp, jpeg or jxl"
        )
    return out


def _per_format(what: str, mapping: Mapping[str, Any], chosen: set[str]) -> dict[str, Any]:
    """Key a per-format mapping by canonical codec name; keys for formats not searched are refused."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = get_codec(key, require_available=False).name
        if name not in chosen:
            raise InvalidParameterError(
                f"{what} given for format {key!r}, which is not among the formats searched ({', '.join(sorted(chosen))})"
            )
        if what == "params" and not isinstance(value, Mapping):
            raise InvalidParameterError(f"params for {key!r} must be a mapping of name to value, got {value!r}")
        out[name] = value
    return out


def _blocked(job: OutputJob, run: CompressRun) -> tuple[str, str] | None:
    """Why ``job`` is not searched at all: an output it could write exists (policy ``error`` or ``skip``), or
    is a folder or device; checked before the search so no encode is spent on it."""
    if run.out_dir is None:
        return None
    suffixes = [fmt.codec.extension for fmt in run.formats]
    if job.original is not None and run.keep_original_if_smaller:
        suffixes.append(job.original.suffix)
    for suffix in dict.fromkeys(suffixes):
        path = output_path(run.out_dir, job, suffix)
        if job.original is not None and path.resolve() == job.original.resolve():
            continue  # the input itself: refused only if it would be replaced (see ImageWriter.write)
        why = refusal(path, run.inputs, run.existing)
        if why is not None:
            return why
    return None


def _reference_and_input(image: Image, transform: Transform | None) -> tuple[Image, Image]:
    """(scoring reference, encoder input). A resize's reference uses a fixed high-quality filter."""
    if transform is None or transform.is_identity:
        return image, image
    encoder_input = transform.apply(image)
    if not transform.resizes:
        return image, encoder_input
    fixed = Transform(
        width=transform.width,
        height=transform.height,
        scale=transform.scale,
        filter="lanczos",
        linear_light=transform.linear_light,
    )
    return fixed.apply(image), encoder_input


def _compress_one(job: OutputJob, run: CompressRun) -> CompressResult:
    started = time.perf_counter()
    image = load_image(job.source, name=job.label, color=run.color)
    reference, encoder_input = _reference_and_input(image, run.transform)
    scorer = run.evaluator.for_reference(reference)
    comparable = job.original is not None and (run.transform is None or not run.transform.resizes)
    original_bytes = job.original.stat().st_size if comparable and job.original is not None else None

    formats = run.formats
    if encoder_input.has_alpha:  # transparent: formats that would flatten it only when no other was asked for
        formats = [fmt for fmt in formats if fmt.codec.supports_alpha] or formats
    searches = [FormatSearch(fmt, encoder_input, scorer, run) for fmt in formats]
    # The previous image's winner goes first: its file size then lets the other formats stop early.
    best_bytes: int | None = None
    for search in sorted(searches, key=lambda s: s.format.name != run.last_winner):
        search.run(best_bytes if run.prune else None)
        winner = search.answer
        if winner is not None and (best_bytes is None or len(winner.data) < best_bytes):
            best_bytes = len(winner.data)

    context = ImageWriter(
        job, run, scorer, searches, original_bytes, encoder_input.width, encoder_input.height, started
    )
    while True:
        live = [(len(s.answer.data), i, s, s.answer) for i, s in enumerate(searches) if s.answer is not None]
        if not live:
            break
        _, _, search, candidate = min(live, key=lambda item: item[:2])
        if run.keep_original_if_smaller and original_bytes is not None and original_bytes <= len(candidate.data):
            reason = (
                f"the original ({original_bytes:,} bytes) is no larger than the smallest encoding that "
                f"meets the target ({candidate.label()}, {len(candidate.data):,} bytes); original kept"
            )
            return context.keep_original(met=True, reason=reason, chosen=search)
        written = context.write_and_verify(candidate, search)
        if written is not None:
            run.last_winner = search.format.name
            return written
        search.walk_up(candidate)  # the written file failed its check: the next better setting that passes
    return context.fallback()
