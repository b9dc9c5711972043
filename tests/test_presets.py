"""Presets: building from a study, choosing tiers, the file format (round trip, versions, malformed files),
reproducibility across processes, and the ``optimizer presets`` commands."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

import optimizer.cli.presets_cmd  # noqa: F401  (registers the commands)
from optimizer.cli import main
from optimizer.errors import CodecUnavailableError, PresetError, UnknownNameError
from optimizer.tuning.presets import DEFAULT_TIER, SCHEMA, SCHEMA_VERSION, Preset
from optimizer.tuning.settings import EncodingSettings
from optimizer.tuning.target import Target
from optimizer.tuning.tiers import build_preset

TARGET = "ssim:0.9"
EXTRA = {"high": "ssim:0.95"}


@pytest.fixture(scope="module")
def tuned(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny real study: two 192x128 Kodak crops, JPEG only, SSIM target, 8 seeded trials in SQLite."""
    from optimizer.tuning.study import tune

    folder = tmp_path_factory.mktemp("presets")
    images = []
    for path in kodak_paths[:2]:
        crop = folder / path.name
        PILImage.open(path).crop((200, 150, 392, 278)).save(crop)
        images.append(crop)
    storage = f"sqlite:///{folder}/s.db"
    result = tune(
        images,
        space={"formats": ["jpeg"], "jpeg": {"subsampling": ["4:2:0", "4:2:2", "4:4:4"], "optimize": [False, True]}},
        target=TARGET,
        profile="fast",
        storage=storage,
        study_name="presets-test",
        trials=8,
        seed=1,
        tiers=EXTRA,
    )
    return {"result": result, "storage": storage, "dir": folder}


@pytest.fixture()
def preset(tuned: dict[str, Any]) -> Preset:
    return tuned["result"].presets


# --------------------------------------------------------------------------------------------------
# Building from a real study


def test_tune_builds_the_target_tier_from_the_smallest_feasible_trial(tuned: dict[str, Any], preset: Preset) -> None:
    result = tuned["result"]
    assert preset.tier_names == [DEFAULT_TIER, "high"] and preset.default_tier.name == DEFAULT_TIER
    tier = preset.tier(DEFAULT_TIER)
    best = result.best_trial
    assert best is not None and tier.trial_number == best.number
    assert tier.expected.total_bytes == best.user_attrs["total_bytes"]
    assert tier.expected.quality >= 0.9 and tier.target == TARGET
    assert tier.settings == EncodingSettings.from_dict(best.user_attrs["settings"])
    assert set(tier.expected.aggregates) == {"ssim", "psnr", "composite"}
    assert "libjpeg-turbo" in tier.library_versions or "pillow" in tier.library_versions


def test_extra_tier_is_the_smallest_trial_meeting_its_target(tuned: dict[str, Any], preset: Preset) -> None:
    from optuna.trial import TrialState

    high = preset.tier("high")
    assert high.target == "ssim:0.95" and high.expected.quality >= 0.95
    from optimizer.tuning.records import trial_answer

    complete = tuned["result"].study.get_trials(states=(TrialState.COMPLETE,))
    # every trial also solved its quality for the extra tier: the tier is the smallest of those answers
    answers = [(p.total_bytes, p.trial) for t in complete if (p := trial_answer(t, "ssim:0.95")) is not None]
    assert answers and (high.expected.total_bytes, high.trial_number) == min(answers)
    assert high.settings.params["quality"] > preset.tier(DEFAULT_TIER).settings.params["quality"] or (
        high.settings != preset.tier(DEFAULT_TIER).settings
    )
    assert high.expected.total_bytes >= preset.tier(DEFAULT_TIER).expected.total_bytes


def test_preset_records_provenance(tuned: dict[str, Any], preset: Preset) -> None:
    assert preset.study == {"name": "presets-test", "storage": tuned["storage"]}
    assert preset.mode == "constrained" and preset.target == TARGET and preset.aggregate == "p10"
    assert preset.evaluator["profile"] == "fast" and set(preset.evaluator["metric_versions"]) == {"ssim", "psnr"}
    assert preset.corpus["images"] == 2 and len(preset.corpus["fingerprint"]) == 16
    assert preset.space["formats"] == ["jpeg"] and "jpeg" in preset.library_versions
    assert preset.created.endswith("+00:00") and preset.python_version.count(".") == 2
    assert preset.optuna_version != "unknown"


