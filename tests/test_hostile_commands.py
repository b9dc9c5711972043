"""The hostile-input contract, continued: the corpus of bad and odd files (tests/hostile_corpus.py) through
``apply``, ``tune``, ``report``, ``presets show``/``export`` and ``gate``.

As for ``evaluate``, ``encode`` and ``monitor`` (tests/test_hostile_inputs.py): a valid file works; anything
else is one error line naming the file and the reason, with exit 3 for bad input (2 for a configuration
file), never 5, never a traceback, and nothing half-written. Batches (``apply``, ``gate``) process the good
files and exit 3 for the bad ones. ``compress`` has its own suite. Runs under the corpus's 2 GiB memory
budget, in process through ``optimizer.cli.main``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import TinyStudy, textured_image
from hostile_corpus import ALLOWED, TEST_MEMORY_BUDGET, HostileFile, build_corpus, cli_problems

from optimizer.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[HostileFile]:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(autouse=True)
def memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMIZER_MAX_MEMORY", TEST_MEMORY_BUDGET)


def _regular(corpus: list[HostileFile]) -> list[HostileFile]:
    return [e for e in corpus if e.path.is_file() and not e.path.is_symlink()]


def _aged(path: Path) -> Path:
    past = time.time() - 120
    os.utime(path, (past, past))
    return path


# --------------------------------------------------------------------------------------------------
# apply


def test_apply_on_every_entry(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for entry in corpus:
        out = tmp_path / entry.name
        code = main(["apply", str(tiny_study.presets), str(entry.path), str(out)])
        failures += cli_problems(entry, code, capsys.readouterr().err, ALLOWED[entry.outcome])
        written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
        if (code == 0) != bool(written):
            failures.append(f"{entry.name}: exit {code} with {len(written)} output(s)")
        if any(p.name.startswith(".") for p in written):
            failures.append(f"{entry.name}: a temporary file was left behind")
    assert not failures, "\n".join(failures)


def test_apply_over_the_whole_corpus_encodes_the_good_files(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    regular = _regular(corpus)
    for entry in regular:
        shutil.copyfile(entry.path, folder / f"{entry.name}{entry.path.suffix}")
    report = tmp_path / "report.json"
    code = main(["apply", str(tiny_study.presets), str(folder), str(tmp_path / "out"), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    data = json.loads(report.read_text())
    encoded = {Path(item["source"]).stem for item in data["items"]}
    refused = {Path(issue["path"]).stem for issue in data["issues"]}
    for entry in regular:
        if entry.outcome == "valid":
            assert entry.name in encoded, entry.name
        if entry.outcome in ("invalid", "resource"):
            assert entry.name in refused and entry.name not in encoded, entry.name


# --------------------------------------------------------------------------------------------------
# tune

#: one trial with a target any JPEG setting meets (damaged but decodable files must still give a preset)
EASY = ("--trials", "1", "--target", "ssim:0.3")


def test_tune_refuses_a_bad_file_among_good_ones(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One bad file among two good ones: refused before the study is created (exit 3 naming it), never 5."""
    good = sorted(str(p) for p in tiny_study.images.iterdir())
    failures = []
    for entry in corpus:
        if entry.outcome == "valid" or entry.path.is_dir():  # a folder among the images is expanded
            continue
        db = tmp_path / f"{entry.name}.db"
        args = ["tune", *good, str(entry.path), *tiny_study.tune_options, *EASY, "--study", "t"]
        code = main([*args, "--storage", f"sqlite:///{db}"])
        failures += cli_problems(entry, code, capsys.readouterr().err, ALLOWED[entry.outcome])
        if code == 3 and db.exists() and entry.outcome != "tiny":  # a metric refuses a 1x1 image later
            failures.append(f"{entry.name}: a study was created for a refused corpus")
    assert not failures, "\n".join(failures)


