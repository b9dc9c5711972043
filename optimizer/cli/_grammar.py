"""One vocabulary for every command (see docs/cli.md), and the deprecated spellings it replaced.

==========================  ==============================================================================
``-f/--format FORMAT``       the image format of ``encode``'s output
``--formats A,B``            the image formats ``tune`` and ``compress`` search
``--json``                   print the result as JSON instead of a table (every command that prints one)
``-o/--output FILE``         the one file a command writes (``encode``, ``report``, ``presets build``)
``-d/--out-dir DIR``         the folder a batch writes into (``compress``, ``apply``)
``--report FILE``            also write the full JSON report here
``-p/--param [FMT.]N=V``     a fixed encoder setting; without ``FMT.`` it applies to every format that has it
``--quality LOW-HIGH``       a quality range on every format's axis, or ``FMT=LOW-HIGH,...`` per format
``-j/--jobs N``              items (pairs, images, trials) processed in parallel on this machine
``REFERENCE DISTORTED``      the originals and the processed images (two files or two folders)
==========================  ==============================================================================

``--workers`` keeps its scale-out meaning (``tune``: processes sharing a study; ``serve``: server processes).
The spellings this replaced still work for one release and print a one-line deprecation warning:
``--format table|json|text`` (now ``--json``), ``compress -o`` (now ``-d``), ``compress --quality-range``
(now ``--quality``), ``--workers`` for parallel items (now ``--jobs``), ``apply PRESETS IN OUT`` (now
``apply PRESETS IN... -d OUT``). Image paths may be quoted globs (``'photos/*.jpg'``), expanded here
whatever the shell does.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import typer

from ..errors import InvalidParameterError
from ._output import note

__all__ = [
    "JobsOption",
    "JsonOption",
    "LegacyFormatOption",
    "LegacyWorkersOption",
    "deprecated",
    "expand_paths",
    "jobs_from",
    "output_style",
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts) instead of a table.")]
LegacyFormatOption = Annotated[
    str | None, typer.Option("--format", hidden=True, help="Deprecated: use --json (table|json|text).")
]
JobsOption = Annotated[int, typer.Option("--jobs", "-j", min=1, help="Items processed in parallel on this machine.")]
LegacyWorkersOption = Annotated[
    int | None, typer.Option("--workers", hidden=True, min=1, help="Deprecated: use --jobs.")
]

_OUTPUT_STYLES = ("table", "text", "json")


def deprecated(old: str, new: str) -> None:
    """Say once, on stderr, that ``old`` is a deprecated spelling of ``new`` (it keeps working)."""
    note(f"{old} is deprecated and will be removed in the next release; use {new}", label="warning")


def output_style(json_flag: bool, legacy: str | None) -> Literal["table", "json"]:
    """``json`` or ``table`` from ``--json`` and the deprecated ``--format table|json|text``."""
    if legacy is not None:
        value = legacy.strip().lower()
        if value not in _OUTPUT_STYLES:
            raise InvalidParameterError(f"--format takes table or json (deprecated: use --json), got {legacy!r}")
        deprecated(f"--format {value}", "--json" if value == "json" else "the default output (no option)")
        if value == "json":
            return "json"
    return "json" if json_flag else "table"


def jobs_from(jobs: int, legacy_workers: int | None) -> int:
    """``--jobs``, or the deprecated ``--workers`` when given instead."""
    if legacy_workers is not None:
        deprecated("--workers N (parallel items)", "--jobs N")
        if jobs != 1 and jobs != legacy_workers:
            raise InvalidParameterError("give --jobs (or the deprecated --workers), not both")
        return legacy_workers
    return jobs


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Paths as given, with quoted globs (``'photos/*.jpg'``, ``'**/*.png'``) expanded in sorted order.

    A path that exists is taken as it is, even if its name holds glob characters. A glob that matches
    nothing is a usage error naming it (the shell would have passed it through unexpanded too).
    """
    out: list[Path] = []
    for item in paths:
        text = str(item)
        if Path(text).exists() or not _is_glob(text):
            out.append(Path(text))
            continue
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InvalidParameterError(f"no file matches {text!r}")
        out.extend(Path(m) for m in matches)
    return out


def split_out_dir(
    positional: Sequence[Path], out_dir: Path | None, legacy_out: Path | None = None, *, legacy_last: bool = False
) -> tuple[list[Path], Path]:
    """The inputs and the output folder of a batch command: ``-d/--out-dir``, or a deprecated spelling (the
    old ``-o`` of ``compress``, or, with ``legacy_last``, a last positional folder as in ``apply PRESETS IN
    OUT``)."""
    inputs = list(positional)
    if out_dir is not None and legacy_out is not None:
        raise InvalidParameterError("give -d/--out-dir (or the deprecated -o), not both")
    if out_dir is None and legacy_out is not None:
        deprecated("-o DIR (an output folder)", "-d/--out-dir DIR")
        out_dir = legacy_out
    if out_dir is None:
        if legacy_last and len(inputs) == 2 and not inputs[1].is_file():
            deprecated("a last positional OUT_DIR", "-d/--out-dir OUT_DIR")
            return [inputs[0]], inputs[1]
        raise InvalidParameterError("missing the output folder: give -d/--out-dir DIR")
    if not inputs:
        raise InvalidParameterError("give at least one input file or folder")
    return inputs, out_dir
