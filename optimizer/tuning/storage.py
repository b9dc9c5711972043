"""Where studies live: storage URLs, heartbeat storages for several processes, journal locks, stale trials.

Default storage is one SQLite file per study under ``studies/`` (``OPTIMIZER_STUDIES_DIR`` moves it); any
Optuna storage URL works too (``postgresql://USER:PASSWORD@HOST/DB``, which SQLAlchemy 2.1 maps to the
psycopg 3 driver of the ``postgres`` extra), and ``journal:PATH`` selects Optuna's JournalStorage file
backend, which is safe for several processes on one machine.

Storages meant for several worker processes (a database server, a journal file) record a heartbeat for
every running trial; a trial whose worker stopped beating for the grace period is marked failed and
retried with the same parameters (up to ``max_retry`` times). ``OPTIMIZER_HEARTBEAT_INTERVAL``,
``OPTIMIZER_HEARTBEAT_GRACE`` and ``OPTIMIZER_MAX_RETRY`` change the defaults (10 s, 60 s, 3). SQLite, for
one process, records which process runs each trial instead; resuming a study fails and retries the trials
whose process is gone (:func:`fail_orphaned_trials`).

A storage that cannot be read is a :class:`~optimizer.errors.StudyStorageError` naming the file or the URL
(:func:`reading_storage`), and a string that is not a storage URL an
:class:`~optimizer.errors.InvalidParameterError`.

This is the only module that touches Optuna's private modules and attributes. Optuna offers no public
way to (1) record heartbeats in a journal file (:class:`HeartbeatJournalStorage` implements its private
``BaseHeartbeat`` interface), (2) fail a running trial that never beat (:class:`HeartbeatRDBStorage` reads
the private ``_rdb`` models), (3) lock a journal file with ``flock`` (:class:`FlockJournalLock` implements
the private ``BaseJournalFileLock``), or (4) read a trial's current state from the storage while its
``Trial`` object is alive (:func:`stored_trial_state`). Keeping them here means one file to review when
Optuna's internals move; the supported Optuna range is pinned in ``pyproject.toml`` and CI tests its floor.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal._file import BaseJournalFileLock
from optuna.trial import FrozenTrial, TrialState

from ..errors import InvalidParameterError, StorageUnreachableError, StudyStorageError
from .owners import owner_alive, process_owner

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_RETRY",
    "DEFAULT_ORPHAN_GRACE",
    "HEARTBEAT_ATTR",
    "ORPHANED_ATTR",
    "OWNER_ATTR",
    "FlockJournalLock",
    "HeartbeatJournalStorage",
    "HeartbeatRDBStorage",
    "LocalRDBStorage",
    "is_database_server",
    "check_study_name",
    "connection_errors",
    "default_journal_storage",
    "default_storage",
    "fail_orphaned_trials",
    "fail_stale_trials",
    "journal_backend",
    "reading_storage",
    "redact_storage",
    "resolve_storage",
    "storage_location",
    "storage_url",
    "stored_trial_state",
    "studies_dir",
    "trial_id",
]

#: trial system attribute where the journal storage records a running trial's last heartbeat (epoch seconds)
HEARTBEAT_ATTR = "optimizer:heartbeat"
#: trial system attribute naming the process that runs a trial in SQLite: ``{"host", "pid", "start"}``
OWNER_ATTR = "optimizer:owner"
#: trial system attribute saying why a running trial was failed as orphaned (its process was gone)
ORPHANED_ATTR = "optimizer:orphaned"
DEFAULT_HEARTBEAT_INTERVAL = 10
DEFAULT_GRACE_PERIOD = 60
DEFAULT_MAX_RETRY = 3
#: seconds after which a running SQLite trial of another machine (or of no known process) counts as orphaned
DEFAULT_ORPHAN_GRACE = 24 * 3600


# -- names and URLs ---------------------------------------------------------------------------------------


def studies_dir() -> Path:
    """The folder of the default study files: ``$OPTIMIZER_STUDIES_DIR`` or ``studies``."""
    return Path(os.environ.get("OPTIMIZER_STUDIES_DIR", "studies"))


def check_study_name(study_name: str) -> str:
    """``study_name`` when it is safe as a file name; :class:`InvalidParameterError` otherwise."""
    if not isinstance(study_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", study_name):
        raise InvalidParameterError(
            f"study names use letters, digits, '.', '_' and '-' (up to 121 characters), got {study_name!r}"
        )
    return study_name


def default_storage(study_name: str) -> str:
    """``sqlite:///studies/<name>.db`` (the folder is created)."""
    check_study_name(study_name)
    folder = studies_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (study_name + '.db')}"


