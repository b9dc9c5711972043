"""Batch archives: pairs read from a zip in memory, never extracted.

Names are only keys, so a path like ``../../etc/passwd`` can name nothing on the server; unsafe names are
still listed as failures. Decompression is bounded per entry and in total by bytes actually produced
(declared sizes are checked too, but never trusted), and entries whose compression ratio exceeds
``max_ratio`` are refused unread.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import ServiceError
from .uploads import CONTROL_CHARACTERS, Upload

__all__ = ["InputIssue", "read_zip_pairs"]


@dataclass(frozen=True)
class InputIssue:
    """An input (archive entry or pair field) that was not scored: ``kind`` is ``unpaired`` or ``failed``, as in
    folder batches; ``type`` is the error type a single request would have got."""

    path: str
    reason: str
    kind: str
    type: str | None = None


_SIDES = ("original", "processed")
#: Entries smaller than this are never refused for their compression ratio (flat test images compress well).
_RATIO_FLOOR = 256 * 1024


def read_zip_pairs(
    data: bytes,
    *,
    image_extensions: frozenset[str],
    max_entries: int,
    max_file_bytes: int,
    max_total_bytes: int,
    max_ratio: float,
    max_pairs: int,
) -> tuple[list[tuple[str, Upload, Upload]], list[InputIssue]]:
    """Pair ``original/…`` with ``processed/…`` entries by relative path and stem, reading only paired ones.

    One common top folder (``batch/original/…``) is allowed. Returns ``(key, original, processed)`` triples
    and the entries left out. Raises :class:`ServiceError` when the archive as a whole cannot be used: not a
    zip (422), more than ``max_entries`` entries or ``max_pairs`` pairs (413).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ServiceError(422, "invalid_archive", f"field 'archive' is not a readable zip file: {exc}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise ServiceError(
                413,
                "too_many_entries",
                f"the archive has {len(infos):,} entries, over the limit of {max_entries:,}",
                limit=max_entries,
            )
        issues: list[InputIssue] = []
        entries: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
        for info in infos:
            parts = _entry_parts(info.filename)
            if parts is None:
                issues.append(
                    InputIssue(info.filename, "unsafe path (absolute, or with '..'); ignored", "failed", "unsafe_path")
                )
                continue
            if info.is_dir() or not parts or any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX":
                continue
            if PurePosixPath(parts[-1]).suffix.lower() not in image_extensions:
                continue  # like folder batches: other files are not images to pair
            entries.append((parts, info))
        roots = {parts[0] for parts, _ in entries}
        strip = 1 if len(roots) == 1 and not roots & set(_SIDES) and all(len(p) > 2 for p, _ in entries) else 0
        sides: dict[str, dict[str, list[zipfile.ZipInfo]]] = {side: {} for side in _SIDES}
        for parts, info in entries:
            parts = parts[strip:]
            if len(parts) < 2 or parts[0] not in _SIDES:
                issues.append(InputIssue(info.filename, "not inside an original/ or processed/ folder", "unpaired"))
                continue
            rel = PurePosixPath(*parts[1:])
            sides[parts[0]].setdefault(rel.with_suffix("").as_posix(), []).append(info)
        index: dict[str, dict[str, zipfile.ZipInfo]] = {}
        for side, found in sides.items():
            index[side] = {}
            for key, members in found.items():
                if len(members) > 1:
                    names = ", ".join(m.filename for m in members)
                    for m in members:
                        issues.append(
                            InputIssue(
                                m.filename, f"ambiguous: several files share the stem {key!r} ({names})", "unpaired"
                            )
                        )
                else:
                    index[side][key] = members[0]
        originals, processed = index["original"], index["processed"]
        keys = sorted(originals.keys() & processed.keys())
        if len(keys) > max_pairs:
            raise ServiceError(
                413,
                "too_many_pairs",
                f"the archive pairs {len(keys):,} images, over the limit of {max_pairs:,} per batch",
                limit=max_pairs,
            )
        for key in sorted(originals.keys() - processed.keys()):
            issues.append(InputIssue(originals[key].filename, f"no processed file for {key!r}", "unpaired"))
        for key in sorted(processed.keys() - originals.keys()):
            issues.append(InputIssue(processed[key].filename, f"no original file for {key!r}", "unpaired"))
        budget = _Budget(max_total_bytes)
        pairs: list[tuple[str, Upload, Upload]] = []
        for key in keys:
            sides_read = []
            for side, info in (("original", originals[key]), ("processed", processed[key])):
                try:
                    data = _read_entry(archive, info, max_file_bytes, max_ratio, budget)
                    sides_read.append(Upload(CONTROL_CHARACTERS.sub("", info.filename)[:300] or side, None, data))
                except ServiceError as exc:
                    issues.append(InputIssue(info.filename, exc.message, "failed", exc.type))
                    break
            if len(sides_read) == 2:
                pairs.append((key, sides_read[0], sides_read[1]))
        return pairs, issues


class _Budget:
    """Bytes of decompressed data the whole archive may still produce."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total

    def take(self, count: int) -> None:
        self.left -= count


def _entry_parts(name: str) -> tuple[str, ...] | None:
    """Path components of an entry name, or ``None`` for an absolute or parent-escaping one."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return None
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        return None
    return parts


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int, max_ratio: float, budget: _Budget
) -> bytes:
    """Decompress one entry, never producing more than its limit or the archive's remaining budget."""
    if info.flag_bits & 0x1:
        raise ServiceError(422, "invalid_archive", "encrypted entries are not supported")
    if info.file_size > max_bytes:
        raise ServiceError(413, "too_large", f"entry is {info.file_size:,} bytes, over the limit of {max_bytes:,}")
    if info.file_size > max_ratio * max(info.compress_size, 1) and info.file_size > _RATIO_FLOOR:
        raise ServiceError(
            413,
            "too_large",
            f"entry expands {info.file_size / max(info.compress_size, 1):,.0f} times "
            f"({info.compress_size:,} -> {info.file_size:,} bytes), over the ratio "
            f"limit of {max_ratio:g}; refused as a likely zip bomb",
        )
    cap = min(max_bytes, budget.left)
    if cap <= 0:
        raise ServiceError(413, "too_large", f"the archive's entries add up to more than {budget.total:,} bytes")
    try:
        with archive.open(info) as handle:
            data = handle.read(cap + 1)
    except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise ServiceError(422, "invalid_archive", f"entry cannot be read: {exc}") from None
    budget.take(len(data))
    if len(data) > cap:
        if cap < max_bytes:
            raise ServiceError(413, "too_large", f"the archive's entries add up to more than {budget.total:,} bytes")
        raise ServiceError(
            413, "too_large", f"entry expands to more than {max_bytes:,} bytes (its header claimed {info.file_size:,})"
        )
    return data
