"""Scale-out: many worker processes, on one machine or many, running the trials of one study.

A study lives in a storage that several processes can share: a database server (``postgresql://...``) for
workers on several machines, or a journal file (``journal:PATH``) for processes on one machine. The study
definition (space, target, mode, aggregate, evaluator, corpus fingerprint, trial budget) is stored with the
study, so a worker needs only the study name, the storage URL and the images: :func:`join_study` reads
the definition, checks that the images are the study's corpus, and :func:`run_worker` runs trials until
the study holds its budget of finished (complete or pruned) trials, or a deadline passes.

Crashes: every running trial records a heartbeat. A trial whose worker stopped beating for the grace
period is marked failed by the next worker that looks, and retried with the same parameters (Optuna's
retry callback; the retry carries the system attribute ``failed_trial``). A finished trial is never
lost or counted twice: a worker whose trial was failed under it (a heartbeat missed for longer than the
grace period) discards its result instead of reporting it.

Budget: exact across workers. A worker starts a trial only while ``finished + running < budget`` (so no
trial starts that could not count), and a trial that still finds itself beyond the budget once created (two
workers starting at the same instant) ends as failed with the user attribute ``surplus`` before doing
any work. The rule: a trial runs only if the finished trials plus the running or waiting trials with
smaller numbers are fewer than the budget; trial numbers are assigned in creation order, so the trials
that may finish never exceed the budget. A worker waits (polling, and failing stale trials) while others
hold the remaining slots, because a running trial can still fail and free its slot.

:func:`tune_workers` is ``tune --workers N``: it creates the study, starts N worker processes on this
machine (one CPU thread each, or cores / N), shows progress, waits, and builds the presets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from ..errors import EncodeError, InvalidParameterError, OptimizerError, StudyError
from ..imageio import Image, ImageSource, load_image
from .corpus import expand_sources, load_corpus
from .objective import Objective
from .space import SearchSpace
from .study import (
    DEFINITION_ATTR,
    HEARTBEAT_ATTR,
    PRUNE_ATTR,
    PreparedStudy,
    StudyDefinition,
    TuningResult,
    _as_space,
    default_journal_storage,
    load_study,
    make_sampler,
    prepare_study,
    redact_storage,
    resolve_storage,
)
from .target import Target

__all__ = [
    "ATTR_SURPLUS",
    "ATTR_WORKER",
    "FlockJournalLock",
    "HeartbeatJournalStorage",
    "HeartbeatRDBStorage",
    "JoinedStudy",
    "StudyCounts",
    "WorkerReport",
    "join_study",
    "journal_backend",
    "limit_threads",
    "run_worker",
    "study_counts",
    "tune_workers",
    "worker_command",
]

#: user attribute naming the worker (host:pid) that ran a trial
ATTR_WORKER = "worker"
#: user attribute set on a trial that found the budget already taken by other workers
ATTR_SURPLUS = "surplus"

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_CONNECT_RETRY_S = 2.0


# -- storage -------------------------------------------------------------------------------------------


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with heartbeats: each running trial records its last beat in the journal.

    Optuna's journal backends have no heartbeat of their own. The beat is a trial system attribute
    (:data:`~optimizer.tuning.study.HEARTBEAT_ATTR`, epoch seconds) written every ``heartbeat_interval``
    seconds, so any process that reads the journal can tell that a trial's worker is gone (one machine,
    or hosts with synchronised clocks on a shared file system). The start time counts as a beat.
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
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.heartbeat_stale_trial_callback

    def get_failed_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        """The name Optuna before 4.9 asks for."""
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
        stale = super()._get_stale_trial_ids(study_id)
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


try:  # the lock interface of Optuna's journal file backend
    from optuna.storages.journal._file import BaseJournalFileLock as _LockBase
except ImportError:  # pragma: no cover - older layouts: the backend only calls acquire() and release()
    _LockBase = object  # type: ignore[assignment,misc]


class FlockJournalLock(_LockBase):  # type: ignore[misc,valid-type]
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


def journal_backend(path: str | Path) -> Any:
    """Optuna's journal file backend for ``path`` with :class:`FlockJournalLock` where ``flock`` exists."""
    from optuna.storages.journal import JournalFileBackend

    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - not POSIX: Optuna's default lock
        return JournalFileBackend(str(path))
    return JournalFileBackend(str(path), lock_obj=FlockJournalLock(str(path)))


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _connection_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [optuna.exceptions.StorageInternalError, ConnectionError]
    try:
        import sqlalchemy.exc

        errors.append(sqlalchemy.exc.OperationalError)
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        pass
    return tuple(errors)