def test_unmet_tier_raises_with_the_best_quality_reached(tuned: dict[str, Any]) -> None:
    with pytest.raises(
        PresetError,
        match=r"tier 'perfect': no trial .* met the target ssim:0\.9999 .*best p10 ssim "
        r"reached was 0\.9\d+ \(trial \d+",
    ):
        build_preset(tuned["result"].study, tiers={"perfect": "ssim:0.9999"})


def test_tier_on_a_metric_the_study_did_not_record(tuned: dict[str, Any]) -> None:
    with pytest.raises(PresetError, match="did not record 'ms_ssim'; recorded metrics: composite, psnr, ssim"):
        build_preset(tuned["result"].study, tiers={"x": "ms_ssim:0.9"})


def test_target_tier_name_is_reserved(tuned: dict[str, Any]) -> None:
    with pytest.raises(PresetError, match="reserved"):
        build_preset(tuned["result"].study, tiers={"target": "ssim:0.8"})


def test_pareto_points_by_trial_number(tuned: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    study = tuned["result"].study
    numbers = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))][:2]
    picked = build_preset(study, pareto_points=numbers)
    assert sorted(t.trial_number for t in picked.tiers) == sorted(numbers)
    for tier in picked.tiers:
        assert tier.name == f"ssim-{tier.expected.quality:.4g}"
        assert Target.parse(tier.target).value <= tier.expected.quality  # rounded towards the worse side
    with pytest.raises(PresetError, match="9999"):
        build_preset(study, pareto_points=[9999])


# --------------------------------------------------------------------------------------------------
# Reproducibility


def test_same_study_gives_the_same_content(tuned: dict[str, Any], preset: Preset) -> None:
    again = build_preset(tuned["result"].study, tiers=EXTRA, storage=tuned["storage"])
    assert again.same_content(preset) and again.fingerprint() == preset.fingerprint()
    assert replace(again, created="2000-01-01T00:00:00+00:00").fingerprint() == preset.fingerprint()
    assert replace(again, aggregate="mean").fingerprint() != preset.fingerprint()


