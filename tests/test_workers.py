"""Scale-out: worker processes sharing one study through a journal file or a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from pg_fixture import postgres_url  # noqa: F401  (session fixture: a throwaway PostgreSQL server)

from optimizer.errors import InvalidParameterError, StudyError
from optimizer.imageio import load_image
from optimizer.tuning.records import ATTR_SURPLUS, ATTR_WORKER, DEFINITION_ATTR, study_counts
from optimizer.tuning.storage import HEARTBEAT_ATTR, HeartbeatJournalStorage, resolve_storage
from optimizer.tuning.study import TuneConfig, open_stored_study, prepare_study
from optimizer.tuning.workers import join_study, run_worker, worker_command

pytestmark = [
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

#: 12 combinations besides the quality (which each trial solves): enough for every budget here.
SPACE = {
    "formats": ["jpeg"],
    "jpeg": {
        "quality": [50, 95],
        "subsampling": ["4:2:0", "4:2:2", "4:4:4"],
        "progressive": [False, True],
        "optimize": [False, True],
    },
}
FAST_HEARTBEAT = {"OPTIMIZER_HEARTBEAT_INTERVAL": "1", "OPTIMIZER_HEARTBEAT_GRACE": "3"}


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two 160x128 Kodak crops: enough for SSIM, cheap enough for many trials in several processes."""
    out = tmp_path_factory.mktemp("worker-crops")
    paths = []
    for src in kodak_paths[:2]:
        target = out / src.name
        load_image(src).to_pil().crop((200, 150, 360, 278)).save(target)
        paths.append(target)
    return paths


@pytest.fixture
def fast_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)


def _create(crops: list[Path], storage: str, name: str, n_trials: int, **overrides: Any):
    options = dict(
        space=SPACE, target="ssim:0.9", profile="fast", storage=storage, study_name=name, n_trials=n_trials, seed=3
    )
    options.update(overrides)
    return prepare_study(crops, TuneConfig(**options))


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FAST_HEARTBEAT)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


# -- joining ----------------------------------------------------------------------------------------------


def test_join_reads_definition_and_refuses_other_corpus_or_space(tmp_path: Path, crops: list[Path]) -> None:
    storage = f"journal:{tmp_path / 'j.journal'}"
    _create(crops, storage, "join", 4)
    joined = join_study("join", storage, list(reversed(crops)))
    assert joined.budget == 4
    assert joined.definition.target == "ssim:0.9" and joined.objective.mode == "constrained"
    assert [item.name for item in joined.objective.corpus.items] == [p.name for p in crops]  # study order
    assert joined.study.sampler.__class__.__name__ == "TPESampler"
    with pytest.raises(StudyError, match=r"different corpus.*missing: " + crops[1].name):
        join_study("join", storage, crops[:1])
    other = tmp_path / crops[1].name
    load_image(crops[1]).to_pil().rotate(180).save(other)
    with pytest.raises(StudyError, match="same file names, different pixels"):
        join_study("join", storage, [crops[0], other])
    with pytest.raises(StudyError, match=r"search space.*params\.jpeg\.quality"):
        join_study(
            "join", storage, crops, space={"formats": ["jpeg"], "jpeg": {"quality": [40, 90], "subsampling": "4:2:0"}}
        )
    assert join_study("join", storage, crops, space=SPACE).budget == 4
    with pytest.raises(StudyError, match="no study named 'nope'"):
        join_study("nope", storage, crops)
    with pytest.raises(InvalidParameterError, match="several processes"):
        join_study("join", f"sqlite:///{tmp_path / 'x.db'}", crops)


def test_workers_prune_against_the_coordinators_bar(tmp_path: Path, crops: list[Path]) -> None:
    """Extra tiers loosen the pruning bar; workers must use the bar the study was created with."""
    from optimizer.tuning.target import Target

    storage = f"journal:{tmp_path / 'p.journal'}"
    _create(crops, storage, "loose", 4, tiers={"low": "ssim:0.8"})
    joined = join_study("loose", storage, crops)
    assert joined.objective.prune and joined.objective.prune_target == Target("ssim", 0.8)
    _create(crops, storage, "other-metric", 4, tiers={"low": "psnr:30"})
    assert not join_study("other-metric", storage, crops).objective.prune
    _create(crops, storage, "plain", 4)
    assert join_study("plain", storage, crops).objective.prune_target == Target("ssim", 0.9)


