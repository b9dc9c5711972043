"""Per-image adaptive compression: for each image, the smallest encoding that meets a quality target.

A preset is one setting for a whole corpus, so it must be good enough for the hardest image and wastes
bytes on the easy ones. :func:`compress` instead searches each image's own quality axis
(:class:`~optimizer.tuning.quality_axis.QualityAxis`) in every requested format with the root finder of
:mod:`optimizer.tuning.rootfind`, and keeps the smallest file that meets the target. The search starts
from the previous image's answer in the same format (else a per-codec prior for the target's level) and
uses the margin slope seen on the previous image for its first step.

Photo scale
    An image of at least ``proxy_min_pixels`` (4 megapixels by default) is searched on a proxy, a mosaic of
    tiles cut from it (:mod:`optimizer.tuning.proxy`), and each format's answer is then confirmed at full
    size, smallest first, learning how far the proxy reads high as the run goes
    (:mod:`optimizer.tuning.compress_image`). A typical large image costs one full-size encode per format
    still in the running and one full-size score. One image is decoded once; at most the image, its
    reference (the same array unless resized) and one full-size candidate are held at a time, with one
    full-size scorer.

Lossless candidates
    ``png`` (and ``webp`` with ``lossless=True``) is searched as one lossless candidate: it meets any target
    (checked like any other file), and wins when it is the smallest. WebP lossless is also tried beside
    lossy WebP when an image has few colours (at most 4096), or when a fast lossless encode of the search
    image is no more than 1.5 times the best lossy one (images with up to 131,072 colours; photographs have
    more): screenshots and graphics.

Parallel images
    ``jobs`` images are processed at once in threads (encoders and torch release the GIL); each encoder
    then runs on one thread and torch on one thread per operation. The warm start and the proxy gap are
    shared, so the order images finish in changes how many probes each takes; an image searched at full
    size gets the same answer either way (the smallest passing setting), while on a proxy the gap learned
    from other images can move an answer by a step. Memory grows with ``jobs``: each image in flight holds
    its own.

Guarantee
    The file written is the exact bytes that were scored, and it is checked before it takes its final
    name: it is written to a temporary file, read back from disk, decoded and scored at full size
    (:mod:`optimizer.tuning.compress_writer`). If that check fails, the search moves up the axis until a
    setting passes. When no setting of any format meets the target, the best-quality candidate is kept (or the original file, when it is smaller or when
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

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ..codecs import get_codec
from ..codecs.base import Codec
from ..errors import InvalidParameterError, OptimizerError
from ..evaluator import Evaluator
from ..imageio import COLOR_MODES, DEFAULT_METADATA, ColorMode, Image, ImageSource, MetadataPolicy
from ..metrics.registry import get_spec
from ..transforms import Transform
from .compress_image import compress_image
from .compress_report import CompressFailure, CompressReport, CompressResult, FormatOutcome
from .format_search import CompressRun, FormatAxis
from .outputs import ExistingPolicy, OutputJob, output_path, plan_outputs, refusal
from .proxy import PRIOR_GAP, PROXY_MIN_PIXELS, GapModel
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
#: Settings of the lossless candidates unless params say otherwise: PNG with Pillow's optimiser (the smallest
#: zlib stream over its filter choices; measured in RESULTS.md).
_LOSSLESS_DEFAULTS: dict[str, dict[str, Any]] = {"png": {"optimize": True}}


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
    jobs: int = 1,
    max_width: int | None = None,
    max_height: int | None = None,
    proxy_min_pixels: int | None = PROXY_MIN_PIXELS,
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
        progress: Called as ``progress(done, total, label)``: at the start (``done`` 0), after each probe
            (``label`` names the image and the probe) and after each image.
        metadata: What outputs keep of their source's metadata: ``all``, ``none``, ``web`` (the default) or
            a comma list of ``exif``, ``icc``, ``xmp`` (:class:`~optimizer.imageio.MetadataPolicy`).
        color: ``srgb`` converts an embedded profile's colours to sRGB; ``keep`` encodes them as they are
            and embeds the profile (scores still compare in sRGB). It applies to the inputs compress loads
            (paths, bytes, arrays); an :class:`Image` keeps the mode it was loaded with.
        preserve_times: Give each output file its source's access and modification times.
        jobs: Images processed at once, in threads; each encoder then runs on one thread and torch on one
            thread per operation. Results do not depend on it.
        max_width: Resize each image wider than this to fit (aspect kept; never enlarged) before the
            search; the reference is resized the same way with Lanczos, as for ``transform``.
        max_height: The same for the height (both may be given: the image fits inside both).
        proxy_min_pixels: Images with at least this many pixels (after resizing) are searched on a proxy
            and confirmed at full size; ``None`` searches every image at full size.

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
    for name, value in (("jobs", jobs), ("max_width", max_width), ("max_height", max_height)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
    if (max_width is not None or max_height is not None) and transform is not None and transform.resizes:
        raise InvalidParameterError("give either a resizing transform or max_width/max_height, not both")
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
        threads=1 if jobs > 1 else None,
        proxy_min_pixels=proxy_min_pixels or 0,
        gaps=GapModel(_prior_gap(goal)),
        max_size=(max_width, max_height),
    )
    planned, issues = plan_outputs(inputs, out_dir=run.out_dir)
    failures = [CompressFailure(issue.path, issue.reason) for issue in issues]
    skipped: list[CompressFailure] = []
    run.inputs = {job.original.resolve() for job in planned if job.original is not None}
    evaluator.load()
    results: dict[int, CompressResult] = {}
    errors: dict[int, CompressFailure] = {}
    passed_over: dict[int, CompressFailure] = {}
    total = len(planned)
    done = 0
    lock = threading.Lock()

    def tell(label: str) -> None:
        if progress is not None:
            with lock:
                progress(done, total, label)

    run.on_probe = lambda image, probe: tell(f"{Path(image).name}: {probe}")

    def one(index: int, job: OutputJob) -> None:
        nonlocal done
        if run.cancelled.is_set():  # interrupted while this image waited for a thread: never start it
            return
        run.local.label = job.label
        try:
            blocked = _blocked(job, run)
            if blocked is None:
                results[index] = compress_image(job, run)
            elif blocked[0] == "skipped":
                passed_over[index] = CompressFailure(job.label, blocked[1])
            else:
                errors[index] = CompressFailure(job.label, blocked[1])
        except (OptimizerError, OSError) as exc:
            errors[index] = CompressFailure(job.label, str(exc) or type(exc).__name__)
        except BaseException:  # interrupted (or a bug): stop the other images here, before this thread is reused
            run.cancelled.set()
            raise
        with lock:
            done += 1
        tell(job.label)

    tell("")
    if jobs > 1 and total > 1:
        with _torch_threads(1), ThreadPoolExecutor(max_workers=min(jobs, total)) as pool:
            futures = [pool.submit(one, i, job) for i, job in enumerate(planned)]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # interrupted (or a bug): the other images stop at their next probe
                run.cancelled.set()
                for future in futures:
                    future.cancel()
                raise
    else:
        for index, job in enumerate(planned):
            one(index, job)
    failures += [errors[i] for i in sorted(errors)]
    skipped += [passed_over[i] for i in sorted(passed_over)]
    return CompressReport(
        skipped=skipped,
        results=[results[i] for i in sorted(results)],
        failures=failures,
        target=str(goal),
        formats=tuple(dict.fromkeys(f.name for f in run.formats)),
        evaluator=evaluator.describe(),
        seconds=time.perf_counter() - started,
    )


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Torch on ``count`` threads per operation while images run in parallel (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _prior_gap(target: Target) -> float:
    """:data:`~optimizer.tuning.proxy.PRIOR_GAP` in the target's own units."""
    if target.metric == COMPOSITE:
        return PRIOR_GAP
    low, high = get_spec(target.metric).norm_range
    return PRIOR_GAP * abs(high - low)


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
    for codec in codecs:
        fixed = dict(by_codec.get(codec.name, {}))
        checked = codec.validate_params(fixed)
        if codec.is_lossless(checked):  # one lossless candidate: PNG, or WebP with lossless=True
            if codec.name in ranges:
                raise InvalidParameterError(
                    f"{codec.name}: these params encode losslessly ({dict(fixed)}); there is no quality axis to "
                    "restrict with quality_range"
                )
            out.append(FormatAxis(codec, None, {**_LOSSLESS_DEFAULTS.get(codec.name, {}), **fixed}))
            continue
        axis_range = ranges.get(codec.name) if isinstance(quality_range, Mapping) else quality_range
        axis = QualityAxis.for_codec(codec, axis_range)
        if axis is None:  # pragma: no cover - every codec here is lossless or has a quality axis
            raise InvalidParameterError(f"{codec.name} has neither a quality axis nor a lossless mode")
        if axis.param in fixed or checked[axis.param] != codec.defaults()[axis.param]:
            raise InvalidParameterError(
                f"{codec.name}: {axis.param} is the axis the search scans; restrict it with quality_range "
                f"instead of fixing it in params (got {dict(fixed)})"
            )
        out.append(FormatAxis(codec, axis, fixed))
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