@pytest.mark.slow
def test_same_study_from_another_process(tuned: dict[str, Any], preset: Preset) -> None:
    code = (
        "import sys\n"
        "from optimizer.tuning.tiers import build_preset\n"
        "from optimizer.tuning.study import open_stored_study\n"
        "study, _ = open_stored_study('presets-test', sys.argv[1])\n"
        "print(build_preset(study, tiers={'high': 'ssim:0.95'}, storage=sys.argv[1]).fingerprint())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, tuned["storage"]], capture_output=True, text=True, cwd=tuned["dir"], timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == preset.fingerprint()


# --------------------------------------------------------------------------------------------------
# File format


def test_save_load_round_trip(tmp_path: Path, preset: Preset) -> None:
    path = preset.save(tmp_path / "nested" / "presets.json")
    text = path.read_text()
    loaded = Preset.load(path)
    assert loaded.to_dict() == preset.to_dict() and loaded.created == preset.created
    assert loaded.tier("high").settings == preset.tier("high").settings
    assert json.loads(text)["schema"] == SCHEMA and json.loads(text)["version"] == SCHEMA_VERSION
    keys = list(json.loads(text))
    assert keys == sorted(keys)  # stable key order
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text


def test_unknown_tier_lists_the_tiers(preset: Preset) -> None:
    with pytest.raises(UnknownNameError, match="unknown preset tier 'medium'; known: high, target"):
        preset.tier("medium")
    assert preset.tier() is preset.default_tier


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "p.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=SCHEMA_VERSION + 1), r"preset version 2 is newer .* upgrade optimizer"),
        (lambda d: d.update(version="1"), "version must be a positive integer, got '1'"),
        (lambda d: d.update(version=0), "version must be a positive integer, got 0"),
        (lambda d: d.update(schema="something.else"), "not an optimizer preset: schema must be 'optimizer.preset'"),
        (lambda d: d.pop("schema"), "schema must be 'optimizer.preset', got None"),
        (lambda d: d.update(tiers=[]), "tiers must be a non-empty list"),
        (lambda d: d.update(colour="blue"), "unknown key\\(s\\) 'colour'"),
        (lambda d: d.update(default_tier="nope"), "default tier 'nope' is not one of the tiers"),
        (lambda d: d["tiers"][0].update(target="ssim"), "tier 'target': invalid target 'ssim'"),
        (lambda d: d["tiers"][0].update(target="nosuchmetric:3"), "unknown metric 'nosuchmetric'"),
        (lambda d: d["tiers"][0]["settings"].update(codec="gif"), "tier 'target': unknown codec 'gif'"),
        (
            lambda d: d["tiers"][0]["settings"]["params"].update(quality=500),
            "quality must be an integer in \\[1, 100\\]",
        ),
        (lambda d: d["tiers"][0]["settings"]["params"].update(colour=1), "unknown parameter 'colour'"),
        (
            lambda d: d["tiers"][0]["settings"]["transform"].update(filter="fancy"),
            "filter must be one of .* got 'fancy'",
        ),
        (lambda d: d["tiers"][0]["expected"].update(total_bytes=-3), "total_bytes must be a non-negative integer"),
        (lambda d: d["tiers"][0]["expected"].pop("quality"), "missing key\\(s\\) 'quality'"),
        (lambda d: d["tiers"][0].update(widths=[0]), "widths must be a list of positive integers"),
        (lambda d: d["tiers"].append(d["tiers"][0]), "tier names must be unique, duplicated: target"),
        (lambda d: d["tiers"][0].update(name="has space"), "tier names use letters"),
    ],
)
def test_malformed_presets_are_refused(tmp_path: Path, preset: Preset, change: Any, message: str) -> None:
    data = json.loads(preset.to_json())
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(PresetError, match=message) as caught:
        Preset.load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"not valid JSON \(line 1, column 2"),
        ("[1, 2]", "a preset is a JSON object, got list"),
        ('{"schema": "optimizer.preset", "version": NaN}', "NaN is not allowed"),
    ],
)
def test_files_that_are_not_presets(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PresetError, match=message):
        Preset.load(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PresetError, match="preset file not found"):
        Preset.load(tmp_path / "absent.json")


def test_unavailable_codec_is_a_dependency_error(
    tmp_path: Path, preset: Preset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimizer.codecs import JpegCodec

    monkeypatch.setattr(JpegCodec, "available", lambda self: False)
    with pytest.raises(CodecUnavailableError):
        Preset.load(preset.save(tmp_path / "p.json"))


# --------------------------------------------------------------------------------------------------
# Tier choice on hand-made studies (tradeoff, pareto, ties)


def _study(mode: str, trials: list[tuple[int, int, float]], target: str = TARGET) -> Any:
    """An in-memory study with a stored definition; trials are (jpeg quality, total bytes, ssim)."""
    import optuna

    from optimizer.tuning.objective import directions_for
    from optimizer.tuning.records import DEFINITION_ATTR, StudyDefinition
    from optimizer.tuning.space import SearchSpace

    goal = Target.parse(target)
    definition = StudyDefinition(
        space=SearchSpace(formats=("jpeg",)).to_dict(),
        target=target,
        mode=mode,
        aggregate="p10",
        tradeoff_lambda=0.05,
        time_objective=False,
        evaluator={
            "profile": "fast",
            "weights": {"ssim": 0.6, "psnr": 0.4},
            "metrics": ["ssim", "psnr"],
            "metric_versions": {"ssim": "1", "psnr": "1"},
        },
        corpus={"fingerprint": "0123456789abcdef", "images": 2, "items": 2, "pixels": 1000},
    )
    study = optuna.create_study(directions=directions_for(mode, goal))
    study.set_user_attr(DEFINITION_ATTR, definition.to_dict())
    for quality, total, ssim in trials:
        bpp = total * 8 / 1000
        attrs = {
            "settings": EncodingSettings("jpeg", {"quality": quality}).to_dict(),
            "total_bytes": total,
            "bits_per_pixel": bpp,
            "quality": ssim,
            "aggregates": {"ssim": ssim, "psnr": 30.0, "composite": 0.6},
            "constraint": goal.value - ssim,
        }
        values = {"constrained": [total], "tradeoff": [ssim - 0.05 * bpp], "pareto": [total, ssim]}[mode]
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs))
    return study


