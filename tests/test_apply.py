"""``apply_preset`` and ``optimizer apply``: output names, never overwriting, unreadable inputs, responsive
widths, verification against the tier's target, and the exit codes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

import optimizer.cli.presets_cmd  # noqa: F401  (registers the commands)
from optimizer.cli import EXIT_CHECK_FAILED, EXIT_INPUT, main
from optimizer.errors import InvalidParameterError
from optimizer.evaluator import Evaluator
from optimizer.imageio import load_image
from optimizer.transforms import Transform
from optimizer.tuning.apply import ApplyReport, apply_preset, evaluator_for_preset
from optimizer.tuning.presets import Preset


@pytest.fixture(scope="module")
def setup(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A preset from a tiny real study (two 192x128 Kodak crops, JPEG, ssim:0.9), saved to disk."""
    from optimizer.tuning.study import tune

    folder = tmp_path_factory.mktemp("apply")
    corpus = folder / "corpus"
    corpus.mkdir()
    for path in kodak_paths[:2]:
        PILImage.open(path).crop((200, 150, 392, 278)).save(corpus / path.name)
    result = tune(
        sorted(corpus.iterdir()),
        space={"formats": ["jpeg"]},
        target="ssim:0.9",
        profile="fast",
        storage=f"sqlite:///{folder}/s.db",
        study_name="apply-test",
        trials=6,
        seed=1,
    )
    preset = result.presets
    path = preset.save(folder / "presets.json")
    return {"preset": preset, "path": path, "corpus": corpus}


