"""Which process runs a trial: this process as a record (host, pid, start time), and whether the process a
record names is still running.

SQLite studies have no heartbeats (:mod:`optimizer.tuning.storage` records an owner on each running trial
instead); a process is told from a later one that reused its pid by its start time where ``/proc`` gives it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["owner_alive", "process_owner"]


def process_owner() -> dict[str, Any]:
    """This process as a trial's owner record: host name, pid and start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_status(pid)[1]}


def _process_status(pid: int) -> tuple[str | None, str | None]:
    """The state letter and start time (clock ticks since boot) of process ``pid`` from ``/proc``; ``None``
    where ``/proc`` does not say (no such process, or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None, None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (command) ": state is field 3, start time 22
    return (fields[0] if fields else None), (fields[19] if len(fields) > 19 else None)


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process an owner record of this machine names still runs: the pid exists, is not a
    zombie, and (where ``/proc`` tells) started when the recorded one did, so a reused pid is not taken for
    the trial's process."""
    pid = owner.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, run by another user
    except (OSError, OverflowError):
        return False
    state, start = _process_status(pid)
    if state == "Z":
        return False
    recorded = owner.get("start")
    return recorded is None or start is None or str(recorded) == start
