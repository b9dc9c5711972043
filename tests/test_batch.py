"""Folder evaluation: pairing, issues, summaries, reports, parallel workers and heat maps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from optimizer.batch import evaluate_folders, pair_folders
from optimizer.evaluator import Evaluator


@pytest.fixture(scope="module")
def folders(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ref/ holds 4 PNG crops (one in a subfolder); dist/ holds JPEG/WebP versions, an unpaired file,
    an unreadable file, an ambiguous stem and a non-image file."""
    root = tmp_path_factory.mktemp("batch")
    ref, dist = root / "ref", root / "dist"
    (ref / "sub").mkdir(parents=True)
    (dist / "sub").mkdir(parents=True)
    names = ["a", "b", "c", "sub/d"]
    for name, path, quality in zip(names, kodak_paths, (90, 70, 40, 20)):
        crop = PILImage.open(path).convert("RGB").crop((100, 100, 292, 244))
        crop.save(ref / f"{name}.png")
        crop.save(dist / f"{name}.jpg" if name != "b" else dist / f"{name}.webp", quality=quality)
    PILImage.open(kodak_paths[5]).convert("RGB").crop((0, 0, 192, 144)).save(ref / "lonely.png")
    (ref / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (dist / "broken.jpg").write_bytes((dist / "a.jpg").read_bytes()[:200])
    (dist / "extra.jpg").write_bytes((dist / "a.jpg").read_bytes())
    (ref / "twin.png").write_bytes((ref / "a.png").read_bytes())
    (dist / "twin.jpg").write_bytes((dist / "a.jpg").read_bytes())
    (dist / "twin.webp").write_bytes((dist / "b.webp").read_bytes())
    (dist / "notes.txt").write_text("not an image")
    return ref, dist


def test_pairing_by_relative_path_and_stem(folders: tuple[Path, Path]) -> None:
    ref, dist = folders
    pairs, issues = pair_folders(ref, dist)
    assert [key for key, _, _ in pairs] == ["a", "b", "broken", "c", "sub/d"]
    reasons = {Path(i.path).name: i.reason for i in issues}
    assert "no processed file" in reasons["lonely.png"]
    assert "no reference file" in reasons["extra.jpg"]
    assert "ambiguous" in reasons["twin.jpg"] and "ambiguous" in reasons["twin.webp"]
    assert "notes.txt" not in reasons


def test_report_lists_failures_and_summarises(folders: tuple[Path, Path], tmp_path: Path) -> None:
    ref, dist = folders
    calls = []
    report = evaluate_folders(ref, dist, profile="fast", progress=lambda done, total: calls.append((done, total)))
    assert [p.key for p in report.pairs] == ["a", "b", "c", "sub/d"]
    assert [Path(i.path).name for i in report.failed] == ["broken.jpg"]
    assert calls[-1] == (5, 5)
    summary = report.summary()
    assert summary["count"] == 4 and summary["failed"] == 1 and summary["unpaired"] == 5
    ssim = [p.result.scores["ssim"] for p in report.pairs]
    stats = summary["metrics"]["ssim"]
    assert stats["mean"] == pytest.approx(np.mean(ssim)) and stats["p10"] == pytest.approx(np.percentile(ssim, 10))
    assert stats["worst"] == min(ssim) and stats["worst_pair"] == "sub/d"  # the q20 JPEG
    assert sum(summary["levels"].values()) == 4
    total_ref = sum((ref / f"{k}.png").stat().st_size for k in ("a", "b", "c", "sub/d"))
    assert summary["bytes"]["reference_total"] == total_ref
    pair = report.pairs[0]
    assert pair.bits_per_pixel == pytest.approx(pair.distorted_bytes * 8 / (192 * 144))

    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["count"] == 4 and len(data["pairs"]) == 4 and len(data["issues"]) == 6
    report.to_csv(tmp_path / "r.csv")
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame["key"]) == ["a", "b", "c", "sub/d"] and {"ssim", "psnr", "composite", "level"} <= set(frame)
    assert report.to_dataframe().shape[0] == 4