def test_ties_are_broken_by_trial_number() -> None:
    study = _study("constrained", [(70, 500, 0.95), (60, 400, 0.85), (65, 450, 0.93), (66, 450, 0.94)])
    assert build_preset(study).tier().trial_number == 2


def test_no_feasible_trial() -> None:
    study = _study("constrained", [(30, 100, 0.80), (40, 150, 0.86), (35, 120, 0.86)])
    with pytest.raises(PresetError, match=r"best p10 ssim reached was 0\.86 \(trial 1, 3 complete trials\)"):
        build_preset(study)
    with pytest.raises(PresetError, match="no complete trial"):
        build_preset(_study("constrained", []))


def test_tradeoff_best_value() -> None:
    preset = build_preset(_study("tradeoff", [(60, 500, 0.93), (50, 200, 0.92), (90, 2000, 0.99)]))
    assert preset.tier_names == ["best"] and preset.default == "best" and preset.tiers[0].trial_number == 1
    assert preset.tiers[0].target == "ssim:0.92"
    with pytest.raises(PresetError, match="named tiers need a constrained study"):
        build_preset(_study("tradeoff", [(60, 500, 0.93)]), tiers={"high": "ssim:0.95"})


def test_pareto_front_tiers_named_by_quality() -> None:
    trials = [(40, 100, 0.851237), (60, 300, 0.92), (55, 350, 0.90), (80, 600, 0.96), (85, 650, 0.96)]
    preset = build_preset(_study("pareto", trials))
    assert preset.tier_names == ["ssim-0.8512", "ssim-0.92", "ssim-0.96"]
    assert [t.trial_number for t in preset.tiers] == [0, 1, 3]
    assert preset.tiers[0].target == "ssim:0.8512" and math.isclose(preset.tiers[0].expected.quality, 0.851237)
    assert preset.default == "ssim-0.92"  # the smallest point meeting the study target
    assert build_preset(_study("pareto", trials[:1])).default == "ssim-0.8512"


def test_study_without_definition() -> None:
    import optuna

    with pytest.raises(PresetError, match="not created by optimizer"):
        build_preset(optuna.create_study())


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_show(tmp_path: Path, preset: Preset, capsys: pytest.CaptureFixture[str]) -> None:
    path = preset.save(tmp_path / "p.json")
    assert main(["presets", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target *" in out and "high" in out and "ssim:0.95" in out
    assert main(["presets", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["default_tier"] == DEFAULT_TIER


def test_cli_export(tmp_path: Path, preset: Preset, capsys: pytest.CaptureFixture[str]) -> None:
    path = preset.save(tmp_path / "p.json")
    quality = preset.tier("high").settings.params["quality"]
    assert main(["presets", "export", str(path), "--tier", "high", "--to", "cjpeg", "--input", "a.ppm"]) == 0
    out = capsys.readouterr().out
    assert f"cjpeg -quality {quality} " in out and out.rstrip().endswith("a.ppm")
    assert main(["presets", "export", str(path), "--to", "sharp", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tier"] == DEFAULT_TIER and data["exports"][0]["options"]["format"] == "jpeg"
    assert main(["presets", "export", str(path), "--to", "cwebp"]) == 2  # a JPEG tier
    assert "cwebp does not write jpeg" in capsys.readouterr().err
    assert main(["presets", "export", str(path), "--to", "pillow", "--tier", "nope"]) == 2
    (tmp_path / "bad.json").write_text("{}")
    assert main(["presets", "show", str(tmp_path / "bad.json")]) == 3


def test_cli_build(tmp_path: Path, tuned: dict[str, Any], preset: Preset, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "built.json"
    argv = [
        "presets",
        "build",
        "--study",
        "presets-test",
        "--storage",
        tuned["storage"],
        "-o",
        str(out),
        "--tier",
        "high=ssim:0.95",
    ]
    assert main(argv) == 0
    assert Preset.load(out).fingerprint() == preset.fingerprint()
    assert main([*argv[:-2], "--tier", "oops"]) == 2
    assert "NAME=METRIC:VALUE" in capsys.readouterr().err
