"""Tuning studies: search space, targets, aggregation, pruning, storage, resume and reproducibility."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest

from optimizer.errors import ConfigError, InvalidParameterError, StudyError, UnknownNameError
from optimizer.evaluator import Evaluator
from optimizer.imageio import load_image
from optimizer.statistics import statistic
from optimizer.tuning.corpus import load_corpus
from optimizer.tuning.objective import Objective
from optimizer.tuning.records import feasible_trials, finished_trials, is_feasible, trial_settings
from optimizer.tuning.space import SearchSpace
from optimizer.tuning.study import TuneConfig, open_stored_study, tune
from optimizer.tuning.target import Target


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 160x128 Kodak crops: big enough for SSIM, small enough for many trials."""
    out = tmp_path_factory.mktemp("crops")
    paths = []
    for src in kodak_paths[:3]:
        image = load_image(src)
        target = out / src.name
        image.to_pil().crop((200, 150, 360, 278)).save(target)
        paths.append(target)
    return paths


#: A JPEG space of 12 combinations besides the quality (which each trial solves).
SPACE = {
    "formats": ["jpeg"],
    "jpeg": {
        "quality": [30, 95],
        "subsampling": ["4:2:0", "4:4:4", "4:2:2"],
        "progressive": [False, True],
        "optimize": [False, True],
    },
}


def _study_kwargs(tmp_path: Path, **overrides):
    kwargs = dict(
        space=SPACE,
        target="ssim:0.93",
        profile="fast",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="t",
        trials=8,
        seed=7,
    )
    kwargs.update(overrides)
    return kwargs


def _config_kwargs(tmp_path: Path, **overrides):
    """:func:`_study_kwargs` for a :class:`TuneConfig`, which records the budget as ``n_trials``."""
    kwargs = _study_kwargs(tmp_path, **overrides)
    kwargs["n_trials"] = kwargs.pop("trials")
    return kwargs


# -- targets and aggregation ---------------------------------------------------------------------


def test_target_parse_and_direction() -> None:
    assert Target.parse("ssimulacra2:80") == Target("ssimulacra2", 80.0)
    assert Target.parse("lpips:0.1").higher_is_better is False
    assert Target.parse("composite:0.9").higher_is_better is True
    assert str(Target.parse("psnr:38")) == "psnr:38"
    assert Target.parse("lpips:0.1").is_met(0.05) and not Target.parse("lpips:0.1").is_met(0.2)
    assert Target.parse("ssim:0.9").margin(0.95) == pytest.approx(0.05)


@pytest.mark.parametrize(
    "text", ["ssimulacra2", "ssimulacra2:", ":80", "ssimulacra2:high", "composite:1.5", "ssim:nan"]
)
def test_target_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidParameterError):
        Target.parse(text)


def test_target_unknown_metric() -> None:
    with pytest.raises(UnknownNameError, match="ssimulacra2"):
        Target.parse("butteraugli:1.0")


def test_target_aggregates_only_corpus_statistics() -> None:
    assert Target.parse("lpips:0.1").aggregate([0.1, 0.3], "worst") == 0.3
    with pytest.raises(InvalidParameterError, match="mean, p10, worst"):
        Target.parse("ssim:0.9").aggregate([0.9], "median")


# -- search space --------------------------------------------------------------------------------


def test_space_defaults_and_round_trip() -> None:
    space = SearchSpace()
    assert space.formats == ("avif", "webp", "jpeg")
    again = SearchSpace.from_mapping(space.to_dict())
    assert again == space and again.fingerprint() == space.fingerprint()
    dists = space.distributions()
    assert "format" in dists and "jpeg.quality" in dists and "avif.speed" not in dists