def _inputs(tmp_path: Path, corpus: Path) -> Path:
    """in/kodim01.png, in/sub/kodim02.png, an unreadable in/broken.png and a text file that is skipped."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    first, second = sorted(corpus.iterdir())
    (root / first.name).write_bytes(first.read_bytes())
    (root / "sub" / second.name).write_bytes(second.read_bytes())
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image")
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _impossible(preset: Preset) -> Preset:
    return replace(preset, tiers=[replace(t, target="ssim:0.9999") for t in preset.tiers])


def test_outputs_mirror_the_input_tree(tmp_path: Path, setup: dict[str, Any]) -> None:
    root = _inputs(tmp_path, setup["corpus"])
    before = _digest(root)
    report = apply_preset(setup["preset"], root, tmp_path / "out")
    assert sorted(str(Path(i.output).relative_to(tmp_path / "out")) for i in report.items) == [
        "kodim01.jpg",
        "sub/kodim02.jpg",
    ]
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg")) == [
        "kodim01.jpg",
        "sub/kodim02.jpg",
    ]
    assert _digest(root) == before  # inputs untouched
    for item in report.items:
        assert Path(item.output).stat().st_size == item.bytes_out
        assert item.bytes_in == Path(item.source).stat().st_size and (item.width, item.height) == (192, 128)
        assert item.bits_per_pixel == pytest.approx(item.bytes_out * 8 / (192 * 128))
        assert item.quality is None and item.met is None
    [issue] = report.issues
    assert issue.kind == "unreadable" and issue.path.endswith("broken.png") and "broken.png" not in issue.reason
    assert report.problems == [issue] and not report.misses and not report.ok


def test_verify_reproduces_the_study_on_its_corpus(tmp_path: Path, setup: dict[str, Any]) -> None:
    preset: Preset = setup["preset"]
    report = apply_preset(preset, setup["corpus"], tmp_path / "out", verify=True)
    tier = preset.default_tier
    totals = report.totals()
    # Same images, settings and evaluator as the study's trial: same bytes and the same p10 SSIM.
    assert totals["bytes_out"] == tier.expected.total_bytes
    assert totals["quality"] == pytest.approx(tier.expected.quality, abs=1e-6)
    assert totals["aggregate"] == "p10" and totals["aggregate_met"] is True
    assert all(item.scores is not None and set(item.scores) >= {"ssim", "psnr", "composite"} for item in report.items)
    assert totals["met"] + totals["missed"] == len(report.items) == 2


def test_verify_flags_misses(tmp_path: Path, setup: dict[str, Any]) -> None:
    report = apply_preset(_impossible(setup["preset"]), setup["corpus"], tmp_path / "out", verify=True)
    assert len(report.misses) == 2 and all(item.met is False for item in report.items)
    assert report.totals()["aggregate_met"] is False and not report.ok


def test_existing_outputs_and_inputs_are_never_overwritten(tmp_path: Path, setup: dict[str, Any]) -> None:
    out = tmp_path / "out"
    apply_preset(setup["preset"], setup["corpus"], out)
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.jpg")}
    again = apply_preset(setup["preset"], setup["corpus"], out)
    assert not again.items and {i.kind for i in again.issues} == {"exists"} and len(again.issues) == 2
    assert "--overwrite" in again.issues[0].reason
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.jpg")} == stamp
    replaced = apply_preset(setup["preset"], setup["corpus"], out, overwrite=True)
    assert len(replaced.items) == 2 and not replaced.issues
    # An output that would land on an input file is refused even with overwrite.
    folder = tmp_path / "same"
    folder.mkdir()
    source = folder / "photo.jpg"
    PILImage.open(next(setup["corpus"].iterdir())).save(source, quality=95)
    original = source.read_bytes()
    report = apply_preset(setup["preset"], folder, folder, overwrite=True)
    assert source.read_bytes() == original and report.issues[0].kind == "failed"
    assert "is an input file" in report.issues[0].reason


def test_output_folder_inside_the_input_folder(tmp_path: Path, setup: dict[str, Any]) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for path in setup["corpus"].iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    apply_preset(setup["preset"], root, root / "out")
    report = apply_preset(setup["preset"], root, root / "out", overwrite=True)
    assert len(report.items) == 2 and not report.issues  # earlier outputs are not taken as inputs


def test_name_collisions_and_explicit_files(tmp_path: Path, setup: dict[str, Any]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first = next(iter(sorted(setup["corpus"].iterdir())))
    (folder / "a.png").write_bytes(first.read_bytes())
    PILImage.open(first).save(folder / "a.ppm")
    report = apply_preset(setup["preset"], folder, tmp_path / "out")
    assert len(report.items) == 1 and [i.kind for i in report.issues] == ["collision"]
    listed = apply_preset(setup["preset"], [folder / "a.png", tmp_path / "missing.png"], tmp_path / "out2")
    assert [Path(i.output).name for i in listed.items] == ["a.jpg"]
    assert [(i.kind, i.reason) for i in listed.issues] == [("unreadable", "no such file or folder")]
    with pytest.raises(InvalidParameterError, match="no inputs"):
        apply_preset(setup["preset"], [], tmp_path / "out3")


def test_responsive_widths(tmp_path: Path, setup: dict[str, Any]) -> None:
    preset: Preset = setup["preset"]
    tier = replace(
        preset.default_tier,
        widths=(96, 400),
        reference_filter="lanczos",
        settings=replace(preset.default_tier.settings, transform=Transform(filter="bilinear", sharpen_amount=0.5)),
    )
    sized = replace(preset, tiers=[tier])
    report = apply_preset(sized, setup["corpus"], tmp_path / "out", verify=True)
    assert sorted(Path(i.output).name for i in report.items) == ["kodim01-96w.jpg", "kodim02-96w.jpg"]
    assert all((i.width, i.height, i.target_width) == (96, 64, 96) for i in report.items)
    assert [i.kind for i in report.issues] == ["skipped", "skipped"] and not report.problems
    assert "not upscaled" in report.issues[0].reason
    # Verification scores against the original resized with the study's reference filter, as the study did.
    item = next(i for i in report.items if i.output.endswith("kodim01-96w.jpg"))
    source = load_image(item.source)
    reference = Transform(width=96, filter="lanczos").apply(source)
    expected = evaluator_for_preset(sized).evaluate(reference, item.output).scores["ssim"]
    assert item.quality == pytest.approx(expected, abs=1e-6)
    narrow = replace(preset, tiers=[replace(tier, widths=(400, 800))])
    only = apply_preset(narrow, setup["corpus"], tmp_path / "narrow")
    assert sorted(Path(i.output).name for i in only.items) == ["kodim01-192w.jpg", "kodim02-192w.jpg"]


def test_jobs_give_the_same_report(tmp_path: Path, setup: dict[str, Any]) -> None:
    root = _inputs(tmp_path, setup["corpus"])
    one = apply_preset(setup["preset"], root, tmp_path / "a", verify=True)
    two = apply_preset(setup["preset"], root, tmp_path / "b", verify=True, jobs=2)
    assert [(Path(i.output).name, i.bytes_out, i.quality) for i in one.items] == [
        (Path(i.output).name, i.bytes_out, i.quality) for i in two.items
    ]
    assert [i.kind for i in one.issues] == [i.kind for i in two.issues]
    with pytest.raises(InvalidParameterError, match="jobs must be an integer >= 1, got 0"):
        apply_preset(setup["preset"], root, tmp_path / "c", jobs=0)
    with pytest.warns(DeprecationWarning, match="workers= is deprecated"):
        old = apply_preset(setup["preset"], root, tmp_path / "d", workers=2)
    assert [i.bytes_out for i in old.items] == [i.bytes_out for i in two.items]


def test_report_exports(tmp_path: Path, setup: dict[str, Any]) -> None:
    report: ApplyReport = apply_preset(
        setup["preset"], _inputs(tmp_path, setup["corpus"]), tmp_path / "out", verify=True
    )
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert data["tier"] == "target" and data["totals"]["outputs"] == 2 and data["issues"][0]["kind"] == "unreadable"
    assert data["preset"]["fingerprint"] == setup["preset"].fingerprint()
    frame = report.to_dataframe()
    assert list(frame["bytes_out"]) == [i.bytes_out for i in report.items]
    assert {"quality", "met", "ssim", "psnr", "composite", "bits_per_pixel"} <= set(frame.columns)


def test_evaluator_must_compute_the_target_metric(tmp_path: Path, setup: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameterError, match="does not compute 'ssim'"):
        apply_preset(
            setup["preset"], setup["corpus"], tmp_path / "out", verify=True, evaluator=Evaluator(metrics=["psnr"])
        )
    assert evaluator_for_preset(setup["preset"]).profile.name == "fast"


def test_cli_apply_exit_codes(tmp_path: Path, setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    path = str(setup["path"])
    corpus = str(setup["corpus"])
    assert main(["apply", path, corpus, "-d", str(tmp_path / "ok"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "kodim01.jpg" in out and "2 met, 0 missed" in out
    impossible = _impossible(setup["preset"]).save(tmp_path / "impossible.json")
    assert main(["apply", str(impossible), corpus, "-d", str(tmp_path / "miss"), "--verify"]) == EXIT_CHECK_FAILED
    assert "missed the target ssim:0.9999" in capsys.readouterr().out
    root = _inputs(tmp_path, setup["corpus"])
    assert main(["apply", path, str(root), "-d", str(tmp_path / "broken"), "--json"]) == EXIT_INPUT
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["outputs"] == 2 and data["issues"][0]["kind"] == "unreadable"
    assert main(["apply", path, corpus, "-d", str(tmp_path / "ok"), "--tier", "nope"]) == 2
    assert "unknown preset tier 'nope'" in capsys.readouterr().err