# -- counting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyCounts:
    """Trials of a study by state (``finished`` = complete + pruned: what the budget counts)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned


def study_counts(study: optuna.Study) -> StudyCounts:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return StudyCounts(
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
    )


def _budget(study: optuna.Study, fallback: int | None) -> int:
    """The study's stored trial budget (re-read each time: a resumed coordinator may raise it)."""
    stored = study.user_attrs.get(DEFINITION_ATTR) or {}
    budget = stored.get("n_trials", fallback)
    if budget is None:
        raise StudyError(f"study {study.study_name!r} has no trial budget (n_trials) in its stored definition")
    return int(budget)


class _SurplusTrialError(OptimizerError):
    """A trial created after other workers had taken the study's remaining budget."""


class _DiscardedTrialError(OptimizerError):
    """A trial that another worker failed (stale heartbeat) while this one was still running it."""


# -- joining -------------------------------------------------------------------------------------------


@dataclass
class JoinedStudy(PreparedStudy):
    """A study joined by a worker: its stored definition and an objective built from it."""

    @property
    def budget(self) -> int:
        return _budget(self.study, self.definition.n_trials)


def join_study(
    study_name: str,
    storage: str,
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    space: SearchSpace | Mapping[str, Any] | str | Path | None = None,
    sampler: str = "tpe",
    seed: int | None = None,
    device: str | None = None,
    wait: float = 0.0,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> JoinedStudy:
    """Open an existing study and build its objective from the stored definition and ``images``.

    Refuses (:class:`StudyError`, saying what differs) images whose corpus fingerprint differs from the
    study's, a ``space`` (when given) other than the study's, and metric versions other than the study's.
    ``wait`` seconds: keep retrying while the storage is unreachable or the study does not exist yet
    (workers started before the database or the coordinator).
    """
    if not study_name:
        raise InvalidParameterError("a worker needs the study name (--study)")
    if not storage or storage.startswith("sqlite:"):
        raise InvalidParameterError(
            "workers need a storage several processes can share: a database URL (postgresql://...) or "
            f"journal:PATH; got {redact_storage(storage or '(none)')!r}"
        )
    study, definition = _load_when_ready(
        study_name,
        storage,
        wait=wait,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    search = definition.space_obj
    if space is not None:
        _check_space(study_name, definition, space)
    sources = _ordered_sources(images, definition.corpus.get("names") or [])
    corpus = load_corpus(sources, widths=search.widths, reference_transform=search.reference_transform)
    _check_corpus(study_name, definition, corpus)
    evaluator = definition.evaluator_obj(device)
    _check_evaluator(study_name, definition, evaluator.describe())
    study.sampler = make_sampler(sampler, definition.mode, seed=seed, constant_liar=True)
    prune_bar = study.user_attrs.get(PRUNE_ATTR, definition.target)  # the coordinator's bar (tiers included)
    objective = Objective(
        corpus,
        search,
        Target.parse(definition.target),
        evaluator,
        mode=definition.mode,
        aggregate_by=definition.aggregate,
        tradeoff_lambda=definition.tradeoff_lambda,
        time_objective=definition.time_objective,
        prune=prune_bar is not None,
        prune_target=Target.parse(prune_bar) if prune_bar is not None else None,
    )
    return JoinedStudy(study=study, definition=definition, objective=objective, storage=storage)


def _load_when_ready(
    study_name: str, storage: str, *, wait: float, **storage_options: Any
) -> tuple[optuna.Study, StudyDefinition]:
    until = time.monotonic() + max(0.0, wait)
    shown = redact_storage(storage)
    while True:
        try:
            resolved = resolve_storage(storage, study_name, **storage_options)
            if study_name in optuna.study.get_all_study_names(resolved):
                return load_study(study_name, resolved)
            problem = f"no study named {study_name!r} in {shown}"
        except _connection_errors() as exc:
            problem = f"cannot reach storage {shown}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        if time.monotonic() >= until:
            hint = "; create it with `optimizer tune ... --storage URL --study NAME`" if "no study" in problem else ""
            raise StudyError(problem + hint + (f" (waited {wait:g} s)" if wait > 0 else ""))
        time.sleep(min(_CONNECT_RETRY_S, max(0.05, until - time.monotonic())))


def _ordered_sources(images: Iterable[ImageSource | Image] | str | Path, names: Sequence[str]) -> Any:
    """Paths reordered to the study's corpus order, so every worker scores (and prunes) in one order."""
    sources = expand_sources(images)
    if names and all(isinstance(s, (str, Path)) for s in sources):
        rank = {name: i for i, name in enumerate(names)}
        sources.sort(key=lambda s: rank.get(Path(s).name, len(rank)))
    return sources


def _check_corpus(study_name: str, definition: StudyDefinition, corpus: Any) -> None:
    stored = definition.corpus
    if corpus.fingerprint == stored.get("fingerprint"):
        return
    theirs, mine = set(stored.get("names") or []), set(corpus.names)
    details = []
    if mine - theirs:
        details.append("not in the study: " + _few(sorted(mine - theirs)))
    if theirs - mine:
        details.append("missing: " + _few(sorted(theirs - mine)))
    if not details:
        details.append("same file names, different pixels")
    raise StudyError(
        f"cannot join study {study_name!r}: a different corpus. The study was created with "
        f"{stored.get('images')} images (fingerprint {stored.get('fingerprint')}); these {len(corpus.names)} "
        f"images give fingerprint {corpus.fingerprint} ({'; '.join(details)})"
    )


def _check_space(
    study_name: str, definition: StudyDefinition, space: SearchSpace | Mapping[str, Any] | str | Path
) -> None:
    stored = definition.space_obj.to_dict()
    mine = _as_space(space).to_dict()
    if stored == mine:
        return
    diffs = [f"{key}: study {a!r}, given {b!r}" for key, a, b in _dict_differences(stored, mine)]
    raise StudyError(f"cannot join study {study_name!r}: a different search space ({'; '.join(diffs[:6])})")


def _check_evaluator(study_name: str, definition: StudyDefinition, mine: Mapping[str, Any]) -> None:
    stored = definition.evaluator
    diffs = [
        f"{key}: study {a!r}, this worker {b!r}"
        for key, a, b in _dict_differences(
            {k: stored.get(k) for k in ("metrics", "metric_versions")},
            {k: mine.get(k) for k in ("metrics", "metric_versions")},
        )
    ]
    if diffs:
        raise StudyError(
            f"cannot join study {study_name!r}: different metrics ({'; '.join(diffs[:6])}); install the same optimizer version"
        )


def _dict_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            out.extend(_dict_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def _few(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# -- running -------------------------------------------------------------------------------------------


@dataclass
class WorkerReport:
    """What one worker did: trials by outcome and why it stopped (``budget``, ``deadline`` or ``stopped``)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    surplus: int = 0
    discarded: int = 0
    stopped: str = ""
    numbers: list[int] = field(default_factory=list)

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed + self.surplus + self.discarded


class _Guarded:
    """The objective behind the budget check: a trial beyond the budget ends before any work."""

    def __init__(
        self, study: optuna.Study, objective: Callable[[optuna.Trial], Any], fallback_budget: int | None, worker: str
    ) -> None:
        self.study = study
        self.objective = objective
        self.fallback_budget = fallback_budget
        self.worker = worker
        self.current: int | None = None

    def __call__(self, trial: optuna.Trial) -> Any:
        self.current = trial._trial_id
        budget = _budget(self.study, self.fallback_budget)
        finished = ahead = 0
        for other in self.study.get_trials(deepcopy=False):
            if other.state in _FINISHED:
                finished += 1
            elif other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
                ahead += 1
        trial.set_user_attr(ATTR_WORKER, self.worker)
        if finished + ahead >= budget:
            trial.set_user_attr(ATTR_SURPLUS, True)
            trial.set_user_attr("error", f"surplus: the budget of {budget} trials was taken by other workers")
            raise _SurplusTrialError(f"trial {trial.number} is beyond the budget of {budget} trials")
        result = self.objective(trial)
        if self.study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            # Failed by another worker after missed heartbeats; its retry counts instead of this result.
            raise _DiscardedTrialError(f"trial {trial.number} was failed by another worker while it ran")
        return result


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    n_trials: int | None = None,
    deadline: float | None = None,
    poll: float = 1.0,
    max_failures: int = 5,
    stop: threading.Event | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
) -> WorkerReport:
    """Run trials of ``study`` until it holds its budget of finished trials, ``deadline`` (epoch seconds)
    passes or ``stop`` is set; safe with any number of workers on the same study.

    The budget is the study's stored ``n_trials`` (``n_trials`` here is only the fallback for a study
    without one). A trial in progress at the deadline finishes. ``max_failures`` failed trials in a row
    (encoder errors) stop the worker with :class:`StudyError` rather than looping.
    """
    if poll <= 0:
        raise InvalidParameterError(f"poll must be > 0 seconds, got {poll}")
    stop = stop or threading.Event()
    report = WorkerReport()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    guarded = _Guarded(study, objective, n_trials, worker)
    failures = 0
    last_error = ""

    def record(_: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures, last_error
        report.numbers.append(trial.number)
        if trial.user_attrs.get(ATTR_SURPLUS):
            report.surplus += 1
        elif trial.state == TrialState.COMPLETE:
            report.complete += 1
        elif trial.state == TrialState.PRUNED:
            report.pruned += 1
        else:
            report.failed += 1
            failures += 1
            last_error = str(trial.user_attrs.get("error", "unknown"))
            return
        failures = 0

    while True:
        if stop.is_set():
            report.stopped = "stopped"
            break
        if deadline is not None and time.time() >= deadline:
            report.stopped = "deadline"
            break
        _fail_stale_trials(study)
        budget = _budget(study, n_trials)
        counts = study_counts(study)
        if counts.finished >= budget:
            report.stopped = "budget"
            break
        if counts.finished + counts.running >= budget:
            # Other workers hold the remaining slots; one may still fail (or die) and free its slot.
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.time()))
            stop.wait(wait)
            continue
        try:
            study.optimize(
                guarded,
                n_trials=1,
                catch=(EncodeError, _SurplusTrialError, _DiscardedTrialError),
                callbacks=[record, *callbacks],
                gc_after_trial=False,
                show_progress_bar=False,
            )
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, AssertionError) as exc:
            # Optuna cannot tell a trial that another worker already failed (stale heartbeat): it raises
            # ValueError, or AssertionError when the trial was failed between the objective and tell.
            if not _failed_under_us(study, guarded.current, exc):
                raise
            report.discarded += 1
            continue
        if failures >= max_failures:
            raise StudyError(f"{failures} trials in a row failed on this worker; last error: {last_error}")
    return report


def _failed_under_us(study: optuna.Study, trial_id: int | None, exc: BaseException) -> bool:
    """Whether our trial was failed by another worker (stale heartbeat) while it ran."""
    if trial_id is None:
        return False
    if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
        return False
    try:
        trial = study._storage.get_trial(trial_id)
    except KeyError:
        return False
    return trial.state == TrialState.FAIL


def limit_threads(threads: int) -> None:
    """Keep one worker's libraries to ``threads`` CPU threads (torch, BLAS, libavif), so workers on one
    machine do not oversubscribe its cores."""
    if threads < 1:
        raise InvalidParameterError(f"threads must be >= 1, got {threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    for module in ("PIL.AvifImagePlugin", "pillow_avif.AvifImagePlugin"):
        loaded = sys.modules.get(module)
        if loaded is None:
            try:
                loaded = __import__(module, fromlist=["_"])
            except ImportError:
                continue
        if hasattr(loaded, "DEFAULT_MAX_THREADS"):
            loaded.DEFAULT_MAX_THREADS = threads


# -- local workers ---------------------------------------------------------------------------------------


_WORKER_MAIN = (
    "import sys; import optimizer.cli.worker_cmd; from optimizer.cli import main; "
    "sys.exit(main(['worker', *sys.argv[1:]]))"
)


def worker_command() -> list[str]:
    """The command line (arguments follow) that runs ``optimizer worker`` with this interpreter.

    It imports the command itself, so it works whichever commands the installed CLI registers.
    """
    return [sys.executable, "-c", _WORKER_MAIN]


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _file_sources(images: Iterable[ImageSource | Image] | str | Path, folder: Path) -> list[str]:
    """Image paths a worker process can open: paths as given (absolute), in-memory images saved as PNG."""
    out: list[str] = []
    for i, src in enumerate(expand_sources(images)):
        if isinstance(src, (str, Path)):
            out.append(str(Path(src).resolve()))
            continue
        image = load_image(src)
        label = Path(image.source).name if image.source else f"image{i:03d}"
        target = folder / (label if label.lower().endswith(".png") else label + ".png")
        folder.mkdir(parents=True, exist_ok=True)
        image.to_pil(keep_alpha=True).save(target)
        out.append(str(target))
    return out


def tune_workers(
    images: Iterable[ImageSource | Image] | str | Path,
    *,
    workers: int,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int = 50,
    timeout: float | None = None,
    seed: int | None = None,
    sampler: str = "tpe",
    tiers: Mapping[str, Target | str] | None = None,
    threads: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    log_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    poll: float = 1.0,
    progress: Callable[[optuna.Study], None] | None = None,
    on_ready: Callable[[PreparedStudy], None] | None = None,
    **definition: Any,
) -> TuningResult:
    """:func:`~optimizer.tuning.study.tune` with ``workers`` processes on this machine sharing the study.

    The storage must be shared by processes: ``journal:studies/<name>.journal`` by default, or a database
    URL; SQLite is refused. This process creates the study (``definition``: ``space``, ``target``,
    ``mode``, ``aggregate``, ``profile``, ``tradeoff_lambda``, ``time_objective`` as in ``tune``), starts
    the workers (``threads`` CPU threads each; default cores / workers, at least 1), calls
    ``progress(study)`` about every ``poll`` seconds, waits for them and builds the presets; ``on_ready`` is
    called with the prepared study once the workers are started. ``workers=0``
    only coordinates: it waits for workers started elsewhere (``optimizer worker``) to finish the budget.
    Worker logs go to ``log_dir`` (a temporary folder by default; quoted in the error when workers fail).
    """
    if workers < 0:
        raise InvalidParameterError(f"workers must be >= 0, got {workers}")
    if storage is not None and storage.startswith("sqlite:"):
        raise InvalidParameterError(
            "SQLite is not safe for several worker processes; use journal:PATH (one machine) or a database URL"
        )
    if threads is not None and threads < 1:
        raise InvalidParameterError(f"threads must be >= 1, got {threads}")
    with tempfile.TemporaryDirectory(prefix="optimizer-workers-") as scratch:
        paths = _file_sources(images, Path(images_dir) if images_dir else Path(scratch) / "images")
        prepared = prepare_study(
            paths,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            seed=seed,
            sampler=sampler,
            default_storage_for=default_journal_storage,
            tiers=tiers,
            **definition,
        )
        deadline = time.time() + timeout if timeout else None
        logs = Path(log_dir) if log_dir else Path(scratch) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        per_worker = threads or max(1, _available_cores() // max(1, workers))
        options = {"heartbeat": heartbeat_interval, "grace": grace_period, "max-retry": max_retry}
        procs = [
            _spawn(
                prepared,
                paths,
                index,
                logs,
                threads=per_worker,
                seed=seed,
                sampler=sampler,
                deadline=deadline,
                options=options,
            )
            for index in range(workers)
        ]
        try:
            if on_ready is not None:
                on_ready(prepared)
            _supervise(prepared, procs, deadline=deadline, poll=poll, progress=progress)
        except BaseException:
            _stop_all(procs)
            raise
        return prepared.result(tiers)


@dataclass
class _Proc:
    index: int
    popen: subprocess.Popen[bytes]
    log: Path


def _spawn(
    prepared: PreparedStudy,
    paths: Sequence[str],
    index: int,
    logs: Path,
    *,
    threads: int,
    seed: int | None,
    sampler: str,
    deadline: float | None,
    options: Mapping[str, int | None],
) -> _Proc:
    cmd = [*worker_command(), "--study", prepared.name, "--threads", str(threads), "--sampler", sampler, "--quiet"]
    if seed is not None:
        cmd += ["--seed", str(seed + index + 1)]
    if deadline is not None:
        cmd += ["--deadline", f"{deadline:.3f}"]
    for flag, value in options.items():
        if value is not None:
            cmd += [f"--{flag}", str(value)]
    cmd += ["--", *paths]
    env = dict(os.environ)
    env["OPTIMIZER_STORAGE"] = prepared.storage  # not on the command line: it may hold a password
    env["PYTHONUNBUFFERED"] = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    log = logs / f"worker-{index}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return _Proc(index, popen, log)


def _supervise(
    prepared: PreparedStudy,
    procs: list[_Proc],
    *,
    deadline: float | None,
    poll: float,
    progress: Callable[[optuna.Study], None] | None,
) -> None:
    study = prepared.study
    while True:
        if progress is not None:
            progress(study)
        alive = [p for p in procs if p.popen.poll() is None]
        budget = _budget(study, prepared.definition.n_trials)
        if not procs:
            # Coordinating only: remote workers run the trials.
            if study_counts(study).finished >= budget or (deadline is not None and time.time() >= deadline):
                break
        elif not alive:
            break
        time.sleep(poll)
    if progress is not None:
        progress(study)
    failed = [p for p in procs if p.popen.returncode not in (0, None)]
    if failed and study_counts(study).finished < budget and not (deadline is not None and time.time() >= deadline):
        tails = "\n".join(f"worker {p.index} (exit {p.popen.returncode}): {_tail(p.log)}" for p in failed)
        raise StudyError(f"{len(failed)} of {len(procs)} workers failed before the budget was reached:\n{tails}")


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n    ".join(text[-lines:]) or "(empty log)"


def _stop_all(procs: list[_Proc], grace: float = 20.0) -> None:
    """Ask every worker to stop (SIGINT), then kill the ones still running after ``grace`` seconds."""
    for p in procs:
        if p.popen.poll() is None:
            try:
                p.popen.send_signal(signal.SIGINT)
            except ProcessLookupError:  # pragma: no cover - exited meanwhile
                pass
    until = time.monotonic() + grace
    for p in procs:
        try:
            p.popen.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()
