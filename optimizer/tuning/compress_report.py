"""What ``compress`` reports: per image, per format, and for the whole run.

Numbers in JSON follow :mod:`optimizer.jsonio` (non-finite values as strings).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_atomic
from ..jsonio import dumps, json_number

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CompressFailure", "CompressReport", "CompressResult", "FormatOutcome"]


@dataclass(frozen=True)
class FormatOutcome:
    """What the search found in one format for one image.

    ``probes`` counts every encode (on the proxy and at full size); ``full_size_encodes`` those of the whole
    image and ``full_size_checks`` the files checked at full size from disk. ``bytes`` and ``quality`` are
    full-size figures when the format's candidate was encoded at full size, else the search image's
    (``searched_on``: ``"image"`` or ``"proxy"``). ``axis`` is ``"lossless"`` for a lossless candidate.
    """

    format: str
    axis: str
    probes: int
    met: bool
    setting: int | float | None = None
    params: Mapping[str, Any] | None = None
    bytes: int | None = None
    quality: float | None = None
    certified: bool = False
    note: str | None = None
    searched_on: str = "image"
    full_size_encodes: int = 0
    full_size_checks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "axis": self.axis,
            "probes": self.probes,
            "met": self.met,
            "setting": self.setting,
            "params": dict(self.params) if self.params is not None else None,
            "bytes": self.bytes,
            "quality": _json_float(self.quality),
            "certified": self.certified,
            "note": self.note,
            "searched_on": self.searched_on,
            "full_size_encodes": self.full_size_encodes,
            "full_size_checks": self.full_size_checks,
        }


@dataclass(frozen=True)
class CompressResult:
    """One image: the file written, how good it is, and what the search spent.

    ``met`` is true when an encoding in a requested format met the target (the written file then meets it
    too, checked from disk). ``kept_original`` says the original file was written instead of an encoding
    (smaller, or the fallback); ``reason`` explains that and every ``met=False``. ``minimal``: the setting
    one step worse was probed and failed, so under monotonicity no smaller setting of that format meets
    the target. ``proxy`` describes the stand-in searched instead of a large image (None: searched at
    full size); there ``minimal`` needs the step below checked at full size, which is rarely done, and
    ``predicted_minimal`` says the proxy, corrected by the gap measured at full size, predicts it fails.
    """

    input: str
    output: str | None
    format: str
    params: Mapping[str, Any]
    bytes: int
    original_bytes: int | None
    width: int
    height: int
    quality: float
    target: str
    met: bool
    kept_original: bool
    minimal: bool
    probes: Mapping[str, int]
    formats: tuple[FormatOutcome, ...]
    scores: Mapping[str, float]
    seconds: float
    reason: str | None = None
    data: builtins.bytes | None = field(default=None, repr=False, compare=False)
    proxy: str | None = None
    predicted_minimal: bool = False

    @property
    def bits_per_pixel(self) -> float:
        size: int = self.bytes
        return size * 8.0 / (self.width * self.height)

    @property
    def total_probes(self) -> int:
        return sum(self.probes.values())

    @property
    def setting(self) -> int | float | None:
        """The quality-axis value chosen (``None`` when the original was kept)."""
        for outcome in self.formats:
            if outcome.format == self.format and not self.kept_original:
                return outcome.setting
        return None

    @property
    def setting_label(self) -> str:
        """``jpeg quality=84``, ``jxl distance=1.35`` or ``original``."""
        if self.kept_original:
            return "original"
        for outcome in self.formats:
            if outcome.format == self.format and outcome.setting is not None:
                return f"{self.format} {outcome.axis}={outcome.setting:g}"
        return self.format

    @property
    def saved(self) -> float | None:
        """Fraction of the original's bytes saved (negative when larger)."""
        if not self.original_bytes:
            return None
        return 1.0 - self.bytes / self.original_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "format": self.format,
            "setting": self.setting,
            "params": dict(self.params),
            "bytes": self.bytes,
            "original_bytes": self.original_bytes,
            "width": self.width,
            "height": self.height,
            "bits_per_pixel": self.bits_per_pixel,
            "quality": _json_float(self.quality),
            "target": self.target,
            "met": self.met,
            "kept_original": self.kept_original,
            "minimal": self.minimal,
            "probes": dict(self.probes),
            "total_probes": self.total_probes,
            "formats": [o.to_dict() for o in self.formats],
            "scores": {k: _json_float(v) for k, v in self.scores.items()},
            "seconds": self.seconds,
            "reason": self.reason,
            "proxy": self.proxy,
            "predicted_minimal": self.predicted_minimal,
            "full_size_encodes": self.full_size_encodes,
        }

    @property
    def full_size_encodes(self) -> int:
        """Encodes of the whole image (the expensive ones), all formats together."""
        return sum(o.full_size_encodes for o in self.formats)