@pytest.mark.slow
def test_parallel_jobs_match_sequential(folders: tuple[Path, Path]) -> None:
    ref, dist = folders
    one = evaluate_folders(ref, dist, evaluator=Evaluator("fast"))
    two = evaluate_folders(ref, dist, evaluator=Evaluator("fast"), jobs=2)
    assert [p.key for p in two.pairs] == [p.key for p in one.pairs]
    for a, b in zip(one.pairs, two.pairs):
        assert a.result.scores == pytest.approx(b.result.scores)
    assert [i.path for i in two.failed] == [i.path for i in one.failed]


def test_lossless_pairs_summarise_to_infinite_psnr(folders: tuple[Path, Path], tmp_path: Path) -> None:
    ref = folders[0]
    report = evaluate_folders(ref / "sub", ref / "sub", metrics=["psnr"])
    psnr = report.summary()["metrics"]["psnr"]
    assert psnr["p10"] == psnr["median"] == psnr["p90"] == psnr["worst"] == math.inf
    assert json.loads(report.to_json())["summary"]["metrics"]["psnr"]["p10"] == "inf"


def test_heat_maps_written(folders: tuple[Path, Path], tmp_path: Path) -> None:
    ref, dist = folders
    maps = tmp_path / "maps"
    evaluate_folders(ref, dist, metrics=["ssim"], maps_dir=maps)
    written = sorted(p.relative_to(maps).as_posix() for p in maps.rglob("*.png"))
    assert written == ["a.ssim.png", "b.ssim.png", "c.ssim.png", "sub/d.ssim.png"]
    heat = PILImage.open(maps / "sub" / "d.ssim.png")
    assert heat.size == (200, 144 + 30) and heat.mode == "RGB"  # the map (192x144) and its colour bar


def test_not_a_folder(tmp_path: Path) -> None:
    from optimizer.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="not a folder"):
        evaluate_folders(tmp_path / "missing", tmp_path)


# --------------------------------------------------------------------------------------------------
# Interrupted batches keep what finished


def _many_pairs(root: Path, count: int, size: tuple[int, int] = (96, 64)) -> tuple[Path, Path]:
    ref, dist = root / "ref", root / "dist"
    ref.mkdir()
    dist.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(ref / f"p{i:03d}.png")
        PILImage.fromarray(pixels).save(dist / f"p{i:03d}.jpg", quality=60)
    return ref, dist


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stopped_batch_reports_what_finished(tmp_path: Path, workers: int) -> None:
    import threading

    ref, dist = _many_pairs(tmp_path, 12)
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 2:
            stop.set()

    report = evaluate_folders(ref, dist, metrics=["psnr"], workers=workers, progress=progress, stop=stop)
    scored = [p.key for p in report.pairs]
    left = [i for i in report.issues if i.kind == "interrupted"]
    assert report.interrupted and 2 <= len(scored) < 12
    assert len(scored) + len(left) == 12 and all("interrupted" in i.reason for i in left)
    data = json.loads(report.to_json())
    assert data["interrupted"] is True and data["summary"]["interrupted"] == len(left)
    assert not evaluate_folders(ref, dist, metrics=["psnr"], stop=threading.Event()).interrupted


def test_ctrl_c_during_a_folder_evaluate_writes_the_report(tmp_path: Path) -> None:
    """SIGINT after the first pair: the pairs scored so far are written (JSON marked interrupted, CSV rows),
    and the exit code is 130."""
    import os
    import signal
    import subprocess
    import sys

    ref, dist = _many_pairs(tmp_path, 150, size=(384, 256))
    report, csv = tmp_path / "report.json", tmp_path / "pairs.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = ["evaluate", str(ref), str(dist), "--metrics", "ssim,psnr", "--report", str(report), "--csv", str(csv)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer", *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("evaluating: 1/"):
            proc.send_signal(signal.SIGINT)
            break
    out, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    data = json.loads(report.read_text())
    assert data["interrupted"] is True and 1 <= len(data["pairs"]) < 150
    assert len(data["pairs"]) + data["summary"]["interrupted"] == 150
    assert len(pd.read_csv(csv)) == len(data["pairs"])