def test_worker_cli_errors_and_exit_codes(tmp_path: Path, crops: list[Path]) -> None:
    import optimizer.cli.worker_cmd  # noqa: F401  (registers the command)
    from optimizer.cli import main

    storage = f"journal:{tmp_path / 'cli.journal'}"
    _create(crops, storage, "cli", 2)
    assert main(["worker", "--help"]) == 0
    assert main(["worker", "--study", "cli", "--storage", storage, str(crops[0])]) == 2  # other corpus
    assert main(["worker", "--study", "missing", "--storage", storage, *map(str, crops)]) == 2
    assert main(["worker", "--study", "cli", "--storage", storage, "--deadline", "soon", *map(str, crops)]) == 2
    assert main(["worker", "--study", "cli", "--storage", storage, "--timeout", "0", *map(str, crops)]) == 0
    assert study_counts(optuna.load_study(study_name="cli", storage=resolve_storage(storage, "cli"))).finished == 0


def test_resume_raises_stored_budget(tmp_path: Path, crops: list[Path]) -> None:
    storage = f"journal:{tmp_path / 'b.journal'}"
    _create(crops, storage, "b", 3)
    _create(crops, storage, "b", 9)
    _, definition = open_stored_study("b", storage)
    assert definition.n_trials == 9
    with pytest.raises(StudyError, match="target"):
        _create(crops, storage, "b", 9, target="ssim:0.95")


# -- budget and heartbeats, in one process -------------------------------------------------------------------


def test_trial_beyond_budget_is_surplus_and_never_runs(tmp_path: Path) -> None:
    """The budget rule: finished + running/waiting trials with smaller numbers must be below the budget."""
    from optimizer.tuning.workers import _Guarded, _SurplusTrialError

    storage = resolve_storage(f"journal:{tmp_path / 's.journal'}", "s")
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr(DEFINITION_ATTR, {"n_trials": 2})
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return 1.0

    guard = _Guarded(study, objective, None, "test")
    first, second, third = study.ask(), study.ask(), study.ask()  # three workers start at the same instant
    assert guard(second) == 1.0 and guard(first) == 1.0  # the two oldest take the budget, in any order
    with pytest.raises(_SurplusTrialError):
        guard(third)
    assert third.number == 2 and ran == [1, 0]
    study.tell(first, 1.0)
    study.tell(second, state=TrialState.FAIL)  # a slot freed: the next trial may run
    study.tell(third, state=TrialState.FAIL)  # what optimize() does with the surplus trial
    fourth = study.ask()
    assert guard(fourth) == 1.0
    assert study.trials[fourth.number].user_attrs[ATTR_WORKER] == "test"
    assert study.trials[third.number].user_attrs[ATTR_SURPLUS] is True


def test_threads_racing_for_the_last_slots_keep_the_budget_exact(tmp_path: Path, fast_heartbeat: None) -> None:
    budget = 25
    path = f"journal:{tmp_path / 'race.journal'}"
    study = optuna.create_study(study_name="race", storage=resolve_storage(path, "race"))
    study.set_user_attr(DEFINITION_ATTR, {"n_trials": budget})
    reports: list[Any] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        time.sleep(0.002 + 0.01 * x)
        return x

    def work(seed: int) -> None:
        own = optuna.load_study(
            study_name="race", storage=resolve_storage(path, "race"), sampler=optuna.samplers.RandomSampler(seed)
        )
        reports.append(run_worker(own, objective, poll=0.05))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(reports) == 4 and all(r.stopped == "budget" for r in reports)
    trials = study.get_trials()
    assert study_counts(study).finished == budget
    assert sum(r.complete for r in reports) == budget
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) == len(trials)
    assert all(t.user_attrs.get(ATTR_SURPLUS) for t in trials if t.state == TrialState.FAIL)


def test_result_of_a_trial_failed_under_its_worker_is_discarded(tmp_path: Path) -> None:
    """A worker that missed its heartbeats (so another worker failed its trial) must not report the result."""
    path = f"journal:{tmp_path / 'late.journal'}"
    study = optuna.create_study(study_name="late", storage=resolve_storage(path, "late"))
    study.set_user_attr(DEFINITION_ATTR, {"n_trials": 3})
    calls = {"n": 0}

    def objective(trial: optuna.Trial) -> float:
        calls["n"] += 1
        if calls["n"] == 1:  # what another worker's fail_stale_trials does meanwhile
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return float(trial.number)

    report = run_worker(study, objective)
    assert report.discarded == 1 and report.complete == 3 and report.stopped == "budget"
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 3