def test_space_from_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "space.toml"
    toml.write_text(
        textwrap.dedent(
            """
            formats = ["webp", "jpeg"]
            widths = [96]
            filters = ["lanczos", "bicubic"]
            sharpen = [0.0, 0.5]
            [jpeg]
            quality = [40, 80]
            subsampling = ["4:2:0", "4:4:4"]
            [webp]
            method = 2
            """
        )
    )
    space = SearchSpace.from_file(toml)
    assert space.formats == ("webp", "jpeg")
    assert space.params["jpeg"]["quality"] == ("range", 40, 80)
    assert space.params["webp"]["method"] == 2
    assert set(space.distributions()) >= {"format", "jpeg.quality", "jpeg.subsampling", "filter", "sharpen"}
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("formats: [jpeg]\njpeg:\n  quality: [50, 60]\n")
    assert SearchSpace.from_file(yaml_file).params["jpeg"]["quality"] == ("range", 50, 60)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"formats": ["jpeg"], "colour": 1}, "unknown search-space key"),
        ({"formats": ["jpeg"], "jpeg": {"qualty": [1, 2]}}, "unknown parameter"),
        ({"formats": ["jpeg"], "jpeg": {"quality": [0, 50]}}, "quality must be"),
        ({"formats": ["jpeg"], "jpeg": {"quality": [80, 50]}}, "low must be <= high"),
        ({"formats": ["jpeg"], "jpeg": {"subsampling": ["4:1:1"]}}, "subsampling must be"),
        ({"formats": ["jpeg"], "filters": ["sinc"]}, "sinc"),
        ({"formats": ["bmp"]}, "bmp"),
        ({"formats": ["jpeg"], "sharpen": [0.5, 0.1]}, "sharpen"),
    ],
)
def test_space_rejects_bad_input(data: dict, message: str) -> None:
    with pytest.raises((ConfigError, InvalidParameterError, UnknownNameError), match=message):
        SearchSpace.from_mapping(data)


def test_space_settings_from_params_matches_sample() -> None:
    space = SearchSpace(formats=("jpeg", "webp"), widths=(64,), filters=("lanczos", "box"), sharpen=(0.0, 1.0))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        sampled = space.sample(trial)
        assert space.settings_from_params(trial.params) == sampled
        study.tell(trial, 0.0)


# -- objective and pruning -------------------------------------------------------------------------


def test_corpus_fingerprint_depends_on_pixels_and_widths(crops: list[Path]) -> None:
    a = load_corpus(crops)
    assert load_corpus(list(reversed(crops))).fingerprint == a.fingerprint
    assert load_corpus(crops[:2]).fingerprint != a.fingerprint
    space = SearchSpace(formats=("jpeg",), widths=(80,))
    b = load_corpus(crops, widths=space.widths, reference_transform=space.reference_transform)
    assert b.fingerprint != a.fingerprint
    assert len(b.items) == 3 and b.items[0].reference.width == 80 and b.items[0].source.width == 160


def test_corpus_never_upscales(crops: list[Path]) -> None:
    """Widths wider than an image are left out for it, as apply leaves them out (crops are 160 wide)."""
    space = SearchSpace(formats=("jpeg",), widths=(80, 320))
    corpus = load_corpus(crops[:1], widths=space.widths, reference_transform=space.reference_transform)
    assert [item.name for item in corpus.items] == [f"{crops[0].name}@80w"]
    narrow = SearchSpace(formats=("jpeg",), widths=(320, 640))
    corpus = load_corpus(crops[:1], widths=narrow.widths, reference_transform=narrow.reference_transform)
    (item,) = corpus.items
    assert item.width == 160 and item.reference.size == item.source.size


def test_corpus_expands_folders_among_the_images(crops: list[Path]) -> None:
    folder = crops[0].parent
    assert load_corpus([folder]).names == load_corpus(folder).names == tuple(sorted(p.name for p in crops))


def test_settings_at_width_keep_filter_and_sharpening() -> None:
    from optimizer.transforms import Transform
    from optimizer.tuning.settings import EncodingSettings

    settings = EncodingSettings("jpeg", {"quality": 80}, Transform(scale=0.5, filter="box", sharpen_amount=0.4))
    assert settings.at_width(None) is settings
    resized = settings.at_width(96).transform
    assert (resized.width, resized.height, resized.scale) == (96, None, None)
    assert (resized.filter, resized.sharpen_amount) == ("box", 0.4)