def test_tune_on_every_valid_entry(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The odd but legitimate files (16-bit, CMYK, palette, animated, rotated...) tune together."""
    valid = [str(e.path) for e in corpus if e.outcome == "valid" and not e.path.is_dir()]
    args = ["tune", *valid, *tiny_study.tune_options, *EASY, "--study", "v"]
    code = main([*args, "--storage", f"sqlite:///{tmp_path / 'v.db'}"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err


# --------------------------------------------------------------------------------------------------
# report


@pytest.mark.slow
def test_report_with_a_damaged_study_image(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The study's image1.png replaced by each corpus file: a file that cannot be read is refused, exit 3
    naming it, and no report is written; a readable one is not the study's (a note, exit 0)."""
    failures = []
    valid_seen = 0
    for entry in _regular(corpus):
        if entry.outcome == "valid":
            valid_seen += 1
            if valid_seen > 3:  # building a whole report takes a second: three valid ones suffice
                continue
        folder = tmp_path / entry.name
        folder.mkdir()
        shutil.copyfile(entry.path, folder / "image1.png")
        textured_image(folder / "image2.png", 2)
        html = tmp_path / f"{entry.name}.html"
        args = ["report", "--study", tiny_study.name, "--storage", tiny_study.storage, "--images", str(folder)]
        code = main([*args, "-o", str(html), "--no-baseline", "--importance", "ped-anova"])
        err = capsys.readouterr().err
        failures += cli_problems(entry, code, err, ALLOWED[entry.outcome], named=str(folder / "image1.png"))
        if (code == 0) != html.exists():
            failures.append(f"{entry.name}: exit {code} but the report {'is missing' if code == 0 else 'was written'}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_report_refuses_a_hostile_presets_file(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    html = tmp_path / "report.html"
    for entry in corpus:
        args = ["report", "--study", tiny_study.name, "--storage", tiny_study.storage, "--presets", str(entry.path)]
        code = main([*args, "-o", str(html)])
        failures += cli_problems(entry, code, capsys.readouterr().err, {3})
    assert not failures, "\n".join(failures)
    assert not html.exists()


# --------------------------------------------------------------------------------------------------
# presets show / export


def _broken_presets(folder: Path, valid: Path) -> dict[str, Path]:
    """Preset files that are JSON but not a usable preset."""
    data = json.loads(valid.read_text())
    tier = data["tiers"][0]
    variants: dict[str, object] = {
        "a-list": [data],
        "another-schema": {**data, "schema": "something.else"},
        "a-future-version": {**data, "version": 99},
        "no-tiers": {k: v for k, v in data.items() if k != "tiers"},
        "tiers-not-a-list": {**data, "tiers": "target"},
        "unknown-codec": {**data, "tiers": [{**tier, "settings": {**tier["settings"], "codec": "nope"}}]},
        "quality-1e308": {
            **data,
            "tiers": [{**tier, "settings": {**tier["settings"], "params": {"quality": 1e308}}}],
        },
        "width-of-a-billion": {
            **data,
            "tiers": [{**tier, "settings": {**tier["settings"], "transform": {"width": 10**9}}}],
        },
    }
    out = {}
    for name, value in variants.items():
        out[name] = folder / f"{name}.json"
        out[name].write_text(json.dumps(value))
    out["nan-literal"] = folder / "nan.json"
    out["nan-literal"].write_text(valid.read_text().replace('"version": 1', '"version": NaN'))
    out["nested-deeply"] = folder / "deep.json"
    out["nested-deeply"].write_text("[" * 100_000 + "]" * 100_000)
    out["not-utf8"] = folder / "latin1.json"
    out["not-utf8"].write_bytes(json.dumps({"schema": "optimizer.preset", "name": "caf\xe9"}).encode("latin-1"))
    return out


@pytest.mark.slow
def test_presets_show_and_export_on_every_entry(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No corpus file is a preset (FIFOs and devices included, which are never opened for reading), and
    neither is a preset file of the wrong shape: exit 3 naming the file."""
    entries = list(corpus) + [
        HostileFile(name, path, "invalid") for name, path in _broken_presets(tmp_path, tiny_study.presets).items()
    ]
    failures = []
    for entry in entries:
        for args in (["presets", "show", str(entry.path)], ["presets", "export", str(entry.path), "--to", "cwebp"]):
            code = main(args)
            failures += cli_problems(entry, code, capsys.readouterr().err, {3})
    assert not failures, "\n".join(failures)
    assert main(["presets", "export", str(tiny_study.presets), "--to", "pillow"]) == 0  # the control


# --------------------------------------------------------------------------------------------------
# gate


def test_gate_over_the_whole_corpus(
    corpus: list[HostileFile], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    orig.mkdir()
    proc.mkdir()
    regular = _regular(corpus)
    for entry in regular:
        for folder in (orig, proc):
            _aged(Path(shutil.copyfile(entry.path, folder / f"{entry.name}{entry.path.suffix}")))
    os.mkfifo(proc / "fifo.png")  # never opened
    os.mkfifo(orig / "fifo.png")
    budget = tmp_path / "budget.toml"
    budget.write_text('[[budget]]\nmetric = "psnr"\nstat = "min"\nmin = 0.0\n')
    report = tmp_path / "gate.json"
    code = main(["gate", str(orig), str(proc), "--budget", str(budget), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    data = json.loads(report.read_text())
    failed = {Path(i["path"]).stem for i in data["issues"] if i["kind"] == "failed"}
    failures = []
    for entry in regular:
        if entry.outcome in ("invalid", "resource") and entry.name not in failed:
            failures.append(f"{entry.name}: not listed as failed")
        if entry.outcome == "valid" and entry.name in failed:
            failures.append(f"{entry.name}: listed as failed")
    assert not failures, "\n".join(failures)


def test_gate_refuses_a_hostile_budget_file(
    corpus: list[HostileFile], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget file is configuration: anything that is not one is a usage error (2) naming it, and a FIFO
    or a device is never read."""
    images = tmp_path / "images"
    images.mkdir()
    textured_image(images / "a.png", 1)
    failures = []
    for entry in corpus:
        code = main(["gate", str(images), str(images), "--budget", str(entry.path)])
        failures += cli_problems(entry, code, capsys.readouterr().err, {2})
    assert not failures, "\n".join(failures)


def test_tune_refuses_a_hostile_space_file(
    corpus: list[HostileFile], tiny_study: TinyStudy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A search space file is configuration: anything that is not one is a usage error (2) naming it; a
    FIFO or a device is never read, and no nesting depth crashes the parser."""
    entries = list(corpus)
    binary = next(e.path for e in corpus if e.name == "png")
    for suffix in (".toml", ".yaml", ".json"):
        deep = tmp_path / f"deep{suffix}"
        deep.write_text({".toml": "a = " + "[" * 100_000, ".yaml": "[" * 100_000, ".json": "[" * 100_000}[suffix])
        entries.append(HostileFile(f"deep{suffix}", deep, "invalid"))
        shutil.copyfile(binary, tmp_path / f"binary{suffix}")
        entries.append(HostileFile(f"binary{suffix}", tmp_path / f"binary{suffix}", "invalid"))
    failures = []
    for entry in entries:
        code = main(["tune", str(tiny_study.images), "--space", str(entry.path), "--trials", "1"])
        failures += cli_problems(entry, code, capsys.readouterr().err, {2})
    assert not failures, "\n".join(failures)
