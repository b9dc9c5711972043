"""Request bodies: a streaming multipart reader with limits, and the batch zip reader.

Why not Starlette's form parser: it bounds text fields only (``max_part_size``), spools file parts of any
size to temporary files, and cannot stop a body at a total size. Here every part is held in memory under
its limit (``max_file_bytes`` for files, 64 KiB for text fields), the request under ``max_request_bytes``,
and both are checked chunk by chunk as the body arrives, so an oversized upload costs at most one limit's
worth of memory. After a limit is hit the rest of the body is read and discarded (up to a bound) before
the 413 is sent, so that ordinary clients, which send the whole body before reading the answer, get it.

Zip archives (``POST /evaluate/batch``) are read in memory and never extracted: names are only keys, so a
path like ``../../etc/passwd`` can name nothing on the server; unsafe names are still listed as failures.
Decompression is bounded per entry and in total by bytes actually produced (declared sizes are checked too,
but never trusted), and entries whose compression ratio exceeds ``max_ratio`` are refused unread.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from .errors import ServiceError

if TYPE_CHECKING:
    from starlette.requests import Request

try:  # python-multipart >= 0.0.13 is imported as python_multipart; older releases as multipart
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # pragma: no cover - depends on the installed release
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

__all__ = ["Form", "Upload", "InputIssue", "discard_body", "read_form", "read_zip_pairs", "safe_label"]

#: Largest text field (profile names, metric lists, targets).
MAX_FIELD_BYTES = 64 * 1024
#: Largest header block of one part.
MAX_PART_HEADER_BYTES = 16 * 1024
#: After a limit is hit, at most this much of the remaining body is read and discarded before answering.
DRAIN_BYTES = 64 * 1024 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_label(name: str | None, fallback: str) -> str:
    """A client-supplied file name reduced to a display label: last path component, no control characters."""
    if not name:
        return fallback
    text = _CONTROL.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return text[:200] or fallback


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory."""

    field: str
    filename: str | None
    data: bytes = dataclass_field(repr=False)

    @property
    def label(self) -> str:
        """How results and errors name this file (its sanitised name, else its field)."""
        return safe_label(self.filename, self.field)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Form:
    """The parts of a multipart body: files and text fields by field name."""

    files: dict[str, Upload] = dataclass_field(default_factory=dict)
    fields: dict[str, str] = dataclass_field(default_factory=dict)
    received: int = 0


class _PartState:
    __slots__ = ("data", "filename", "header_bytes", "headers", "is_file", "name", "raw_name", "raw_value")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.raw_name = b""
        self.raw_value = b""
        self.header_bytes = 0
        self.name: str | None = None
        self.filename: str | None = None
        self.is_file = False
        self.data = bytearray()


