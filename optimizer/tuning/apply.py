"""Encode images with a preset tier, and optionally check every output against the tier's target.

``apply_preset(preset, inputs, out_dir)`` runs a tier's settings (resize filter, sharpening, codec and its
parameters) on a folder or a list of files:

* outputs are named by the rule of :mod:`optimizer.tuning.outputs` (``out_dir/<relative path><codec
  extension>``, subfolders mirrored, the same rule as ``compress``); a tier tuned for responsive widths
  writes ``<name>-<width>w<ext>`` per width, skipping widths wider than the source (no upscaling; a source
  narrower than every width is written once at its own width);
* inputs are never overwritten; existing outputs are an ``exists`` issue unless ``existing`` is
  ``overwrite`` or ``skip``; an input that cannot be read or encoded is listed in the report with the
  reason while the others go on;
* outputs keep the source's metadata that ``metadata`` selects (default ``web``: EXIF Artist and Copyright,
  ICC only where the colours need it; :mod:`optimizer.imageio.metadata`), colours are converted to sRGB or,
  with ``color="keep"``, stay in the source's profile, which is embedded; ``preserve_times`` gives each
  output its source's modification time;
* with ``verify=True`` every output is decoded and scored against its original, exactly as the study
  scored its corpus: at a target width the reference is the original resized with the study's fixed
  reference filter. The report lists the images that miss the tier's target and the aggregate (the
  preset's ``mean``/``p10``/``worst``) over the batch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._compat import renamed
from .._files import write_atomic
from ..errors import InvalidParameterError, OptimizerError
from ..imageio import COLOR_MODES, DEFAULT_METADATA, ColorMode, Image, MetadataPolicy, load_image
from ..jsonio import json_number
from ..transforms import Transform
from .outputs import EXISTING_POLICIES, ExistingPolicy, OutputJob, output_path, plan_outputs, refusal, write_output
from .presets import Preset, PresetTier
from .target import Target

if TYPE_CHECKING:
    import pandas as pd

    from ..evaluator import Evaluator

__all__ = ["ApplyIssue", "ApplyItem", "ApplyReport", "apply_preset", "evaluator_for_preset"]

#: Issue kinds that mean an input produced no output it should have (``skipped`` widths are not problems).
PROBLEM_KINDS = ("unreadable", "failed", "exists", "collision")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ApplyItem:
    """One written output: sizes, and with verification its quality and whether it met the target."""

    source: str
    output: str
    width: int
    height: int
    bytes_in: int
    bytes_out: int
    seconds: float
    target_width: int | None = None
    quality: float | None = None
    met: bool | None = None
    scores: dict[str, float] | None = None

    @property
    def bits_per_pixel(self) -> float:
        return self.bytes_out * 8.0 / (self.width * self.height)

    @property
    def byte_ratio(self) -> float:
        return self.bytes_out / self.bytes_in if self.bytes_in else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "width": self.width,
            "height": self.height,
            "target_width": self.target_width,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bits_per_pixel": self.bits_per_pixel,
            "byte_ratio": json_number(self.byte_ratio) if self.byte_ratio is not None else None,
            "seconds": self.seconds,
            "quality": json_number(self.quality) if self.quality is not None else None,
            "met": self.met,
            "scores": None if self.scores is None else {k: json_number(v) for k, v in self.scores.items()},
        }


@dataclass(frozen=True)
class ApplyIssue:
    """An input (or one of its widths) that produced no output, and why."""

    path: str
    reason: str
    kind: str  # "unreadable" | "failed" | "exists" | "collision" | "skipped"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "kind": self.kind}


@dataclass
class ApplyReport:
    """What ``apply_preset`` wrote, what it could not, and (verified) which outputs miss the target."""

    tier: str
    target: str
    codec: str
    aggregate_by: str
    verified: bool
    items: list[ApplyItem]
    issues: list[ApplyIssue]
    preset: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def target_obj(self) -> Target:
        return Target.parse(self.target)

    @property
    def misses(self) -> list[ApplyItem]:
        """Verified outputs whose quality misses the tier's target (empty without verification)."""
        return [item for item in self.items if item.met is False]

    @property
    def problems(self) -> list[ApplyIssue]:
        """Issues that left an input without its output (not the widths skipped to avoid upscaling)."""
        return [i for i in self.issues if i.kind in PROBLEM_KINDS]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.misses

    def totals(self) -> dict[str, Any]:
        """Counts, bytes in and out, bits per pixel and, verified, the aggregate quality and misses."""
        sources = {item.source for item in self.items}
        bytes_in = sum({item.source: item.bytes_in for item in self.items}.values())
        bytes_out = sum(item.bytes_out for item in self.items)
        pixels = sum(item.width * item.height for item in self.items)
        out: dict[str, Any] = {
            "inputs": len(sources),
            "outputs": len(self.items),
            "problems": len(self.problems),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "byte_ratio": bytes_out / bytes_in if bytes_in else None,
            "bits_per_pixel": bytes_out * 8.0 / pixels if pixels else None,
        }
        if self.verified:
            target = self.target_obj
            qualities = [item.quality for item in self.items if item.quality is not None]
            agg = target.aggregate(qualities, self.aggregate_by) if qualities else math.nan
            out.update(
                {
                    "quality": json_number(agg),
                    "aggregate": self.aggregate_by,
                    "aggregate_met": bool(qualities) and target.is_met(agg),
                    "met": sum(1 for item in self.items if item.met),
                    "missed": len(self.misses),
                }
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "preset": self.preset,
            "tier": self.tier,
            "target": self.target,
            "codec": self.codec,
            "out_dir": self.out_dir,
            "verified": self.verified,
            "totals": self.totals(),
            "items": [item.to_dict() for item in self.items],
            "issues": [issue.to_dict() for issue in self.issues],
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_dataframe(self) -> pd.DataFrame:
        """One row per output: paths, sizes, bytes, bits per pixel, quality, met flag and every score."""
        import pandas as pd

        rows = []
        names: list[str] = []
        for item in self.items:
            row = {k: v for k, v in item.to_dict().items() if k != "scores"}
            for name, value in (item.scores or {}).items():
                row[name] = value
                if name not in names:
                    names.append(name)
            rows.append(row)
        columns = [
            "source",
            "output",
            "width",
            "height",
            "target_width",
            "bytes_in",
            "bytes_out",
            "bits_per_pixel",
            "byte_ratio",
            "seconds",
            "quality",
            "met",
            *names,
        ]
        return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------------------------------
# The job


def apply_preset(
    preset: Preset | str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    tier: str | None = None,
    verify: bool = False,
    evaluator: Evaluator | None = None,
    jobs: int = 1,
    workers: int | None = None,
    existing: ExistingPolicy = "error",
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    metadata: MetadataPolicy | str = DEFAULT_METADATA,
    color: ColorMode = "srgb",
    preserve_times: bool = False,
) -> ApplyReport:
    """Encode ``inputs`` with a preset tier into ``out_dir``; see the module docs.

    Args:
        preset: A :class:`Preset` or the path of a preset file.
        inputs: A folder (searched recursively), a file, or a list of files and folders.
        out_dir: The output folder (created).
        tier: The tier to use (default: the preset's default tier).
        verify: Score every output against its original and report the misses.
        evaluator: The evaluator for ``verify`` (default: the study's, plus the tier's metric).
        jobs: Images encoded (and scored) at a time, in threads.
        workers: Deprecated spelling of ``jobs``.
        existing: What to do with outputs that exist: ``error``, ``overwrite`` or ``skip``.
        overwrite: Same as ``existing="overwrite"`` (kept for earlier callers).
        progress: Called as ``progress(done, total)`` after each image.
        metadata: What outputs keep of their source's metadata: ``all``, ``none``, ``web`` (the default) or
            a comma list of ``exif``, ``icc``, ``xmp`` (:class:`~optimizer.imageio.MetadataPolicy`).
        color: ``srgb`` converts an embedded profile's colours to sRGB; ``keep`` encodes them as they are
            and embeds the profile (scores still compare in sRGB).
        preserve_times: Give each output its source's access and modification times.

    Returns:
        The :class:`ApplyReport`.
    """
    policy = MetadataPolicy.parse(metadata)
    if color not in COLOR_MODES:
        raise InvalidParameterError(f"color must be one of {', '.join(COLOR_MODES)}, got {color!r}")
    options = _Options(policy, color, preserve_times)
    if overwrite:
        existing = "overwrite"
    if existing not in EXISTING_POLICIES:
        raise InvalidParameterError(f"existing must be one of {', '.join(EXISTING_POLICIES)}, got {existing!r}")
    if not isinstance(preset, Preset):
        preset = Preset.load(preset)
    chosen = preset.tier(tier)
    threads = renamed(jobs, workers, old="workers", new="jobs", default=1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidParameterError(f"jobs must be an integer >= 1, got {threads!r}")
    target = chosen.target_obj
    if verify:
        evaluator = evaluator if evaluator is not None else evaluator_for_preset(preset, chosen)
        if target.metric != "composite" and target.metric not in evaluator.metric_names:
            raise InvalidParameterError(
                f"the evaluator does not compute {target.metric!r}, the metric of tier {chosen.name!r}'s target "
                f"({target}); it computes {', '.join(evaluator.metric_names)}"
            )
        evaluator.load()
    out_root = Path(out_dir)
    if out_root.exists() and not out_root.is_dir():
        raise InvalidParameterError(f"the output folder {out_root} exists and is not a folder")
    planned_jobs, planned = plan_outputs(inputs, out_dir=out_root, allow_objects=False)
    issues = [ApplyIssue(i.path, i.reason, "unreadable" if i.kind == "missing" else i.kind) for i in planned]
    out_root.mkdir(parents=True, exist_ok=True)
    inputs_resolved = {job.original.resolve() for job in planned_jobs if job.original is not None}

    def run(job: OutputJob) -> tuple[list[ApplyItem], list[ApplyIssue]]:
        return _apply_one(job, out_root, chosen, evaluator if verify else None, existing, inputs_resolved, options)

    results: list[tuple[list[ApplyItem], list[ApplyIssue]]] = []
    total = len(planned_jobs)
    if threads == 1 or total <= 1:
        for i, job in enumerate(planned_jobs, 1):
            results.append(run(job))
            if progress:
                progress(i, total)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for i, result in enumerate(pool.map(run, planned_jobs), 1):
                results.append(result)
                if progress:
                    progress(i, total)
    items: list[ApplyItem] = []
    for done, problems in results:
        items += done
        issues += problems
    return ApplyReport(
        tier=chosen.name,
        target=chosen.target,
        codec=chosen.codec,
        aggregate_by=preset.aggregate or "p10",
        verified=verify,
        items=items,
        issues=issues,
        preset={"study": preset.study.get("name"), "fingerprint": preset.fingerprint(), "created": preset.created},
        out_dir=str(out_root),
    )


def evaluator_for_preset(preset: Preset, tier: PresetTier | None = None) -> Evaluator:
    """An evaluator equal to the study's: its profile (or custom weights) and metrics, plus the tier's metric."""
    from ..evaluator import PROFILES, Evaluator

    info = preset.evaluator or {}
    metrics = [str(m) for m in info.get("metrics") or []]
    if tier is not None:
        metric = tier.target_obj.metric
        if metric != "composite" and metric not in metrics:
            metrics.append(metric)
    name = info.get("profile")
    weights = info.get("weights") or {}
    if name in PROFILES and _same_weights(PROFILES[name].normalised_weights, weights):
        return Evaluator(profile=name, metrics=metrics or None)
    if weights:
        return Evaluator(weights={str(k): float(v) for k, v in weights.items()}, metrics=metrics or None)
    return Evaluator(metrics=metrics or None)


def _same_weights(a: dict[str, float], b: dict[str, Any]) -> bool:
    if set(a) != set(b):
        return False
    return all(abs(float(a[k]) - float(b[k])) < 1e-9 for k in a)


@dataclass(frozen=True)
class _Options:
    """How outputs are written: metadata kept, colour space, source times."""

    metadata: MetadataPolicy
    color: ColorMode
    preserve_times: bool


def _apply_one(
    job: OutputJob,
    out_root: Path,
    tier: PresetTier,
    evaluator: Evaluator | None,
    existing: ExistingPolicy,
    inputs: set[Path],
    options: _Options,
) -> tuple[list[ApplyItem], list[ApplyIssue]]:
    items: list[ApplyItem] = []
    issues: list[ApplyIssue] = []
    source = Path(job.source)
    try:
        image = load_image(source, color=options.color)
        bytes_in = source.stat().st_size
    except (OptimizerError, OSError) as exc:
        return [], [ApplyIssue(str(source), _reason(exc, source), "unreadable")]
    widths: list[int | None]
    if tier.widths:
        fitting = [w for w in tier.widths if w <= image.width]
        for w in tier.widths:
            if w > image.width:
                issues.append(
                    ApplyIssue(str(source), f"{image.width} px wide, narrower than width {w}: not upscaled", "skipped")
                )
        widths = list(fitting) or [image.width]
    else:
        widths = [None]
    for width in widths:
        output = output_path(out_root, job, tier.settings.extension, width)
        refused = refusal(output, inputs, existing)
        if refused is not None:
            issues.append(ApplyIssue(str(source), refused[1], refused[0]))
            continue
        try:
            items.append(_encode_one(source, image, bytes_in, output, width, tier, evaluator, options))
        except (OptimizerError, OSError) as exc:
            issues.append(ApplyIssue(str(source), _reason(exc, source), "failed"))
    return items, issues


def _encode_one(
    source: Path,
    image: Image,
    bytes_in: int,
    output: Path,
    width: int | None,
    tier: PresetTier,
    evaluator: Evaluator | None,
    options: _Options,
) -> ApplyItem:
    started = time.perf_counter()
    # as each study trial encoded its corpus items, plus the metadata the policy keeps
    encoded = tier.settings.at_width(width).encode(image, metadata=options.metadata)
    write_output(output, encoded.data, times_from=source if options.preserve_times else None)
    quality = met = scores = None
    if evaluator is not None:
        reference = image if width is None else _reference_transform(tier, width).apply(image)
        result = evaluator.for_reference(reference).score(encoded.decoded)
        target = tier.target_obj
        quality = target.value_of(result)
        met = target.is_met(quality)
        scores = dict(result.scores)
        scores["composite"] = result.composite
    return ApplyItem(
        source=str(source),
        output=str(output),
        width=encoded.width,
        height=encoded.height,
        bytes_in=bytes_in,
        bytes_out=encoded.bytes,
        seconds=time.perf_counter() - started,
        target_width=width,
        quality=quality,
        met=met,
        scores=scores,
    )


def _reference_transform(tier: PresetTier, width: int) -> Transform:
    """The study's reference at ``width``: the fixed high-quality resize (``SearchSpace.reference_transform``)."""
    return Transform(width=width, filter=tier.reference_filter, linear_light=tier.settings.transform.linear_light)


def _reason(exc: BaseException, source: Path) -> str:
    """The error message without a leading ``<source>: `` (the issue already names the file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc) or type(exc).__name__
    return text.removeprefix(f"{source}: ")
