"""Output files of ``apply`` and ``compress``: one naming rule, one policy for existing files, safe writes.

Naming
    A file given as an input is written as ``OUT/<stem><ext>``; a file found in a folder given as an input
    keeps its path relative to that folder, ``OUT/<sub>/<stem><ext>``; an in-memory image is written under
    its source's stem, or ``imageNNN`` (its position). ``<ext>`` is the codec's extension (a preset tier
    tuned for widths adds ``-<width>w``). A name never depends on the other inputs. Two inputs whose
    outputs would share a path apart from the extension (``pic.png`` and ``pic.jpg`` in one folder, or
    ``a/photo.png`` and ``b/photo.png`` given as two folders) cannot both be written: the first in input
    order is, every later one is reported as a ``collision`` naming the first. An output that would land
    on one of the inputs is refused.

Existing outputs
    ``error`` (the default): reported as ``exists``, the batch goes on and the run exits 3; ``overwrite``:
    replaced; ``skip``: left alone and reported as ``skipped`` (not an error), for re-running a batch.

Writing
    Through a temporary file in the output folder, renamed into place only once complete, and, where the
    caller checks it (``compress`` re-scores the file read back from disk), only once it passed. A crash or
    a failed check never leaves a partial or failing file under the final name. New files get ``0666`` less
    the umask; with ``preserve_times`` (``--preserve-times``) an output gets its source's access and
    modification times.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._files import source_times, write_atomic, write_atomic_checked
from ..batch import iter_image_files
from ..errors import InvalidParameterError
from ..imageio import Image

__all__ = [
    "EXISTING_POLICIES",
    "ExistingPolicy",
    "OutputJob",
    "PlanIssue",
    "existing_policy",
    "output_path",
    "plan_outputs",
    "refusal",
    "write_output",
]

ExistingPolicy = Literal["error", "overwrite", "skip"]
EXISTING_POLICIES: tuple[ExistingPolicy, ...] = ("error", "overwrite", "skip")


@dataclass(frozen=True)
class OutputJob:
    """One input and where its outputs go: ``stem`` is the output path relative to the output folder,
    without extension."""

    label: str
    source: Any
    original: Path | None
    stem: Path


@dataclass(frozen=True)
class PlanIssue:
    """An input that gets no output: ``missing`` (no such file or folder, no images in a folder) or
    ``collision`` (another input already takes its output name)."""

    path: str
    reason: str
    kind: Literal["missing", "collision"]


def existing_policy(*, overwrite: bool = False, skip_existing: bool = False) -> ExistingPolicy:
    """The policy the ``--overwrite`` / ``--skip-existing`` flags ask for (not both)."""
    if overwrite and skip_existing:
        raise InvalidParameterError("give --overwrite or --skip-existing, not both")
    return "overwrite" if overwrite else ("skip" if skip_existing else "error")


def plan_outputs(
    inputs: Any, *, out_dir: Path | None = None, allow_objects: bool = True
) -> tuple[list[OutputJob], list[PlanIssue]]:
    """Expand ``inputs`` (files, folders searched recursively, in-memory images) into jobs named by the
    module's rule, with the inputs that get no output.

    Files inside ``out_dir`` are not inputs when ``out_dir`` lies strictly inside an input folder (earlier
    outputs of the same command).
    """
    items = _as_list(inputs)
    if not items:
        raise InvalidParameterError("no inputs given: pass a folder, a file or a list of files")
    out_resolved = out_dir.resolve() if out_dir is not None else None
    jobs: list[OutputJob] = []
    issues: list[PlanIssue] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                root = path.resolve()
                nested = out_resolved is not None and out_resolved != root and root in out_resolved.parents
                found = [f for f in iter_image_files(path) if not (nested and out_resolved in f.resolve().parents)]
                if not found:
                    issues.append(PlanIssue(str(path), "no image files in this folder", "missing"))
                for file in found:
                    jobs.append(OutputJob(str(file), file, file, file.relative_to(path).with_suffix("")))
            elif path.exists():
                jobs.append(OutputJob(str(path), path, path, Path(path.stem)))
            else:
                issues.append(PlanIssue(str(path), "no such file or folder", "missing"))
        elif allow_objects:
            source = item.source if isinstance(item, Image) else None
            stem = Path(source).stem if source else f"image{index:03d}"
            jobs.append(OutputJob(source or stem, item, None, Path(stem)))
        else:
            raise InvalidParameterError(f"inputs are paths to files or folders, got {type(item).__name__}")
    kept: list[OutputJob] = []
    owners: dict[str, OutputJob] = {}
    for job in jobs:
        key = job.stem.as_posix()
        first = owners.get(key)
        if first is not None:
            reason = (
                f"its output name {job.stem} is taken by {first.label}; rename one or write them to separate folders"
            )
            issues.append(PlanIssue(job.label, reason, "collision"))
            continue
        owners[key] = job
        kept.append(job)
    return kept, issues


def _as_list(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, Image)) or hasattr(inputs, "shape"):
        return [inputs]
    if isinstance(inputs, Iterable):
        return list(inputs)
    return [inputs]


def output_path(out_dir: Path, job: OutputJob, extension: str, width: int | None = None) -> Path:
    """Where ``job``'s output in a format with ``extension`` goes (at ``width``, for responsive tiers)."""
    name = job.stem.name + (f"-{width}w" if width is not None else "") + extension
    return out_dir / job.stem.with_name(name)


def refusal(path: Path, inputs: set[Path], existing: ExistingPolicy) -> tuple[str, str] | None:
    """Why ``path`` must not be written, as ``(kind, reason)``: ``failed`` (it is an input, or a folder, device
    or other non-file), ``exists`` (policy ``error``) or ``skipped`` (policy ``skip``); ``None`` to write."""
    if path.resolve() in inputs:
        return "failed", f"its output {path} is an input file; not overwritten"
    if path.is_symlink() or path.exists():
        if path.is_dir() or (path.exists() and not path.is_file()):
            return "failed", f"its output {path} exists and is not a regular file"
        if existing == "error":
            return "exists", f"{path} exists (pass --overwrite to replace it or --skip-existing to keep it)"
        if existing == "skip":
            return "skipped", f"{path} exists; kept (--skip-existing)"
    return None


def write_output(
    path: Path,
    data: bytes,
    check: Callable[[Path], bool] | None = None,
    *,
    times_from: Path | None = None,
) -> bool:
    """Write ``data`` to ``path`` atomically; with ``check`` (given the complete temporary file), only when
    it returns true; with ``times_from``, the file gets that file's access and modification times
    (``--preserve-times``). Returns whether ``path`` now holds ``data``."""
    times = source_times(times_from) if times_from is not None else None
    if check is None:
        write_atomic(path, data, times_ns=times)
        return True
    return write_atomic_checked(path, data, check, times_ns=times)