def test_journal_heartbeat_fails_and_retries_a_dead_trial(tmp_path: Path) -> None:
    storage = resolve_storage(
        f"journal:{tmp_path / 'hb.journal'}", "hb", heartbeat_interval=1, grace_period=2, max_retry=1
    )
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(study_name="hb", storage=storage)
    dead = study.ask()
    dead.suggest_int("q", 1, 100)
    alive = study.ask()
    storage.record_heartbeat(alive._trial_id)
    assert HEARTBEAT_ATTR in study.trials[alive.number].system_attrs
    time.sleep(1.2)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(1.2)
    storage.record_heartbeat(alive._trial_id)
    optuna.storages.fail_stale_trials(study)  # the dead trial has no beat for 2.4 s > grace; the live one beat
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[dead.number].state == TrialState.FAIL
    assert by_number[alive.number].state == TrialState.RUNNING
    retry = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING and retry[0].params == by_number[dead.number].params
    optuna.storages.fail_stale_trials(study)  # failing again is a no-op: no second retry
    assert len([t for t in study.get_trials() if t.system_attrs.get("failed_trial") == dead.number]) == 1


# -- real worker processes -----------------------------------------------------------------------------------

_STALLING_WORKER = textwrap.dedent(
    """
    import pathlib, sys, time
    from optimizer.tuning import objective as objective_module

    marker = pathlib.Path(sys.argv[1])
    calls = {"n": 0}
    original = objective_module.Objective.__call__

    def stall_in_second_trial(self, trial):
        calls["n"] += 1
        if calls["n"] == 2:  # sample the parameters (so a retry has them), announce, then hang
            self.space.sample(trial, solve_quality=True)
            marker.write_text(str(trial.number))
            time.sleep(3600)
        return original(self, trial)

    objective_module.Objective.__call__ = stall_in_second_trial
    import optimizer.cli.worker_cmd  # noqa: F401
    from optimizer.cli import main

    sys.exit(main(["worker", *sys.argv[2:]]))
    """
)


def _wait_for(predicate, timeout: float, what: str, procs: list[subprocess.Popen] = ()) -> None:
    until = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                out = p.stdout.read() if p.stdout else ""
                pytest.fail(f"a worker exited with {p.returncode} while waiting for {what}:\n{out}")
        if time.monotonic() > until:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_workers_survive_a_killed_worker(tmp_path: Path, crops: list[Path], postgres_url: str) -> None:  # noqa: F811
    budget = 12
    name = "pg-kill"
    _create(crops, postgres_url, name, budget)
    # A trial whose worker died before its first heartbeat: Optuna alone would leave it running for ever.
    zombie = optuna.load_study(study_name=name, storage=postgres_url).ask().number
    images = [str(p) for p in crops]
    marker = tmp_path / "stalled"
    common = ["--study", name, "--storage", postgres_url, "--threads", "1"]
    workers: list[subprocess.Popen] = []
    victim = subprocess.Popen(
        [sys.executable, "-c", _STALLING_WORKER, str(marker), *common, "--seed", "1", *images],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        _wait_for(marker.exists, 180, "the first worker to start its second trial", [victim])
        stalled = int(marker.read_text())
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert study.trials[stalled].state == TrialState.RUNNING
        exports = [tmp_path / f"presets-{i}.json" for i in range(2)]
        workers += [
            subprocess.Popen(
                [*worker_command(), *common, "--seed", str(10 + i), "--export", str(exports[i]), *images],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=_env(),
            )
            for i in range(2)
        ]
        time.sleep(1.5)  # its heartbeat has been recorded; kill it in the middle of the trial
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        outputs = []
        for proc in workers:
            out, _ = proc.communicate(timeout=300)
            outputs.append(out)
            assert proc.returncode == 0, out
    finally:
        for proc in [victim, *workers]:
            if proc.poll() is None:
                proc.kill()
    study = optuna.load_study(study_name=name, storage=postgres_url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "duplicate trial numbers"
    assert sorted(numbers) == list(range(len(trials)))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == budget, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The killed trial was failed by a surviving worker and retried once, with the same parameters.
    killed = trials[stalled]
    assert killed.state == TrialState.FAIL and killed.params
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == stalled]
    assert len(retries) == 1
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED) and retries[0].params == killed.params
    assert trials[zombie].state == TrialState.FAIL
    assert len([t for t in trials if t.system_attrs.get("failed_trial") == zombie]) == 1
    # Every other failure is a trial that found the budget taken; the finished trials all came from workers.
    dead = {stalled, zombie}
    assert all(t.user_attrs.get(ATTR_SURPLUS) for t in trials if t.state == TrialState.FAIL and t.number not in dead)
    assert len({t.user_attrs[ATTR_WORKER] for t in finished}) >= 2
    assert all("the study reached its budget" in out for out in outputs)
    # Presets exported by either worker process are the same (apart from the creation date).
    from optimizer.tuning.presets import Preset
    from optimizer.tuning.tiers import build_preset

    first, second = (Preset.load(p) for p in exports)
    assert first.tiers and first.content() == second.content()
    assert build_preset(study, storage=first.study["storage"]).content() == first.content()