@dataclass(frozen=True)
class CompressFailure:
    """An input that could not be processed at all (unreadable, encoder error...)."""

    input: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason}


@dataclass
class CompressReport:
    """Every image's result, the inputs that failed, and totals."""

    results: list[CompressResult]
    failures: list[CompressFailure]
    target: str
    formats: tuple[str, ...]
    evaluator: dict[str, Any]
    seconds: float = 0.0
    #: inputs left alone because their output exists (``existing="skip"``); not failures
    skipped: list[CompressFailure] = field(default_factory=list)

    @property
    def all_met(self) -> bool:
        """Every input was processed and every written file met the target with an encoding."""
        return not self.failures and all(r.met for r in self.results)

    @property
    def unmet(self) -> list[CompressResult]:
        return [r for r in self.results if not r.met]

    def totals(self) -> dict[str, Any]:
        results = self.results
        total_bytes = sum(r.bytes for r in results)
        known = [r for r in results if r.original_bytes]
        original = sum(r.original_bytes or 0 for r in known)
        pixels = sum(r.width * r.height for r in results)
        probes = sum(r.total_probes for r in results)
        full_size = sum(r.full_size_encodes for r in results)
        by_format: dict[str, int] = {}
        for r in results:
            for name, count in r.probes.items():
                by_format[name] = by_format.get(name, 0) + count
        return {
            "images": len(results),
            "failed": len(self.failures),
            "skipped": len(self.skipped),
            "met": sum(1 for r in results if r.met),
            "unmet": sum(1 for r in results if not r.met),
            "kept_original": sum(1 for r in results if r.kept_original),
            "bytes": total_bytes,
            "original_bytes": original if known else None,
            "saved": (1.0 - sum(r.bytes for r in known) / original) if original else None,
            "bits_per_pixel": total_bytes * 8.0 / pixels if pixels else None,
            "probes": probes,
            "probes_per_image": probes / len(results) if results else None,
            "probes_by_format": by_format,
            "full_size_encodes": full_size,
            "chosen_formats": {
                f: sum(1 for r in results if r.format == f) for f in sorted({r.format for r in results})
            },
            "seconds": self.seconds,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "formats": list(self.formats),
            "evaluator": self.evaluator,
            "totals": self.totals(),
            "results": [r.to_dict() for r in self.results],
            "failures": [f.to_dict() for f in self.failures],
            "skipped": [f.to_dict() for f in self.skipped],
        }

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """:meth:`to_dict` as JSON text, also written (atomically) to ``path`` when given."""
        text = dumps(self.to_dict(), indent=indent)
        if path is not None:
            write_atomic(path, text + "\n")
        return text

    def to_dataframe(self) -> pd.DataFrame:
        """One row per image (failures included, with their reason)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for r in self.results:
            row = {
                "input": r.input,
                "output": r.output,
                "format": r.format,
                "setting": r.setting,
                "bytes": r.bytes,
                "original_bytes": r.original_bytes,
                "bits_per_pixel": r.bits_per_pixel,
                "quality": r.quality,
                "target": r.target,
                "met": r.met,
                "kept_original": r.kept_original,
                "minimal": r.minimal,
                "total_probes": r.total_probes,
                "seconds": r.seconds,
                "reason": r.reason,
            }
            row.update({f"probes_{name}": count for name, count in r.probes.items()})
            rows.append(row)
        for f in self.failures:
            rows.append({"input": f.input, "met": False, "reason": f.reason})
        return pd.DataFrame(rows)


def _json_float(value: float | None) -> float | str | None:
    return None if value is None else json_number(value)
