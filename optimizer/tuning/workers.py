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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import EncodeError, InvalidParameterError, OptimizerError, StudyError
from ..imageio import Image, ImageSource, load_image
from .corpus import expand_sources
from .join import JoinedStudy, join_study, study_budget
from .records import (
    ATTR_ERROR,
    ATTR_SURPLUS,
    ATTR_WORKER,
    stored_definition,
    study_counts,
)
from .search import SettingsSearch, enqueue_next, params_key
from .storage import (
    default_journal_storage,
    fail_stale_trials,
    stored_trial_state,
    trial_id,
)
from .study import PreparedStudy, TuneConfig, TuningResult, prepare_study

__all__ = [
    "JoinedStudy",
    "WorkerReport",
    "join_study",  # re-exported from optimizer.tuning.join: the worker API in one place
    "limit_threads",
    "run_worker",
    "tune_workers",
    "worker_command",
]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# -- counting ------------------------------------------------------------------------------------------


class _SurplusTrialError(OptimizerError):
    """A trial created after other workers had taken the study's remaining budget."""


class _DiscardedTrialError(OptimizerError):
    """A trial that another worker failed (stale heartbeat) while this one was still running it."""


# -- (joining: optimizer.tuning.join) ------------------------------------------------------------------------------------


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
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], Any],
        fallback_budget: int | None,
        worker: str,
        *,
        queued_only: bool = False,
    ) -> None:
        self.study = study
        self.objective = objective
        self.fallback_budget = fallback_budget
        self.worker = worker
        #: the study's settings come from its search: a trial not from the queue, or one whose settings
        #: another worker queued at the same moment, would repeat work and ends before any
        self.queued_only = queued_only
        self.current: int | None = None

    def __call__(self, trial: optuna.Trial) -> Any:
        self.current = trial_id(trial)
        budget = study_budget(self.study, self.fallback_budget)
        trials = self.study.get_trials(deepcopy=False)
        finished = ahead = 0
        for other in trials:
            if other.state in _FINISHED:
                finished += 1
            elif other.state in (TrialState.RUNNING, TrialState.WAITING) and other.number < trial.number:
                ahead += 1
        trial.set_user_attr(ATTR_WORKER, self.worker)
        if finished + ahead >= budget:
            trial.set_user_attr(ATTR_SURPLUS, True)
            trial.set_user_attr(ATTR_ERROR, f"surplus: the budget of {budget} trials was taken by other workers")
            raise _SurplusTrialError(f"trial {trial.number} is beyond the budget of {budget} trials")
        repeated = _repeated_settings(trials, trial.number) if self.queued_only else None
        if repeated is not None:
            trial.set_user_attr(ATTR_SURPLUS, True)
            trial.set_user_attr(ATTR_ERROR, f"surplus: {repeated}")
            raise _SurplusTrialError(f"trial {trial.number}: {repeated}")
        result = self.objective(trial)
        if stored_trial_state(self.study, trial_id(trial)) != TrialState.RUNNING:
            # Failed by another worker after missed heartbeats; its retry counts instead of this result.
            raise _DiscardedTrialError(f"trial {trial.number} was failed by another worker while it ran")
        return result