class _FormBuilder:
    """python-multipart callbacks that keep parts in memory under their limits."""

    def __init__(self, max_file_bytes: int, max_parts: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_parts = max_parts
        self.form = Form()
        self.part = _PartState()
        self.parts = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.part = _PartState()
        self.parts += 1
        if self.parts > self.max_parts:
            raise ServiceError(
                413, "too_many_entries", f"a request may hold at most {self.max_parts} parts", limit=self.max_parts
            )

    def _header_bytes(self, count: int) -> None:
        self.part.header_bytes += count
        if self.part.header_bytes > MAX_PART_HEADER_BYTES:
            raise ServiceError(400, "bad_request", f"a part's headers may be at most {MAX_PART_HEADER_BYTES} bytes")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.part.raw_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self.part.raw_value += data[start:end]

    def on_header_end(self) -> None:
        part = self.part
        part.headers.append((part.raw_name.strip().lower(), part.raw_value.strip()))
        part.raw_name = b""
        part.raw_value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        disposition = next((v for k, v in part.headers if k == b"content-disposition"), b"")
        kind, options = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in options:
            raise ServiceError(
                400, "bad_request", 'every part needs a "Content-Disposition: form-data; name=..." header'
            )
        part.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            part.is_file = True
            part.filename = options[b"filename"].decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        limit = self.max_file_bytes if part.is_file else MAX_FIELD_BYTES
        if len(part.data) + (end - start) > limit:
            what = (
                f"file {safe_label(part.filename, part.name or '?')!r} (field {part.name!r})"
                if part.is_file
                else f"text field {part.name!r}"
            )
            raise ServiceError(
                413, "too_large", f"{what} is larger than the limit of {limit:,} bytes", limit=limit, field=part.name
            )
        part.data += data[start:end]

    def on_part_end(self) -> None:
        part, form = self.part, self.form
        name = part.name or ""
        if name in form.files or name in form.fields:
            raise ServiceError(422, "unexpected_field", f"field {name!r} is given more than once", field=name)
        if part.is_file:
            form.files[name] = Upload(name, part.filename, bytes(part.data))
        else:
            form.fields[name] = part.data.decode("utf-8", "replace")


async def read_form(request: Request, *, max_file_bytes: int, max_request_bytes: int, max_parts: int) -> Form:
    """Read a ``multipart/form-data`` body under the limits; see the module doc.

    A request without a body (no Content-Type) gives an empty form and a urlencoded body a form of text
    fields, so that missing files are reported as such (422); any other content type is 415.
    """
    content_type = request.headers.get("content-type")
    stream = request.stream()
    if not content_type:
        await _drain(stream, 0, max_request_bytes)
        return Form()
    kind, params = parse_options_header(content_type)
    if kind == b"application/x-www-form-urlencoded":  # text fields only: files are then reported missing
        return await _read_urlencoded(stream, max_request_bytes)
    if kind != b"multipart/form-data":
        await _drain(stream, 0, max_request_bytes)
        raise ServiceError(
            415,
            "unsupported_media_type",
            f"expected a multipart/form-data body, got Content-Type {kind.decode('latin-1')!r}",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        await _drain(stream, 0, max_request_bytes)
        raise ServiceError(400, "bad_request", "the multipart Content-Type has no boundary parameter")
    declared = _content_length(request)
    if declared is not None and declared > max_request_bytes:
        await _drain(stream, 0, max_request_bytes)
        raise _request_too_large(max_request_bytes, declared)
    builder = _FormBuilder(max_file_bytes, max_parts)
    parser = MultipartParser(boundary, builder.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_request_bytes:
                raise _request_too_large(max_request_bytes, declared)
            parser.write(chunk)
        parser.finalize()
    except ServiceError:
        await _drain(stream, received, max_request_bytes)
        raise
    except Exception as exc:  # python-multipart's parse errors (and nothing else reaches here)
        if type(exc).__module__.split(".")[0] not in ("python_multipart", "multipart"):
            raise
        await _drain(stream, received, max_request_bytes)
        raise ServiceError(400, "bad_request", f"malformed multipart body: {exc}") from None
    builder.form.received = received
    return builder.form


async def _read_urlencoded(stream: AsyncIterator[bytes], max_request_bytes: int) -> Form:
    limit = min(max_request_bytes, 4 * MAX_FIELD_BYTES)
    body = bytearray()
    async for chunk in stream:
        body += chunk
        if len(body) > limit:
            await _drain(stream, len(body), max_request_bytes)
            raise _request_too_large(limit, None)
    form = Form(received=len(body))
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
    except ValueError as exc:
        raise ServiceError(400, "bad_request", f"malformed form body: {exc}") from None
    for name, value in pairs:
        if name in form.fields:
            raise ServiceError(422, "unexpected_field", f"field {name!r} is given more than once", field=name)
        form.fields[name] = value
    return form


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _request_too_large(limit: int, declared: int | None) -> ServiceError:
    size = f" (Content-Length {declared:,})" if declared is not None else ""
    return ServiceError(
        413, "too_large", f"the request body is larger than the limit of {limit:,} bytes{size}", limit=limit
    )


async def discard_body(request: Request, max_request_bytes: int) -> None:
    """Read and drop a body that will not be used (a request refused before reading it), bounded."""
    await _drain(request.stream(), 0, max_request_bytes)


async def _drain(stream: AsyncIterator[bytes], received: int, limit: int) -> None:
    """Read and drop the rest of the body (bounded), so that the client gets to read our answer."""
    budget = limit + DRAIN_BYTES
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > budget:
                return
    except Exception:  # noqa: BLE001 - the client went away or the stream was consumed: nothing to drain
        return


# --------------------------------------------------------------------------------------------------
# Zip archives of two folders


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
                    sides_read.append(Upload(_CONTROL.sub("", info.filename)[:300] or side, None, data))
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
