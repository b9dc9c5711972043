"""Watching a folder pair: score each new (original, processed) pair once and feed the monitor, with a state
file so that a restart loses nothing already read."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import describe_os_error
from ..errors import InputFileError, InvalidParameterError, OptimizerError, OutputError
from ..evaluator import EvaluationResult
from ..jsonio import dumps
from ._jsonlines import JsonLines, append_line, end_torn_line, open_append, read_json_lines
from .core import QualityMonitor
from .rules import check_number

if TYPE_CHECKING:
    from ..evaluator import Evaluator

__all__ = ["FolderWatcher", "WatchItem"]

logger = logging.getLogger("optimizer.monitor")

_STATE = "monitor state file"
# Times a state entry may carry: 1970 to the year 3000 (anything else is not a time this package wrote).
_MIN_TIME, _MAX_TIME = 0.0, 32_503_680_000.0


@dataclass(frozen=True)
class WatchItem:
    """One processed pair: its result, or the error that kept it from being scored."""

    key: str
    original: str
    processed: str
    result: EvaluationResult | None = None
    error: str | None = None
    original_bytes: int = 0
    processed_bytes: int = 0


_Signature = tuple[int, int, int, int]


class FolderWatcher:
    """Scores new pairs that appear in two folders, each once, and feeds them to a monitor.

    Files pair by relative path and stem as in :func:`optimizer.batch.pair_folders` (``a/b.png`` with
    ``a/b.webp``); hidden files and unknown extensions are ignored, so writers that write to a temporary
    name and rename are picked up only when complete. A pair is read only when both files are *settled*:
    their size and modification time did not change since the previous poll and are at least ``settle``
    seconds old, so half-written files are not scored. A pair that cannot be scored (unreadable, sizes
    differ) becomes an ``error`` alert and is not retried until one of its files changes.

    With ``state_file``, every processed pair (result or error) is appended to a JSON-lines file before
    the next one is read. A new watcher on the same file skips those pairs and replays their results into
    the monitor silently, restoring its windows, baselines and counts: stopping loses nothing already read.
    A file rewritten later (new size or modification time) is a new observation.

    The state file is checked before any pair is scored. A path that is a folder, a FIFO or unreadable is an
    :class:`~optimizer.errors.InputFileError`; one that cannot be appended to (or, later, a full disk) is an
    :class:`~optimizer.errors.OutputError` (the pair being recorded is then not marked done, and is scored
    again next time). Inside the file, a last line cut short by a crash is skipped, and so are malformed lines
    (not JSON, invalid UTF-8, wrong types, a non-finite time) with one warning naming them
    (:attr:`skipped_state_lines`); a file with content but no valid entry at all is not a state file and is
    refused rather than appended to.
    """

    STATE_VERSION = 1

    def __init__(
        self,
        orig_dir: str | os.PathLike[str],
        processed_dir: str | os.PathLike[str],
        evaluator: Evaluator | None = None,
        *,
        monitor: QualityMonitor | None = None,
        state_file: str | os.PathLike[str] | None = None,
        settle: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.orig_dir = Path(orig_dir)
        self.processed_dir = Path(processed_dir)
        for root in (self.orig_dir, self.processed_dir):
            if not root.is_dir():
                raise InvalidParameterError(f"{root} is not a folder")
        if evaluator is None:
            from ..evaluator import Evaluator

            evaluator = Evaluator()
        self.evaluator = evaluator
        self.monitor = monitor
        self.settle = check_number(settle, "settle") or 0.0
        if self.settle < 0:
            raise InvalidParameterError(f"settle must be >= 0 seconds, got {settle}")
        self.clock = clock
        self.state_file = Path(state_file) if state_file is not None else None
        self._done: dict[str, _Signature] = {}
        self._pending: dict[str, _Signature] = {}
        self._reported: set[str] = set()
        self.replayed = 0
        self.processed = 0
        #: State lines that were malformed and skipped when this watcher started.
        self.skipped_state_lines = 0
        if self.state_file is not None:
            self._open_state(self.state_file)

    # -- public ---------------------------------------------------------------------------------------

    @property
    def done(self) -> set[str]:
        """Keys already processed (scored or failed), including those restored from the state file."""
        return set(self._done)

    @property
    def pending(self) -> list[str]:
        """Keys seen on the last poll but not settled yet."""
        return sorted(self._pending)

    def poll(self) -> list[WatchItem]:
        """Scan both folders once and process every settled pair not processed before.

        Returns:
            The pairs processed by this poll (results and errors).
        """
        from ..batch import index_folder

        now = self.clock()
        originals, orig_ambiguous = index_folder(self.orig_dir)
        processed, proc_ambiguous = index_folder(self.processed_dir)
        for issue in orig_ambiguous + proc_ambiguous:
            if issue.path not in self._reported:
                self._reported.add(issue.path)
                self._report_unpairable(issue.path, issue.reason)
        items: list[WatchItem] = []
        seen: set[str] = set()
        for key in sorted(originals.keys() & processed.keys()):
            orig, proc = originals[key], processed[key]
            signature = _signature(orig, proc)
            if signature is None:  # vanished between listing and stat
                continue
            if self._done.get(key) == signature:
                continue
            seen.add(key)
            if not self._settled(key, signature, orig, proc, now):
                continue
            self._pending.pop(key, None)
            items.append(self._process(key, orig, proc, signature))
        for key in list(self._pending):
            if key not in seen:
                del self._pending[key]
        return items

    def once(self) -> list[WatchItem]:
        """Process what is there now; pairs still being written get one wait of up to ``settle`` seconds.

        Returns:
            The pairs processed.
        """
        items = self.poll()
        if self._pending:
            time.sleep(self.settle)
            items += self.poll()
        return items

    def run(
        self,
        *,
        interval: float = 1.0,
        stop_event: threading.Event | None = None,
        max_polls: int | None = None,
        on_items: Callable[[list[WatchItem]], Any] | None = None,
    ) -> int:
        """Poll until ``stop_event`` is set (or ``max_polls`` polls).

        Ctrl-C propagates after the pair in progress is either recorded or left for the next run.

        Args:
            interval: Seconds between polls.
            stop_event: Set it (from another thread or a signal handler) to stop.
            max_polls: Stop after this many polls.
            on_items: Called with each non-empty list of processed pairs.

        Returns:
            The number of pairs processed.
        """
        if interval <= 0:
            raise InvalidParameterError(f"interval must be > 0 seconds, got {interval}")
        stop = stop_event or threading.Event()
        polls = 0
        count = 0
        while not stop.is_set():
            items = self.poll()
            count += len(items)
            if on_items is not None and items:
                on_items(items)
            polls += 1
            if max_polls is not None and polls >= max_polls:
                break
            stop.wait(interval)
        return count

    # -- internals ----------------------------------------------------------------------------------

    def _settled(self, key: str, signature: _Signature, orig: Path, proc: Path, now: float) -> bool:
        newest = max(signature[1], signature[3]) / 1e9
        previous = self._pending.get(key)
        if previous != signature:
            self._pending[key] = signature
            # first sight: ready at once only when both files were last written over `settle` seconds ago
            return previous is None and now - newest >= self.settle
        return now - newest >= self.settle

    def _process(self, key: str, orig: Path, proc: Path, signature: _Signature) -> WatchItem:
        try:
            result = self.evaluator.for_reference(orig).score(proc)
        except (OptimizerError, OSError, ValueError) as exc:
            item = WatchItem(
                key,
                str(orig),
                str(proc),
                error=str(exc) or type(exc).__name__,
                original_bytes=signature[0],
                processed_bytes=signature[2],
            )
            logger.warning("%s: could not be scored: %s", key, item.error)
            if self.monitor is not None:
                self.monitor.report_error(key, item.error or "")
        else:
            item = WatchItem(
                key, str(orig), str(proc), result=result, original_bytes=signature[0], processed_bytes=signature[2]
            )
            if self.monitor is not None:
                self.monitor.observe(result, key)
        self._record(item, signature)
        self._done[key] = signature
        self.processed += 1
        return item

    def _report_unpairable(self, path: str, reason: str) -> None:
        logger.warning("%s: %s", path, reason)
        if self.monitor is not None:
            self.monitor.report_error(path, reason)

    def _record(self, item: WatchItem, signature: _Signature) -> None:
        if self.state_file is None:
            return
        entry: dict[str, Any] = {
            "v": self.STATE_VERSION,
            "key": item.key,
            "original": item.original,
            "processed": item.processed,
            "signature": list(signature),
            "time": self.clock(),
        }
        if item.result is not None:
            entry["result"] = item.result.to_dict()
        else:
            entry["error"] = item.error
        append_line(self.state_file, dumps(entry), _STATE)

    def _open_state(self, state_file: Path) -> None:
        """Check the state file can be read and appended to, before any pair is scored."""
        try:
            state_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder of the {_STATE}: {describe_os_error(exc)}", state_file
            ) from None
        lines = read_json_lines(state_file, _STATE)  # a folder, FIFO or unreadable file: InputFileError
        self._replay(state_file, lines)  # a file that is not a state file is refused before it is touched
        end_torn_line(state_file, _STATE)
        os.close(open_append(state_file, _STATE))

    def _replay(self, state_file: Path, lines: JsonLines) -> None:
        """Restore what the state file records; malformed lines are skipped with one warning (see the class)."""
        bad = list(lines.bad)
        restored = 0
        for number, entry in lines.entries:
            try:
                key, signature, stamp, result, error = _state_entry(entry)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                bad.append((number, str(exc) or type(exc).__name__))
                continue
            restored += 1
            self._done[key] = signature
            self.replayed += 1
            if self.monitor is None:
                continue
            if result is not None:
                self.monitor.observe(result, key, silent=True, timestamp=stamp)
            else:
                self.monitor.report_error(key, error, silent=True, timestamp=stamp)
        if lines.torn:
            logger.warning("%s: skipped a last line cut short (a write interrupted by a crash)", state_file)
        if not bad:
            return
        first = "; ".join(f"line {n}: {reason}" for n, reason in bad[:3])
        if restored == 0:
            raise InputFileError(
                f"{state_file}: not a monitor state file ({first}); give another --state path, or move this file "
                "away to start afresh"
            )
        self.skipped_state_lines = len(bad)
        logger.warning("%s: skipped %d malformed line(s) (%s)", state_file, len(bad), first)


def _state_entry(entry: dict[str, Any]) -> tuple[str, _Signature, float | None, EvaluationResult | None, str]:
    """Validate one state line: (key, signature, time, result or None, error message)."""
    key = entry["key"]
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty string, got {key!r}")
    raw = entry["signature"]
    if not isinstance(raw, list) or len(raw) != 4 or not all(type(v) is int and v >= 0 for v in raw):
        raise ValueError(f"signature must be 4 integers >= 0, got {raw!r}")
    stamp = entry.get("time")
    if stamp is not None:
        if type(stamp) not in (int, float) or not _MIN_TIME <= stamp <= _MAX_TIME:
            raise ValueError(f"time must be seconds since the epoch, got {stamp!r}")
        stamp = float(stamp)
    if "result" in entry:
        if not isinstance(entry["result"], dict):
            raise TypeError(f"result must be an object, got {type(entry['result']).__name__}")
        result = EvaluationResult.from_dict(entry["result"])
        if not isinstance(result.composite, float) or not all(isinstance(v, float) for v in result.scores.values()):
            raise TypeError("result scores must be numbers")
        return key, (raw[0], raw[1], raw[2], raw[3]), stamp, result, ""
    error = entry.get("error")
    if not isinstance(error, str):
        raise TypeError(f"an entry holds a result or an error message, got error={error!r}")
    return key, (raw[0], raw[1], raw[2], raw[3]), stamp, None, error


def _signature(orig: Path, proc: Path) -> _Signature | None:
    try:
        a, b = orig.stat(), proc.stat()
    except OSError:
        return None
    return (a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns)
