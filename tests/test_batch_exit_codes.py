"""One rule for the exit code of every batch command (evaluate, gate, compress, apply, monitor).

Every input that can be processed is, and the reports are written; a run in which any input could not be
read or processed then exits 3, with one error line naming the first such file (and how many there were).
Exit 3 comes before 1: a quality check over a batch with unreadable inputs is no verdict. Unpaired files
are listed but are not failures (``gate`` fails on them, exit 1, unless ``--allow-missing``, which also
lets unreadable files pass). An interrupted run exits 130.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image as PILImage

from optimizer.cli import EXIT_CHECK_FAILED, EXIT_INPUT, EXIT_OK, main

if TYPE_CHECKING:
    from optimizer.tuning.study import TuningResult


def _photo(seed: int, size: tuple[int, int] = (96, 64)) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([x * 2.5, y * 3.5, (x + y) * 1.5], axis=2) + rng.normal(0, 12, (size[1], size[0], 3))
    return PILImage.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _aged(path: Path) -> Path:
    past = time.time() - 120
    os.utime(path, (past, past))
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """orig/ with a.png, b.png, c.png; proc/ with a.jpg, b.jpg and a truncated c.jpg (all settled)."""
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    orig.mkdir()
    proc.mkdir()
    for seed, name in enumerate("abc"):
        image = _photo(seed)
        image.save(orig / f"{name}.png")
        image.save(proc / f"{name}.jpg", quality=80)
        _aged(orig / f"{name}.png")
        _aged(proc / f"{name}.jpg")
    data = (proc / "c.jpg").read_bytes()
    (proc / "c.jpg").write_bytes(data[: len(data) // 2])
    _aged(proc / "c.jpg")
    return orig, proc


def _error_line(err: str, name: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert name in lines[0], lines[0]
    return lines[0]


def test_evaluate(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orig, proc = folders
    report = tmp_path / "report.json"
    assert main(["evaluate", str(orig), str(proc), "--metrics", "psnr", "--report", str(report)]) == EXIT_INPUT
    line = _error_line(capsys.readouterr().err, "c.jpg")
    assert "1 of 3 pairs could not be processed" in line
    data = json.loads(report.read_text())  # written before the exit
    assert [p["key"] for p in data["pairs"]] == ["a", "b"] and data["summary"]["failed"] == 1
    (proc / "c.jpg").unlink()  # c is now only unpaired: listed, not a failure
    assert main(["evaluate", str(orig), str(proc), "--metrics", "psnr"]) == EXIT_OK


def test_gate(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orig, proc = folders
    holds, breaks = tmp_path / "holds.toml", tmp_path / "breaks.toml"
    holds.write_text('[[budget]]\nmetric = "psnr"\nstat = "min"\nmin = 0.0\n')
    breaks.write_text('[[budget]]\nmetric = "psnr"\nstat = "min"\nmin = 99.0\n')
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(orig), str(proc), "--budget", str(holds), "--junit", str(junit)]) == EXIT_INPUT
    _error_line(capsys.readouterr().err, "c.jpg")
    assert junit.is_file()
    assert main(["gate", str(orig), str(proc), "--budget", str(breaks)]) == EXIT_INPUT  # 3 before 1
    capsys.readouterr()
    assert main(["gate", str(orig), str(proc), "--budget", str(holds), "--allow-missing"]) == EXIT_OK
    assert main(["gate", str(orig), str(proc), "--budget", str(breaks), "--allow-missing"]) == EXIT_CHECK_FAILED
    (proc / "c.jpg").unlink()
    assert main(["gate", str(orig), str(proc), "--budget", str(holds)]) == EXIT_CHECK_FAILED  # unpaired


def test_compress(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, proc = folders
    out = tmp_path / "out"
    args = ["compress", str(proc), "--formats", "jpeg", "--profile", "fast", "-d", str(out)]
    assert main([*args, "--target", "psnr:30"]) == EXIT_INPUT
    _error_line(capsys.readouterr().err, "c.jpg")
    assert sorted(p.stem for p in out.iterdir() if not p.name.startswith(".")) == ["a", "b"]
    assert main([*args, "--target", "psnr:99", "--overwrite"]) == EXIT_INPUT  # unmet targets too: 3 before 1
    (proc / "c.jpg").unlink()
    assert main([*args, "--target", "psnr:99", "--overwrite"]) == EXIT_CHECK_FAILED


def test_apply(
    folders: tuple[Path, Path], small_study: TuningResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import replace

    orig, proc = folders
    (orig / "c.png").write_bytes((proc / "c.jpg").read_bytes())  # an unreadable input among the originals
    assert small_study.presets is not None
    preset = small_study.presets.save(tmp_path / "presets.json")
    impossible = replace(
        small_study.presets, tiers=[replace(t, target="ssim:0.9999") for t in small_study.presets.tiers]
    )
    impossible_path = impossible.save(tmp_path / "impossible.json")
    assert main(["apply", str(preset), str(orig), str(tmp_path / "out")]) == EXIT_INPUT
    _error_line(capsys.readouterr().err, "c.png")
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == ["a", "b"]
    verify = ["apply", str(impossible_path), str(orig), str(tmp_path / "verify"), "--verify"]
    assert main(verify) == EXIT_INPUT  # misses too: 3 before 1
    capsys.readouterr()
    (orig / "c.png").unlink()
    assert main([*verify, "--overwrite"]) == EXIT_CHECK_FAILED


def test_monitor(folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    orig, proc = folders
    args = ["monitor", "--watch", str(orig), str(proc), "--metrics", "psnr", "--once", "--settle", "0"]
    state = ["--state", str(tmp_path / "state.jsonl")]
    assert main([*args, *state]) == EXIT_INPUT
    _error_line(capsys.readouterr().err, "c")
    assert main([*args, *state]) == EXIT_OK  # nothing new this run: the pair is recorded as done
    assert main([*args, "--state", str(tmp_path / "other.jsonl"), "--fail-on", "warning"]) == EXIT_INPUT
    (proc / "c.jpg").unlink()
    assert main([*args, "--state", str(tmp_path / "third.jsonl")]) == EXIT_OK