def _repeated_settings(trials: Sequence[FrozenTrial], number: int) -> str | None:
    """Why trial ``number`` would repeat work (None when it would not): it was not queued from the study's
    search (another worker took the queued trial first, so Optuna made a fresh one), or an earlier trial
    that is running or finished holds the same settings (two workers queued them at the same moment)."""
    this = next((t for t in trials if t.number == number), None)
    # queued settings: Optuna's fixed params, or the params a retry of a dead worker's trial carries
    mine = (this.system_attrs.get("fixed_params") or this.params) if this is not None else None
    if not mine:
        return "not queued from the study's search (another worker took the queued settings first)"
    key = params_key(mine)
    for other in trials:
        if other.number >= number or other.state not in (*_FINISHED, TrialState.RUNNING):
            continue
        if params_key(other.system_attrs.get("fixed_params") or other.params) == key:
            return f"trial {other.number} holds the same settings (queued by two workers at once)"
    return None


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
    search: SettingsSearch | None = None,
) -> WorkerReport:
    """Run trials of ``study`` until it holds its budget of finished trials, ``deadline`` (epoch seconds)
    passes, ``stop`` is set or ``search`` has tried every combination; safe with any number of workers on
    the same study.

    The budget is the study's stored ``n_trials`` (``n_trials`` here is only the fallback for a study
    without one). A trial in progress at the deadline finishes. ``max_failures`` failed trials in a row
    (encoder errors) stop the worker with :class:`StudyError` rather than looping. With a ``search``
    (constrained and pareto studies) the worker queues each trial's settings from it, after any trial
    already waiting (a retry of a dead worker's trial, or one queued by another worker).
    """
    definition = stored_definition(study) if search is not None else None
    if poll <= 0:
        raise InvalidParameterError(f"poll must be > 0 seconds, got {poll}")
    stop = stop or threading.Event()
    report = WorkerReport()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    guarded = _Guarded(study, objective, n_trials, worker, queued_only=search is not None)
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
            last_error = str(trial.user_attrs.get(ATTR_ERROR, "unknown"))
            return
        failures = 0

    while True:
        if stop.is_set():
            report.stopped = "stopped"
            break
        if deadline is not None and time.time() >= deadline:
            report.stopped = "deadline"
            break
        fail_stale_trials(study)
        budget = study_budget(study, n_trials)
        counts = study_counts(study)
        if counts.finished >= budget:
            report.stopped = "budget"
            break
        if counts.finished + counts.running >= budget:
            # Other workers hold the remaining slots; one may still fail (or die) and free its slot.
            wait = poll if deadline is None else max(0.0, min(poll, deadline - time.time()))
            stop.wait(wait)
            continue
        if search is not None and definition is not None and not counts.waiting:
            if not enqueue_next(study, search, definition):
                if counts.running:  # a running trial may still fail and be retried
                    stop.wait(poll if deadline is None else max(0.0, min(poll, deadline - time.time())))
                    continue
                report.stopped = "exhausted"
                break
            if not study_counts(study).waiting:
                continue  # another worker took the same settings first: choose again
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


def _failed_under_us(study: optuna.Study, current: int | None, exc: BaseException) -> bool:
    """Whether our trial was failed by another worker (stale heartbeat) while it ran."""
    if current is None:
        return False
    if isinstance(exc, ValueError) and not str(exc).startswith("Cannot tell a"):
        return False
    return stored_trial_state(study, current) == TrialState.FAIL


def limit_threads(threads: int) -> None:
    """Keep this process's torch computations to ``threads`` CPU threads.

    For the entry point of a worker process (``optimizer worker``): torch's thread pool is per process,
    so the process that owns it sets it. Encoders take their share per call (``Objective.threads``), and
    BLAS/OpenMP pools read ``OMP_NUM_THREADS`` at start-up, which the coordinator sets in each worker's
    environment (:func:`tune_workers`).
    """
    if threads < 1:
        raise InvalidParameterError(f"threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


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
    config: TuneConfig,
    *,
    workers: int,
    timeout: float | None = None,
    threads: int | None = None,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
    log_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    poll: float = 1.0,
    progress: Callable[[optuna.Study], None] | None = None,
    on_ready: Callable[[PreparedStudy], None] | None = None,
) -> TuningResult:
    """:func:`~optimizer.tuning.study.tune` with ``workers`` processes on this machine sharing the study.

    The storage must be shared by processes: ``config.storage`` or, by default,
    ``journal:studies/<name>.journal``; SQLite is refused. This process creates the study from ``config``,
    starts the workers (``threads`` CPU threads each; default cores / workers, at least 1), calls
    ``progress(study)`` about every ``poll`` seconds, waits for them and builds the presets; ``on_ready`` is
    called with the prepared study once the workers are started. ``workers=0`` only coordinates: it waits
    for workers started elsewhere (``optimizer worker``) to finish the budget. Worker logs go to
    ``log_dir`` (a temporary folder by default; quoted in the error when workers fail).
    """
    if workers < 0:
        raise InvalidParameterError(f"workers must be >= 0, got {workers}")
    if config.storage is not None and config.storage.startswith("sqlite:"):
        raise InvalidParameterError(
            "SQLite is not safe for several worker processes; use journal:PATH (one machine) or a database URL"
        )
    if threads is not None and threads < 1:
        raise InvalidParameterError(f"threads must be >= 1, got {threads}")
    seed, sampler = config.seed, config.sampler
    with tempfile.TemporaryDirectory(prefix="optimizer-workers-") as scratch:
        paths = _file_sources(images, Path(images_dir) if images_dir else Path(scratch) / "images")
        prepared = prepare_study(paths, config, default_storage_for=default_journal_storage)
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
        return prepared.result()


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
        budget = study_budget(study, prepared.definition.n_trials)
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