def default_journal_storage(study_name: str) -> str:
    """``journal:studies/<name>.journal``: the default when several local worker processes share a study."""
    check_study_name(study_name)
    return f"journal:{studies_dir() / (study_name + '.journal')}"


def redact_storage(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (for presets and logs)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _env_int(name: str, default: int, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameterError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise InvalidParameterError(f"{name} must be >= {minimum}, got {value}")
    return value


def resolve_storage(
    storage: str | optuna.storages.BaseStorage | None,
    study_name: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> optuna.storages.BaseStorage | str:
    """An Optuna storage object for ``storage`` (None: the default SQLite file).

    Database servers and ``journal:PATH`` get heartbeats (``heartbeat_interval`` seconds, a running trial
    is failed after ``grace_period`` seconds without one) and retry such failed trials up to ``max_retry``
    times; the defaults come from ``OPTIMIZER_HEARTBEAT_INTERVAL``, ``OPTIMIZER_HEARTBEAT_GRACE`` and
    ``OPTIMIZER_MAX_RETRY``. SQLite is the single-process default and has none; it records which process
    runs each trial instead (:func:`fail_orphaned_trials`).

    Raises :class:`InvalidParameterError` for a string that is not a storage URL or names an unknown
    scheme, :class:`StudyStorageError` for a file that cannot be read as a study storage (corrupt, a
    folder, another program's schema) and :class:`StorageUnreachableError` for a server that cannot be
    reached; each names the file or the URL (password redacted).
    """
    if storage is None:
        storage = default_storage(study_name)
    if not isinstance(storage, str):
        return storage
    if storage.startswith("sqlite:"):
        _database_url(storage)
        location = storage_location(storage)
        _make_sqlite_folder(storage)
        with reading_storage(location):
            if Path(location).is_dir():
                raise StudyStorageError("is a folder, not a study database", location)
            # A generous busy timeout: several threads (--jobs) write to one SQLite file.
            return LocalRDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    interval = heartbeat_interval or _env_int("OPTIMIZER_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT_INTERVAL, 1)
    grace = grace_period or _env_int("OPTIMIZER_HEARTBEAT_GRACE", max(DEFAULT_GRACE_PERIOD, 3 * interval), 1)
    if grace <= interval:
        raise InvalidParameterError(
            f"the heartbeat grace period must exceed the heartbeat interval, got grace {grace} s and interval {interval} s"
        )
    retries = max_retry if max_retry is not None else _env_int("OPTIMIZER_MAX_RETRY", DEFAULT_MAX_RETRY, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        if storage.startswith("journal:"):
            path = Path(storage.removeprefix("journal:"))
            if not path.name:
                raise InvalidParameterError(f"journal storage needs a file path (journal:PATH), got {storage!r}")
            with reading_storage(str(path)):
                if path.is_dir():
                    raise StudyStorageError("is a folder, not a journal file", str(path))
                path.parent.mkdir(parents=True, exist_ok=True)
                return HeartbeatJournalStorage(journal_backend(path), interval, grace, retry)
        _database_url(storage)
        with reading_storage(redact_storage(storage), server=True):
            return HeartbeatRDBStorage(
                storage,
                heartbeat_interval=interval,
                grace_period=grace,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_stale_trial_callback=retry,
            )


_URL_FORMS = "use sqlite:///PATH, journal:PATH or a database URL such as postgresql://USER:PASSWORD@HOST/DB"


def _database_url(storage: str) -> Any:
    """The parsed SQLAlchemy URL of ``storage``; :class:`InvalidParameterError` (naming the URL, password
    redacted) when it is not one or names a database SQLAlchemy does not know."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = redact_storage(storage)
    try:
        url = make_url(storage)
    except ArgumentError:
        raise InvalidParameterError(f"storage {shown!r} is not a storage URL; {_URL_FORMS}") from None
    except ValueError as exc:  # a port that is not a number, an unparsable query
        reason = redact_storage(_first_line(exc))
        raise InvalidParameterError(f"storage {shown!r} is not a valid URL ({reason}); {_URL_FORMS}") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise InvalidParameterError(f"storage {shown!r}: unknown scheme {url.drivername!r}; {_URL_FORMS}") from None
    return url


def storage_location(storage: str | optuna.storages.BaseStorage) -> str:
    """What messages name for a storage: the file of ``sqlite:///PATH`` and ``journal:PATH``, else the URL
    with its password redacted."""
    if not isinstance(storage, str):
        url = _url_of(storage)
        if url is not None:
            return storage_location(url)
        backend = getattr(storage, "_backend", storage)  # Optuna's caching wrapper keeps the storage here
        path = getattr(getattr(backend, "_backend", None), "_file_path", None)  # a journal file's backend
        return str(path) if path is not None else type(storage).__name__
    for prefix in ("sqlite:///", "journal:"):
        if storage.startswith(prefix):
            return storage.removeprefix(prefix).split("?", 1)[0] if prefix == "sqlite:///" else storage[len(prefix) :]
    return redact_storage(storage)


def is_database_server(storage: str | optuna.storages.BaseStorage | None) -> bool:
    """Whether ``storage`` is a database server (a URL other than ``sqlite:`` and ``journal:``)."""
    url = storage if isinstance(storage, str) else _url_of(storage) if storage is not None else None
    return url is not None and not url.startswith(("sqlite:", "journal:"))


def _url_of(storage: optuna.storages.BaseStorage) -> str | None:
    backend = getattr(storage, "_backend", storage)  # Optuna's caching wrapper keeps the storage here
    url = getattr(backend, "url", None)
    return str(url) if url is not None else None


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only; for SQLAlchemy errors the database's own message."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def reading_storage(location: str, *, server: bool = False) -> Iterator[None]:
    """Turn what a damaged storage raises while it is opened or read into :class:`StudyStorageError` naming
    ``location`` (from :func:`storage_location`).

    Optuna and SQLAlchemy report a damaged file as database errors, JSON errors or the value, type and index
    errors of decoding what they read; a study record of the wrong shape is already a
    :class:`StudyStorageError` and gets the location. With ``server`` (a database server), an operational
    error means the server cannot be reached: :class:`StorageUnreachableError`. A missing study
    (``KeyError``) is left to the caller.
    """
    import sqlalchemy.exc

    try:
        yield
    except StudyStorageError as exc:
        raise exc.at(location) from None
    except sqlalchemy.exc.OperationalError as exc:
        if server:
            raise StorageUnreachableError(f"cannot reach the database: {_first_line(exc)}", location) from None
        raise StudyStorageError(f"cannot be read as a study database: {_first_line(exc)}", location) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StudyStorageError(f"cannot be read as a study database: {_first_line(exc)}", location) from None
    except json.JSONDecodeError as exc:
        raise StudyStorageError(f"holds a record that is not JSON ({exc})", location) from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise StudyStorageError(f"holds a record Optuna cannot decode ({_first_line(exc)})", location) from None
    except OSError as exc:
        raise StudyStorageError(f"cannot be read: {exc.strerror or _first_line(exc)}", location) from None
    except RuntimeError as exc:  # Optuna: a table schema it does not know (another Optuna version)
        if "schema" not in str(exc):
            raise
        reason = f"its table schema is not one Optuna {optuna.__version__} reads (written by another Optuna version?)"
        raise StudyStorageError(reason, location) from None


def _make_sqlite_folder(url: str) -> None:
    """Create the folder of a ``sqlite:///path/file.db`` URL (SQLite creates the file, not its folder)."""
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if url.startswith("sqlite:///") and path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def storage_url(study: optuna.Study) -> str | None:
    """The study's storage URL where Optuna exposes one (RDB storages), else ``None``."""
    storage = getattr(study, "_storage", None)
    return _url_of(storage) if storage is not None else None


def connection_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the storage cannot be reached (yet): worth a retry."""
    import sqlalchemy.exc

    return (
        StorageUnreachableError,
        optuna.exceptions.StorageInternalError,
        ConnectionError,
        sqlalchemy.exc.OperationalError,
    )


# -- trials behind Optuna's back ----------------------------------------------------------------------------


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (Optuna keeps it private; trial numbers are per study)."""
    return int(trial._trial_id)


def stored_trial_state(study: optuna.Study, trial_id: int) -> TrialState | None:
    """The state the storage holds now for a trial (``None`` when it does not know the trial).

    A worker's running trial may have been failed by another worker (a missed heartbeat); the ``Trial``
    object does not know, so the storage is asked directly.
    """
    try:
        return study._storage.get_trial(trial_id).state
    except KeyError:
        return None


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and, per the retry callback, re-queue) running trials whose heartbeat went stale."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# -- heartbeat storages -----------------------------------------------------------------------------------


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats: each running trial records its last beat in the journal.

    Optuna's journal backends have no heartbeat of their own. The beat is a trial system attribute
    (:data:`HEARTBEAT_ATTR`, epoch seconds) written every ``heartbeat_interval`` seconds, so any process
    that reads the journal can tell that a trial's worker is gone (one machine, or hosts with synchronised
    clocks on a shared file system). The start time counts as a beat.
    """

    def __init__(
        self,
        backend: Any,
        heartbeat_interval: int,
        grace_period: int,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = heartbeat_stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed this trial as stale; its result will be discarded

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            # The start time counts as a beat: a retry inherits its failed trial's last beat, and a trial
            # whose worker died before beating at all is judged from its start.
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            beat = max(float(trial.system_attrs.get(HEARTBEAT_ATTR, started)), started)
            if now - beat > self.grace_period:
                stale.append(trial_id(trial))
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage, which also fails a running trial that never recorded a heartbeat.

    Optuna fails only trials whose heartbeat went stale; a worker killed between creating a trial and its
    first beat (milliseconds) would leave the trial running for ever, holding one of the study's last
    budget slots. Such a trial is failed (and retried) once this process has seen it running without any
    heartbeat for the grace period, measured on this process's own clock.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._silent_since: dict[int, float] = {}

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale: list[int] = super()._get_stale_trial_ids(study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        now = time.monotonic()
        silent = self._silent_running_trials(study_id)
        self._silent_since = {tid: self._silent_since.get(tid, now) for tid in silent}
        return stale + [tid for tid, since in self._silent_since.items() if now - since > grace and tid not in stale]

    def _silent_running_trials(self, study_id: int) -> set[int]:
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        trial, beat = models.TrialModel, models.TrialHeartbeatModel
        query = (
            sa.select(trial.trial_id)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .where(trial.study_id == study_id, trial.state == TrialState.RUNNING, beat.trial_heartbeat_id.is_(None))
        )
        with self.engine.connect() as connection:
            return {int(row[0]) for row in connection.execute(query)}


# -- trials of a single process (SQLite) ------------------------------------------------------------------


class LocalRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage for SQLite, which records the process that runs each trial (:data:`OWNER_ATTR`).

    SQLite studies are run by one process (with threads) and have no heartbeats: a process killed mid-trial
    would leave its trial running for ever. The owner record lets the next run of the study tell such a
    trial from one that another live process is running (:func:`fail_orphaned_trials`).
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        # Optuna's caching wrapper calls this (not create_new_trial) and caches the trial it returns.
        frozen: FrozenTrial = super()._create_new_trial(study_id, template_trial)
        if frozen.state == TrialState.RUNNING:
            owner = process_owner()
            self.set_trial_system_attr(trial_id(frozen), OWNER_ATTR, owner)
            frozen.system_attrs = {**frozen.system_attrs, OWNER_ATTR: owner}
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        changed: bool = super().set_trial_state_values(trial_id, state, values)
        if changed and state == TrialState.RUNNING:  # a queued trial taken by this process
            self.set_trial_system_attr(trial_id, OWNER_ATTR, process_owner())
        return changed


def fail_orphaned_trials(study: optuna.Study, *, grace: float | None = None, max_retry: int | None = None) -> list[int]:
    """Fail the running trials of a study without heartbeats (SQLite) whose process is gone, and queue each
    again with the same parameters (up to ``max_retry`` times, as workers retry a stale trial).

    The rule, run when a study is resumed: a trial that a process of this machine runs is orphaned when
    that process no longer exists (killed, crashed, or its pid reused by another program). A trial that a
    process of another machine runs (a study file on a shared disk), or that names no process (a study
    from an older version), cannot be checked: it is left alone with a warning, unless it started more
    than ``grace`` seconds ago (default ``$OPTIMIZER_ORPHAN_GRACE`` or a day). Storages with heartbeats are
    left to :func:`fail_stale_trials`.

    Returns:
        The numbers of the trials failed; each failed trial carries :data:`ORPHANED_ATTR` (the reason)
        and its retry the system attribute ``failed_trial``.
    """
    from optuna.storages._heartbeat import is_heartbeat_enabled

    storage = study._storage
    if is_heartbeat_enabled(storage):
        return []
    grace = grace if grace is not None else _env_int("OPTIMIZER_ORPHAN_GRACE", DEFAULT_ORPHAN_GRACE, 0)
    retries = max_retry if max_retry is not None else _env_int("OPTIMIZER_MAX_RETRY", DEFAULT_MAX_RETRY, 0)
    host, now = socket.gethostname(), time.time()
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(OWNER_ATTR)
        owner = owner if isinstance(owner, dict) else {}
        age = now - trial.datetime_start.timestamp() if trial.datetime_start else 0.0
        if owner.get("host") == host:
            if owner_alive(owner):
                continue
            reason = f"its process {owner.get('pid')} on this machine is gone"
        elif age > grace:
            reason = f"it started {age / 3600:.1f} hours ago on {owner.get('host') or 'an unknown process'}"
        else:
            where = f"process {owner.get('pid')} on {owner['host']}" if owner.get("host") else "an unknown process"
            warnings.warn(
                f"trial {trial.number} of study {study.study_name!r} is running in {where}, which cannot be checked "
                f"from here; it is left alone, and failed and retried once it is {grace / 3600:g} hours old "
                "(OPTIMIZER_ORPHAN_GRACE)",
                stacklevel=2,
            )
            continue
        try:
            storage.set_trial_system_attr(trial_id(trial), ORPHANED_ATTR, reason)
            if not storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished meanwhile
        _retry(study, storage.get_trial(trial_id(trial)), retries)
        failed.append(trial.number)
    return failed


def _retry(study: optuna.Study, failed: FrozenTrial, max_retry: int) -> None:
    """Queue ``failed``'s parameters again, as Optuna's retry callback does (``failed_trial`` and
    ``retry_history`` recorded, at most ``max_retry`` retries of one trial), without carrying the dead
    process's owner record and the failure reason over to the retry."""
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if len(history) > max_retry:
        return
    carried = {k: v for k, v in failed.system_attrs.items() if k not in (OWNER_ATTR, ORPHANED_ATTR)}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            system_attrs={**carried, "failed_trial": failed.number, "retry_history": history},
        )
    )


# -- journal files ------------------------------------------------------------------------------------------


class FlockJournalLock(BaseJournalFileLock):
    """A blocking ``flock`` on ``PATH.flock``, then Optuna's own lock file for the journal.

    Optuna's lock files are polled with exponential back-off (up to 1 s a try) and outlive a killed
    holder by a 30 s grace period; with several busy workers appending to one journal that adds seconds
    per trial. ``flock`` queues the waiters in the kernel and is released when its holder dies, so the
    inner Optuna lock is always free for the one process that holds the ``flock`` (it is kept so that
    plain Optuna writers of the same journal still exclude each other from our workers).
    """

    def __init__(self, filepath: str) -> None:
        from optuna.storages.journal import JournalFileSymlinkLock

        self._flock_path = filepath + ".flock"
        self._inner = JournalFileSymlinkLock(filepath)
        self._local = threading.local()

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self._flock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._inner.acquire()
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._local.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._local, "fd", None)
        self._local.fd = None
        try:
            self._inner.release()
        finally:
            if fd is not None:
                os.close(fd)


def journal_backend(path: str | Path) -> optuna.storages.journal.JournalFileBackend:
    """Optuna's journal file backend for ``path`` with :class:`FlockJournalLock` where ``flock`` exists."""
    from optuna.storages.journal import JournalFileBackend

    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX: Optuna's default lock
        return JournalFileBackend(str(path))
    return JournalFileBackend(str(path), lock_obj=FlockJournalLock(str(path)))