@pytest.mark.slow
def test_tune_with_two_local_workers_on_a_journal(
    tmp_path: Path, crops: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import optimizer.cli.worker_cmd  # noqa: F401
    from optimizer.cli import main

    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    export = tmp_path / "presets.json"
    args = [
        "tune",
        *map(str, crops),
        "--formats",
        "jpeg",
        "--target",
        "ssim:0.9",
        "--profile",
        "fast",
        "--study",
        "local",
    ]
    code = main([*args, "--trials", "10", "--workers", "2", "--seed", "5", "--export", str(export)])
    assert code == 0
    journal = tmp_path / "studies" / "local.journal"
    assert journal.exists() and not (tmp_path / "studies" / "local.db").exists()
    study, definition = open_stored_study("local", f"journal:{journal}")
    counts = study_counts(study)
    # JPEG's default space holds two settings besides the quality (4:2:0 and 4:4:4): once both are solved
    # the workers stop, well within the budget of 10, and no setting is measured twice.
    assert definition.n_trials == 10 and counts.finished == 2 and counts.running == counts.waiting == 0
    assert len({tuple(sorted(t.params.items())) for t in study.get_trials()}) == 2
    assert "2 local worker processes started" in capsys.readouterr().err  # progress notes go to stderr
    # Trials on these tiny crops take milliseconds, so one worker may finish the budget before the other
    # starts: that both share one study is asserted by the PostgreSQL test, whose trials are slow.
    assert {t.user_attrs[ATTR_WORKER] for t in study.get_trials() if ATTR_WORKER in t.user_attrs}
    assert json.loads(export.read_text())["tiers"]
    # The parent refuses SQLite for several processes and --jobs with --workers.
    assert main([*args, "--trials", "2", "--workers", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert main([*args, "--trials", "2", "--workers", "2", "--jobs", "2"]) == 2


@pytest.mark.slow
@pytest.mark.postgres
def test_tune_with_local_workers_on_postgres_as_documented(
    tmp_path: Path,
    crops: list[Path],
    postgres_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tune --workers 2 --storage postgresql://USER@HOST:PORT/DB``: the URL as the README writes it (no
    driver in it), which SQLAlchemy resolves to the psycopg 3 driver of the ``postgres`` extra."""
    import sqlalchemy

    from optimizer.cli import main

    assert postgres_url.startswith("postgresql://")
    assert sqlalchemy.engine.make_url(postgres_url).get_dialect().driver == "psycopg"
    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    for key, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(key, value)
    export = tmp_path / "presets.json"
    args = ["tune", *map(str, crops), "--formats", "jpeg", "--target", "ssim:0.9", "--profile", "fast"]
    code = main([*args, "--study", "pg-cli", "--storage", postgres_url, "--trials", "6", "--workers", "2",
                 "--subsampling", "4:2:0,4:2:2,4:4:4", "--seed", "2", "--export", str(export)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    study, definition = open_stored_study("pg-cli", postgres_url)
    counts = study_counts(study)
    assert definition.n_trials == 6 and counts.finished == 3 and counts.running == counts.waiting == 0
    finished = [t for t in study.get_trials() if t.state.is_finished() and t.state.name != "FAIL"]
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 3  # each setting once
    for t in study.get_trials(states=[optuna.trial.TrialState.FAIL]):  # a race between the workers: no work
        assert t.user_attrs.get("surplus") and "encode_seconds" not in str(t.user_attrs)
    assert json.loads(export.read_text())["study"]["storage"] == postgres_url  # no password in it to redact
    assert not (tmp_path / "studies").exists() or not list((tmp_path / "studies").iterdir())


def test_a_trial_that_would_repeat_work_is_recognised() -> None:
    """Two workers that queue the same settings at once, or a worker whose queued trial another took (Optuna
    then makes a fresh trial the search never chose): such a trial ends before any work, as surplus."""
    from optimizer.tuning.workers import _repeated_settings

    study = optuna.create_study()
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 2})
    first, second, third = (study.ask() for _ in range(3))
    fresh = study.ask()  # nothing queued any more: Optuna's own trial
    trials = study.get_trials(deepcopy=False)
    assert _repeated_settings(trials, first.number) is None
    assert "trial 0 holds the same settings" in str(_repeated_settings(trials, second.number))
    assert _repeated_settings(trials, third.number) is None
    assert "not queued" in str(_repeated_settings(trials, fresh.number))
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # a failed trial's settings may run again
    assert _repeated_settings(study.get_trials(deepcopy=False), second.number) is None
