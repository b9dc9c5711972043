"""The CI quality gate: budget files, statistics, failing images, missing files, JUnit XML and exit codes."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.errors import ConfigError, InvalidParameterError, UnknownNameError
from optimizer.evaluator import Evaluator
from optimizer.gate import Budget, GateConfig, gate_evaluator, load_budgets, parse_budgets, run_gate

QUALITIES = {"a": 92, "b": 88, "sub/c": 12}  # "sub/c" is the one bad encoding


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, kodak_paths: list[Path]) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gate")
    orig, proc = root / "orig", root / "proc"
    for path, key in zip(kodak_paths[:3], QUALITIES):
        image = PILImage.open(path).convert("RGB").crop((256, 160, 384, 288))
        for folder in (orig, proc):
            (folder / key).parent.mkdir(parents=True, exist_ok=True)
        image.save(orig / f"{key}.png")
        image.save(proc / f"{key}.jpg", quality=QUALITIES[key])
    return orig, proc


@pytest.fixture(scope="module")
def evaluator() -> Evaluator:
    return Evaluator("fast").load()


def _copy(folders: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    shutil.copytree(folders[0], orig)
    shutil.copytree(folders[1], proc)
    return orig, proc


# --------------------------------------------------------------------------------------------------
# Budget files


def test_budget_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "budget.toml"
    path.write_text(
        'profile = "fast"\nallow_missing = true\n'
        '[[budget]]\nmetric = "composite"\nstat = "p10"\nmin = 0.85\n'
        '[[budget]]\nmetric = "lpips"\nstat = "max"\nmax = 0.2\n'
        '[[budget]]\nmetric = "ssimulacra2"\nstat = "mean"\nmin = 75\n'
        '[[budget]]\nmetric = "bytes"\nmax = 5_000_000\n'
        '[[budget]]\nname = "size ratio"\nmetric = "bytes"\nmax_ratio = 0.6\n'
    )
    config = load_budgets(path)
    assert config.profile == "fast" and config.allow_missing is True
    assert [b.stat for b in config.budgets] == ["p10", "max", "mean", "total", "total"]
    assert config.metrics == ["lpips", "ssimulacra2"]
    assert config.budgets[3].label == "bytes total <= 5,000,000"
    assert config.budgets[4].label == "size ratio"
    assert [b.higher_is_better for b in config.budgets] == [True, False, True, False, False]
    assert Budget("ssim", min=0.9).stat == "mean"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[[budget]]\nmetric = "ssim"\nstat = "mean"\nminimum = 0.9\n', "unknown key"),
        ('[[budget]]\nmetric = "ssmi"\nmin = 0.9\n', "unknown budget metric"),
        ('[[budget]]\nmetric = "ssim"\nstat = "average"\nmin = 0.9\n', "stat"),
        ('[[budget]]\nmetric = "ssim"\nstat = "mean"\n', "needs a min or a max"),
        ('[[budget]]\nmetric = "bytes"\n', "max_ratio"),
        ('[[budget]]\nmetric = "ssim"\nmax_ratio = 0.5\n', "bytes only"),
        ('[[budget]]\nmetric = "bytes"\nmax = 10\nmax_ratio = 0.5\n', "not both"),
        ('[[budget]]\nmetric = "ssim"\nstat = "total"\nmin = 0.5\n', "bytes only"),
        ('[[budget]]\nmetric = "ssim"\nmin = 0.9\nmax = 0.5\n', "above max"),
        ('[[budget]]\nmetric = "ssim"\nmin = "high"\n', "number"),
        ('[[budget]]\nstat = "mean"\nmin = 0.5\n', "'metric' is required"),
        ('[[budget]]\nmetric = "ssim"\nmin = 0.5\n[[budget]]\nmetric = "ssim"\nmin = 0.5\n', "duplicate"),
        ("budgets = []\n", "unknown key"),
        ('profile = "fast"\n', "no budgets"),
        ("budget = 3\n", "array of tables"),
        ("budget = [1, 2]\n", "array of tables"),
        ('profile = "nope"\n[[budget]]\nmetric = "ssim"\nmin = 0.5\n', "unknown profile"),
        ('allow_missing = "yes"\n[[budget]]\nmetric = "ssim"\nmin = 0.5\n', "allow_missing"),
        ('[[budget]\nmetric = "ssim"\n', "not valid TOML"),
    ],
)
def test_malformed_budget_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "budget.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="budget.toml") as info:
        load_budgets(path)
    assert fragment in str(info.value)


def test_budget_api_errors() -> None:
    with pytest.raises(UnknownNameError):
        Budget("nope", min=1)
    with pytest.raises(InvalidParameterError):
        Budget("ssim")
    with pytest.raises(ConfigError):
        load_budgets("/definitely/absent/budget.toml")
    with pytest.raises(ConfigError):
        parse_budgets({"budget": [{"metric": "ssim", "min": 0.5, "extra": 1}]})


def test_gate_evaluator_computes_what_the_budgets_need() -> None:
    assert gate_evaluator([Budget("ssim", min=0.5)]).metric_names == ["ssim"]
    assert gate_evaluator([Budget("bytes", max=10)]).profile.name == "fast"
    composite = gate_evaluator([Budget("composite", min=0.5), Budget("psnr", min=30)], "fast")
    assert composite.profile.name == "fast" and composite.metric_names == ["ssim", "psnr"]
    assert gate_evaluator([Budget("composite", min=0.5)]).profile.name == "default"


# --------------------------------------------------------------------------------------------------
# Checking budgets


def test_passing_gate_and_exact_statistics(folders: tuple[Path, Path], evaluator: Evaluator) -> None:
    budgets = [
        Budget("ssim", "mean", min=0.5),
        Budget("composite", "p10", min=0.0),
        Budget("psnr", "median", min=10, max=80),
        Budget("ssim", "worst", min=0.1),
        Budget("bytes", max_ratio=0.9),
        Budget("bits_per_pixel", "max", max=24),
    ]
    report = run_gate(budgets, *folders, evaluator=evaluator)
    assert report.passed and report.files_ok and not report.failures
    pairs = report.batch.pairs
    assert [p.key for p in pairs] == ["a", "b", "sub/c"]
    ssim = [p.result.scores["ssim"] for p in pairs]
    composite = [p.result.composite for p in pairs]
    values = {r.budget.label: r.value for r in report.results}
    assert values["ssim mean >= 0.5"] == pytest.approx(np.mean(ssim))
    assert values["composite p10 >= 0"] == pytest.approx(np.percentile(composite, 10))
    assert values["ssim worst >= 0.1"] == pytest.approx(min(ssim))
    ratio = sum(p.distorted_bytes for p in pairs) / sum(p.reference_bytes for p in pairs)
    assert values["bytes ratio total <= 90.0% of originals"] == pytest.approx(ratio)
    assert all(r.failing == () for r in report.results)
    json.loads(report.to_json())


def test_failing_gate_names_the_failing_images(folders: tuple[Path, Path], evaluator: Evaluator) -> None:
    probe = run_gate([Budget("ssim", min=0)], *folders, evaluator=evaluator).batch.pairs
    ssim = {p.key: p.result.scores["ssim"] for p in probe}
    bpp = {p.key: p.bits_per_pixel for p in probe}
    assert ssim["sub/c"] < min(ssim["a"], ssim["b"])
    floor = (ssim["sub/c"] + min(ssim["a"], ssim["b"])) / 2
    budgets = [
        Budget("ssim", "mean", min=max(ssim.values()) + 0.001),  # every image is below this floor
        Budget("ssim", "min", min=floor),  # only the bad encoding breaks it
        Budget("bits_per_pixel", "worst", max=sorted(bpp.values())[1] + 1e-6),  # a distance-like budget
        Budget("composite", "mean", min=0.0),
    ]
    report = run_gate(budgets, *folders, evaluator=evaluator)
    assert not report.passed
    mean, minimum, size, composite = report.results
    assert not mean.passed and [k for k, _ in mean.failing] == ["sub/c", *sorted(("a", "b"), key=ssim.get)]
    assert not minimum.passed and [k for k, _ in minimum.failing] == ["sub/c"]
    assert "below the min" in minimum.message and "sub/c" in minimum.message
    largest = max(bpp, key=bpp.get)
    assert not size.passed and [k for k, _ in size.failing] == [largest] and "above the max" in size.message
    assert composite.passed
    assert report.failures == [mean, minimum, size]


def test_total_bytes_budget(folders: tuple[Path, Path], evaluator: Evaluator) -> None:
    ok = run_gate([Budget("bytes", max=10_000_000)], *folders, evaluator=evaluator)
    pairs = ok.batch.pairs
    total = sum(p.distorted_bytes for p in pairs)
    assert ok.passed and ok.results[0].value == total
    tight = run_gate([Budget("bytes", max=total - 1)], *folders, evaluator=evaluator).results[0]
    share = (total - 1) / len(pairs)
    assert not tight.passed and tight.value == total
    assert {k for k, _ in tight.failing} == {p.key for p in pairs if p.distorted_bytes > share}
    ratio = run_gate([Budget("bytes", "max", max_ratio=0.01)], *folders, evaluator=evaluator).results[0]
    assert not ratio.passed and len(ratio.failing) == 3 and ratio.value == max(p.byte_ratio for p in pairs)


def test_missing_and_unreadable_files_fail_unless_allowed(
    folders: tuple[Path, Path], evaluator: Evaluator, tmp_path: Path
) -> None:
    orig, proc = _copy(folders, tmp_path)
    (proc / "a.jpg").write_bytes(b"\xff\xd8\xff garbage")  # unreadable
    shutil.copy(orig / "b.png", orig / "extra.png")  # no processed version
    budgets = [Budget("ssim", min=0.0)]
    report = run_gate(budgets, orig, proc, evaluator=evaluator)
    assert {i.kind for i in report.issues} == {"failed", "unpaired"}
    assert report.results[0].passed and not report.files_ok and not report.passed
    assert "--allow-missing" in report.files_message()
    allowed = run_gate(budgets, orig, proc, evaluator=evaluator, allow_missing=True)
    assert allowed.passed and len(allowed.issues) == 2
    config = GateConfig(tuple(budgets), allow_missing=True)
    assert run_gate(config, orig, proc, evaluator=evaluator).passed


def test_no_pairs_fails(tmp_path: Path, evaluator: Evaluator) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "p").mkdir()
    report = run_gate([Budget("ssim", min=0.0)], tmp_path / "o", tmp_path / "p", evaluator=evaluator)
    assert not report.passed and report.results[0].value is None
    root = ET.fromstring(report.to_junit())
    assert root.get("failures") == "2"


def test_lossless_pairs_have_infinite_psnr_statistics(
    folders: tuple[Path, Path], evaluator: Evaluator, tmp_path: Path
) -> None:
    # Identical images have an infinite PSNR: every statistic of it is inf (numpy's percentile says NaN).
    orig = folders[0]
    budgets = [Budget("psnr", stat, min=60) for stat in ("p10", "median", "p90", "worst")]
    report = run_gate(budgets, orig, orig, evaluator=evaluator)
    assert report.passed, [r.message for r in report.results]
    assert all(r.value == float("inf") for r in report.results)
    assert json.loads(report.to_json())["budgets"][0]["value"] == "inf"


def test_evaluator_must_compute_the_budget_metrics(folders: tuple[Path, Path], evaluator: Evaluator) -> None:
    with pytest.raises(InvalidParameterError, match="ms_ssim"):
        run_gate([Budget("ms_ssim", min=0.5)], *folders, evaluator=evaluator)
    with pytest.raises(InvalidParameterError):
        run_gate([Budget("ssim", min=0.5)], *folders, evaluator=evaluator, profile="fast")


def test_junit_xml_is_well_formed(folders: tuple[Path, Path], evaluator: Evaluator, tmp_path: Path) -> None:
    budgets = [Budget("ssim", "min", min=0.99, name='ssim floor <& "quoted">'), Budget("psnr", min=0.0)]
    report = run_gate(budgets, *folders, evaluator=evaluator)
    out = tmp_path / "junit.xml"
    text = report.to_junit(out)
    assert out.read_text() == text and text.startswith('<?xml version="1.0"')
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ['ssim floor <& "quoted">', "psnr mean >= 0", "files paired and readable"]
    failure = cases[0].find("failure")
    assert failure is not None and "sub/c" in failure.get("message", "") and "sub/c" in (failure.text or "")
    assert cases[1].find("failure") is None and cases[2].find("failure") is None
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["pairs"] == "3" and props["profile"] == "fast"


# --------------------------------------------------------------------------------------------------
# CLI


def _cli(args: list[str]) -> int:
    import optimizer.cli.monitor_cmd  # noqa: F401  (registers the commands)
    from optimizer.cli import main

    return main(args)


def test_cli_exit_codes(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        'profile = "fast"\n[[budget]]\nmetric = "composite"\nstat = "min"\nmin = 0.0\n'
        '[[budget]]\nmetric = "bytes"\nmax_ratio = 0.9\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[[budget]]\nmetric = "ssim"\nstat = "min"\nmin = 0.999\n')
    junit = tmp_path / "ci" / "junit.xml"
    assert _cli(["gate", "--budget", str(good), *map(str, folders), "--junit", str(junit)]) == 0
    assert ET.parse(junit).getroot().get("failures") == "0"
    capsys.readouterr()
    assert _cli(["gate", "--budget", str(bad), *map(str, folders), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "sub/c" in out and "gate failed" in out
    assert ET.parse(junit).getroot().get("failures") == "1"
    assert _cli(["gate", "--budget", str(bad), *map(str, folders), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False and data["budgets"][0]["failing"][0]["key"] in QUALITIES
    malformed = tmp_path / "malformed.toml"
    malformed.write_text('[[budget]]\nmetric = "ssim"\nstat = "mean"\n')
    assert _cli(["gate", "--budget", str(malformed), *map(str, folders)]) == 2
    assert _cli(["gate", "--budget", str(tmp_path / "absent.toml"), *map(str, folders)]) == 2
    assert _cli(["gate", "--budget", str(good), *map(str, folders), "--format", "yaml"]) == 2


def test_cli_allow_missing(folders: tuple[Path, Path], tmp_path: Path) -> None:
    orig, proc = _copy(folders, tmp_path)
    (proc / "b.jpg").unlink()
    budget = tmp_path / "budget.toml"
    budget.write_text('[[budget]]\nmetric = "ssim"\nmin = 0.0\n')
    assert _cli(["gate", "--budget", str(budget), str(orig), str(proc)]) == 1
    assert _cli(["gate", "--budget", str(budget), str(orig), str(proc), "--allow-missing"]) == 0