def test_a_round_that_starts_no_trial_ends_the_run(
    tmp_path: Path, crops: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timeout can run out inside Optuna before a round starts a trial: that is not a failure."""
    from optimizer.tuning.study import prepare_study, run_trials

    prepared = prepare_study(crops, TuneConfig(**_config_kwargs(tmp_path)))
    monkeypatch.setattr(optuna.Study, "optimize", lambda self, *args, **kwargs: None)
    assert run_trials(prepared.study, prepared.objective, n_trials=4, timeout=60) == 0


@pytest.mark.parametrize("how", ["worst", "p10", "mean"])
def test_pruning_only_when_certain(how: str, crops: list[Path]) -> None:
    corpus = load_corpus(crops * 1, names=["a", "b", "c"])
    objective = Objective(
        corpus, SearchSpace(formats=("jpeg",)), Target.parse("ssim:0.9"), Evaluator(profile="fast"), aggregate_by=how
    )
    # Brute force: the pruning decision must agree with "no completion of the remaining scores passes".
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 4))
        partial = list(rng.uniform(0.8, 1.0, size=k))
        certain = objective.meter.certainly_fails(partial, objective.target)
        best_case = statistic(partial + [1.0] * (3 - k), how, higher_is_better=True)
        assert certain == (best_case < 0.9), (partial, how)


def test_tune_constrained_records_and_prunes(tmp_path: Path, crops: list[Path]) -> None:
    result = tune(crops, **_study_kwargs(tmp_path, trials=10))
    trials = finished_trials(result.study)
    assert len(trials) == 10
    states = {t.state.name for t in trials}
    assert "COMPLETE" in states
    for t in trials:
        attrs = t.user_attrs
        assert attrs["settings"]["codec"] == "jpeg"
        assert attrs["total_bytes"] == sum(img["bytes"] for img in attrs["images"])
        for img in attrs["images"]:
            assert set(img["scores"]) == {"ssim", "psnr"} and img["encode_seconds"] >= 0
        if t.state.name == "PRUNED":  # stopped before the last image, with the target already out of reach
            assert attrs["pruned_after"] == len(attrs["images"]) < 3
            assert attrs["constraint"] > 0 and not is_feasible(t)
    best = result.best_trial
    assert best is not None and best.user_attrs["quality"] >= 0.93
    assert all(best.user_attrs["total_bytes"] <= t.user_attrs["total_bytes"] for t in feasible_trials(result.study))
    assert result.presets is not None and result.presets.tiers
    frame = result.trials_dataframe()
    assert len(frame) == 10 and {"total_bytes", "quality", "feasible", "agg_ssim"} <= set(frame.columns)


def test_seeded_study_is_reproducible(tmp_path: Path, crops: list[Path]) -> None:
    a = tune(crops, **_study_kwargs(tmp_path / "a", trials=6))
    b = tune(crops, **_study_kwargs(tmp_path / "b", trials=6))
    assert [t.params for t in a.study.trials] == [t.params for t in b.study.trials]
    assert [t.user_attrs["total_bytes"] for t in a.study.trials] == [
        t.user_attrs["total_bytes"] for t in b.study.trials
    ]


def test_resume_counts_budget_and_refuses_other_definition(tmp_path: Path, crops: list[Path]) -> None:
    first = tune(crops, **_study_kwargs(tmp_path, trials=4))
    assert len(finished_trials(first.study)) == 4
    second = tune(crops, **_study_kwargs(tmp_path, trials=7))
    assert len(finished_trials(second.study)) == 7
    assert [t.number for t in second.study.trials][:4] == [0, 1, 2, 3]
    with pytest.raises(StudyError, match="target"):
        tune(crops, **_study_kwargs(tmp_path, trials=8, target="ssim:0.95"))
    with pytest.raises(StudyError, match="corpus"):
        tune(crops[:2], **_study_kwargs(tmp_path, trials=8))
    study, definition = open_stored_study("t", f"sqlite:///{tmp_path / 'study.db'}")
    assert definition.target == "ssim:0.93" and len(study.trials) == 7


def test_tradeoff_and_pareto_modes(tmp_path: Path, crops: list[Path]) -> None:
    space = {"formats": ["jpeg", "webp"], "jpeg": {"subsampling": "4:2:0"}}
    trade = tune(crops, **_study_kwargs(tmp_path / "t", space=space, mode="tradeoff", trials=5))
    assert trade.study.direction.name == "MAXIMIZE" and trade.best_trial is not None
    pareto = tune(crops, **_study_kwargs(tmp_path / "p", space=space, mode="pareto", trials=6, sampler="nsga2"))
    assert [d.name for d in pareto.study.directions] == ["MINIMIZE", "MAXIMIZE"]
    front = pareto.pareto_front
    assert front and all(a.user_attrs["total_bytes"] < b.user_attrs["total_bytes"] for a, b in zip(front, front[1:]))
    assert all(a.user_attrs["quality"] < b.user_attrs["quality"] for a, b in zip(front, front[1:]))


def test_distance_target_direction(tmp_path: Path, crops: list[Path]) -> None:
    """A lower-is-better target (a PSNR-style check through the registry) is honoured in pareto directions."""
    from optimizer.tuning.objective import directions_for

    assert directions_for("pareto", Target.parse("lpips:0.1")) == ["minimize", "minimize"]
    assert directions_for("pareto", Target.parse("ssimulacra2:80")) == ["minimize", "maximize"]
    assert directions_for("pareto", Target.parse("ssim:0.9"), time_objective=True) == [
        "minimize",
        "maximize",
        "minimize",
    ]


def test_failing_encodes_mark_trial_failed(tmp_path: Path, crops: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from optimizer.codecs import get_codec
    from optimizer.errors import EncodeError

    codec = get_codec("jpeg")
    original = type(codec)._encode

    def flaky(self, image, params, threads):  # the encoder fails on every 4:4:4 encode
        if params["subsampling"] == "4:4:4":
            raise EncodeError("jpeg: simulated encoder failure")
        return original(self, image, params, threads)

    monkeypatch.setattr(type(codec), "_encode", flaky)
    space = {"formats": ["jpeg"], "jpeg": {"quality": [30, 95], "subsampling": ["4:4:4", "4:2:2", "4:2:0"]}}
    result = tune(crops, **_study_kwargs(tmp_path, space=space, trials=5, target="ssim:0.5"))
    failed = [t for t in result.study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "simulated" in failed[0].user_attrs["error"]
    assert failed[0].params == {"jpeg.subsampling": "4:4:4"}
    # the other two settings were solved; the space then holds nothing new to try
    assert len(finished_trials(result.study)) == 2 and result.exhausted and result.presets is not None


@pytest.mark.slow
def test_interrupted_study_loses_no_finished_trial(tmp_path: Path, crops: list[Path]) -> None:
    """Kill a tuning process mid-study; every trial finished before the kill is kept and resuming completes it."""
    db = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import os, signal
        from optimizer.tuning.study import tune, finished_trials
        def stop(study, trial):
            if len(finished_trials(study)) >= 3:
                os.kill(os.getpid(), signal.SIGKILL)
        tune({[str(p) for p in crops]!r}, space={SPACE!r}, target="ssim:0.93", profile="fast",
             storage="sqlite:///{db}", study_name="k", trials=20, seed=1, callbacks=[stop])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    assert len(finished_trials(study)) >= 3
    kept = {t.number: t.user_attrs["total_bytes"] for t in finished_trials(study)}
    resumed = tune(
        crops,
        space=SPACE,
        target="ssim:0.93",
        profile="fast",
        storage=f"sqlite:///{db}",
        study_name="k",
        trials=6,
        seed=1,
    )
    after = {t.number: t.user_attrs["total_bytes"] for t in finished_trials(resumed.study)}
    assert len(after) == 6 and all(after[n] == b for n, b in kept.items())


def test_a_trial_killed_mid_run_is_failed_and_retried_on_resume(tmp_path: Path, crops: list[Path]) -> None:
    """SIGKILL inside a trial leaves it RUNNING in SQLite (no heartbeats); resuming fails it, runs its
    settings again, and the study ends with exactly its budget of finished trials."""
    db = tmp_path / "orphan.db"
    options = dict(space=SPACE, target="ssim:0.93", profile="fast", storage=f"sqlite:///{db}", study_name="o", seed=1)
    script = textwrap.dedent(
        f"""
        import os, signal
        from optimizer.tuning import objective
        from optimizer.tuning.study import tune
        measure = objective.Objective.__call__
        def killing(self, trial):
            if trial.number == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: its settings are queued, nothing measured
            return measure(self, trial)
        objective.Objective.__call__ = killing
        tune({[str(p) for p in crops[:2]]!r}, n_trials=4, **{options!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    killed = optuna.load_study(study_name="o", storage=f"sqlite:///{db}").trials[2]
    assert killed.state == optuna.trial.TrialState.RUNNING
    resumed = tune(crops[:2], n_trials=4, **options)
    trials = resumed.study.trials
    assert trials[2].state == optuna.trial.TrialState.FAIL
    assert "process" in trials[2].system_attrs["optimizer:orphaned"]
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    queued = killed.system_attrs["fixed_params"]  # the settings the search queued for the killed trial
    assert queued and retry.params == queued and retry.state == optuna.trial.TrialState.COMPLETE
    assert len(finished_trials(resumed.study)) == 4
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]


def _running_trial(tmp_path: Path, owner: dict[str, object] | None) -> optuna.Study:
    """A SQLite study holding one RUNNING trial whose owner record is ``owner`` (None: no record)."""
    import socket

    from optimizer.tuning.storage import OWNER_ATTR, resolve_storage

    study = optuna.create_study(study_name="r", storage=resolve_storage(f"sqlite:///{tmp_path / 'r.db'}", "r"))
    trial = study.ask()
    trial.suggest_int("x", 1, 9)
    recorded = study.trials[0].system_attrs[OWNER_ATTR]
    assert recorded["host"] == socket.gethostname() and recorded["pid"] == os.getpid()
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner)
    return study


def test_orphaned_trials_follow_one_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a running SQLite trial only when its process is known to be gone: this machine's pid no longer
    running (or reused by another process), or a trial of another machine or of no known process older than
    the grace period; the others are left alone, with a warning when they cannot be checked."""
    import socket

    from optimizer.tuning.owners import process_owner
    from optimizer.tuning.storage import ORPHANED_ATTR, fail_orphaned_trials

    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    cases = {
        "alive": (process_owner(), None, False),
        "dead pid": ({"host": here, "pid": dead.pid, "start": None}, None, True),
        "reused pid": ({**process_owner(), "start": "1"}, None, True),
        "zero pid": ({"host": here, "pid": 0}, None, True),
        "other host": ({"host": "elsewhere", "pid": 1}, None, False),
        "other host, old": ({"host": "elsewhere", "pid": 1}, 0.0, True),
        "no owner": (None, None, False),
    }
    for name, (owner, grace, fails) in cases.items():
        folder = tmp_path / name.replace(" ", "-").replace(",", "")
        folder.mkdir()
        study = _running_trial(folder, owner)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            failed = fail_orphaned_trials(study, grace=grace)
        assert failed == ([0] if fails else []), name
        trials = study.trials
        if fails:
            assert trials[0].state == optuna.trial.TrialState.FAIL and trials[0].system_attrs[ORPHANED_ATTR]
            assert trials[1].state == optuna.trial.TrialState.WAITING and trials[1].params == {
                "x": trials[0].params["x"]
            }
            assert trials[1].system_attrs["failed_trial"] == 0 and ORPHANED_ATTR not in trials[1].system_attrs
        else:
            assert [t.state for t in trials] == [optuna.trial.TrialState.RUNNING], name
            assert bool(caught) == (name != "alive"), name  # what cannot be checked is said
    study = _running_trial(tmp_path, {"host": here, "pid": dead.pid})
    assert fail_orphaned_trials(study, max_retry=0) == [0] and len(study.trials) == 1  # no retry left


def test_cli_tune_and_export(tmp_path: Path, crops: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from optimizer.cli import main

    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    export = tmp_path / "presets.json"
    code = main(
        [
            "tune",
            *map(str, crops),
            "--formats",
            "jpeg",
            "--target",
            "ssim:0.9",
            "--profile",
            "fast",
            "--trials",
            "5",
            "--seed",
            "3",
            "--study",
            "cli",
            "--export",
            str(export),
        ]
    )
    assert code == 0
    assert (tmp_path / "studies" / "cli.db").exists()
    data = json.loads(export.read_text())
    assert data["tiers"] and data["tiers"][0]["settings"]["codec"] == "jpeg"
    assert main(["tune", "--formats", "jpeg"]) == 2  # neither images nor --demo
    assert main(["tune", str(crops[0]), "--target", "nope:1"]) == 2


def test_cli_tune_exit_codes_mean_something(
    tmp_path: Path, crops: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No preset (with or without --export): exit 1 saying why; --require-savings turns a saving short of
    the bar into exit 1; the summary words a saving as smaller/larger, never with a minus sign."""
    from optimizer.cli import main

    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    common = [*map(str, crops), "--formats", "jpeg", "--profile", "fast", "--trials", "3", "--seed", "1"]
    export = tmp_path / "none.json"
    code = main(["tune", *common, "--target", "ssim:0.99999", "--quality", "10-20", "--study", "impossible",
                 "--export", str(export)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and not export.exists()
    assert captured.err.splitlines()[-1].startswith(f"error: no preset written to {export}: ")
    assert main(["tune", *common, "--target", "ssim:0.9", "--study", "ok", "--require-savings", "99"]) == 1
    out, err = capsys.readouterr()
    assert "than JPEG at equal quality" in out and "--require-savings asks for at least 99%" in err
    assert re.search(r"-\s*\d+(\.\d+)?\s*%", out) is None  # "24% larger", never "-24% larger"
    assert main(["tune", *common, "--target", "ssim:0.9", "--study", "ok", "--require-savings", "-100"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("aggregate", ["worst", "p10", "mean"])
def test_failing_probes_stop_early_and_exactly_for_a_distance_target(
    tmp_path: Path, crops: list[Path], aggregate: str
) -> None:
    """ST-LPIPS (a distance, weights shipped, no download). Each probe measures the hardest images first and
    stops as soon as even perfect scores on the rest could not meet the bar: such a probe really fails; a
    setting that cannot meet the bar at the top of its range is a pruned trial; the one that can is solved."""
    import optuna

    from optimizer.tuning.study import prepare_study, run_trials

    small = []
    for path in crops:
        target = tmp_path / path.name
        load_image(path).to_pil().crop((0, 0, 64, 64)).save(target)
        small.append(target)
    config = TuneConfig(
        space={"formats": ["jpeg", "webp"], "jpeg": {"quality": [5, 95]}, "webp": {"quality": [1, 4]}},
        target="stlpips:0.05",
        aggregate=aggregate,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        study_name="prune",
        n_trials=2,
        seed=0,
    )
    prepared = prepare_study(small, config, evaluator=Evaluator(metrics=["stlpips"]))
    run_trials(prepared.study, prepared.objective, n_trials=4, search=prepared.search)
    trials = {t.params.get("format"): t for t in prepared.study.trials}
    count = len(small)
    coarse, solved = trials["webp"], trials["jpeg"]
    assert coarse.state == optuna.trial.TrialState.PRUNED  # webp quality 1-4 cannot meet the bar
    assert solved.state == optuna.trial.TrialState.COMPLETE and is_feasible(solved)
    assert solved.user_attrs["quality"] <= 0.05 and solved.user_attrs["minimal"] is True
    answer = solved.user_attrs["settings"]["params"]["quality"]
    assert any(p["complete"] and p["setting"] == answer for p in solved.user_attrs["probes"])  # confirmed in full
    early = 0
    for trial in (coarse, solved):
        for probe in trial.user_attrs["probes"]:
            if probe["complete"] or probe["optimistic"]:  # an optimistic estimate is confirmed in full later
                continue
            early += 1
            # a probe stopped early fails on the whole corpus: re-measure it completely
            settings = trial_settings(trial).with_param("quality", probe["setting"])
            full = prepared.objective.meter.measure(settings)
            assert full.complete and not Target.parse("stlpips:0.05").is_met(full.quality)
            assert probe["images"] < count
    assert early >= 1


def test_runs_on_a_supported_optuna() -> None:
    """The main run uses what pip resolves; tests/run.sh repeats the tuning tests on the floor of the range
    pyproject.toml declares (OPTIMIZER_EXPECT_OPTUNA names it), so the floor is tested, not assumed."""
    import re

    import optuna
    from packaging.version import Version

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    floor, cap = re.search(r'"optuna>=([0-9.]+),<([0-9.]+)"', text).groups()
    installed = Version(optuna.__version__)
    assert Version(floor) <= installed < Version(cap)
    expected = os.environ.get("OPTIMIZER_EXPECT_OPTUNA")
    if expected:
        assert installed == Version(expected) == Version(floor)


def test_solved_trials_are_minimal_on_the_whole_corpus(tmp_path: Path, crops: list[Path]) -> None:
    """Each complete trial's quality passes on every image and the one just below fails (checked afresh)."""
    from optimizer.tuning.study import prepare_study, run_trials

    images = crops * 1
    config = TuneConfig(**_config_kwargs(tmp_path, trials=4, target="ssim:0.95", aggregate="worst"))
    prepared = prepare_study(images, config)
    run_trials(prepared.study, prepared.objective, n_trials=4, search=prepared.search)
    goal = Target.parse("ssim:0.95")
    fresh = prepared.objective.meter.__class__(prepared.objective.corpus, Evaluator(profile="fast"), goal, "worst")
    checked = 0
    for trial in prepared.study.trials:
        if trial.state.name != "COMPLETE" or not trial.user_attrs["minimal"]:
            continue
        settings = trial_settings(trial)
        quality = settings.params["quality"]
        assert goal.is_met(fresh.measure(settings).quality)
        if quality > 30:
            assert not goal.is_met(fresh.measure(settings.with_param("quality", quality - 1)).quality)
        checked += 1
    assert checked >= 3


def test_warm_start_tries_the_other_studys_best_settings_first(tmp_path: Path, crops: list[Path]) -> None:
    """A study warm-started from another (any storage) tries that study's best settings before the usual
    ones, and starts each format's quality search where that study found its answer."""
    from optimizer.tuning.records import WARM_START_ATTR

    source_space = {"formats": ["jpeg"], "jpeg": {"quality": [30, 95], "subsampling": ["4:4:4"]}}
    source = tune(crops, **_study_kwargs(tmp_path / "source", space=source_space, trials=2))
    assert source.best_trial is not None
    storage = f"sqlite:///{tmp_path / 'source' / 'study.db'}"
    cold = tune(crops, **_study_kwargs(tmp_path / "cold", trials=1))
    warm = tune(crops, **_study_kwargs(tmp_path / "warm", trials=1, warm_start="t", warm_start_storage=storage))
    assert cold.study.trials[0].params["jpeg.subsampling"] != "4:4:4"  # the usual settings come first...
    assert warm.study.trials[0].params["jpeg.subsampling"] == "4:4:4"  # ...after the other study's best
    hints = warm.study.user_attrs[WARM_START_ATTR]
    assert hints["source"] == "t" and hints["starts"]["jpeg"]["value"] == source.best_trial.params.get(
        "jpeg.quality", source.best_trial.user_attrs["settings"]["params"]["quality"]
    )
    with pytest.raises(StudyError):
        tune(crops, **_study_kwargs(tmp_path / "none", trials=1, warm_start="missing", warm_start_storage=storage))


@pytest.mark.slow
def test_demo_with_six_trials_exports_a_preset_that_meets_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's main job at a budget a new user gives it: ``tune --demo --trials 6`` exports a preset,
    and applying it to the demo images meets the target at the aggregate the study used."""
    from optimizer.cli import main
    from optimizer.tuning.presets import Preset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPTIMIZER_STUDIES_DIR", str(tmp_path / "studies"))
    presets = tmp_path / "presets.json"
    assert main(["tune", "--demo", "--trials", "6", "--export", str(presets)]) == 0
    out = capsys.readouterr().out
    tier = Preset.load(presets).default_tier
    assert tier.target == "ssimulacra2:80" and tier.target_obj.is_met(tier.expected.quality)
    assert "smaller than JPEG at equal quality" in out or "larger than JPEG at equal quality" in out
    assert "-" not in out.split("than JPEG at equal quality")[0].split()[-2]  # "24% larger", never "-24% larger"
