"""The command line: version, codecs, encode, evaluate, weights; one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

from optimizer.cli import EXIT_CHECK_FAILED, EXIT_DEPENDENCY, EXIT_INPUT, EXIT_OK, EXIT_USAGE, main


@pytest.fixture(scope="module")
def image(kodak_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "photo.png"
    PILImage.open(kodak_paths[2]).convert("RGB").crop((0, 0, 256, 192)).save(path)
    return path


def test_version_and_module_entry_point() -> None:
    from optimizer import __version__

    for command in (
        [sys.executable, "-m", "optimizer", "--version"],
        [str(Path(sys.executable).parent / "optimizer"), "--version"],
    ):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == f"optimizer {__version__}"


def test_help_does_not_import_torch() -> None:
    code = "import sys; from optimizer.cli import main; main(['--help']); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().endswith("False"), proc.stdout


#: Libraries the default profile on one pair must not import (heavy; other features need them).
NOT_FOR_ONE_PAIR = ("torchvision", "lpips", "scipy", "pandas", "matplotlib", "optuna", "skimage", "sqlalchemy")


def test_evaluate_one_pair_imports_only_what_its_metrics_need(image: Path, tmp_path: Path) -> None:
    dist = tmp_path / "photo.jpg"
    PILImage.open(image).save(dist, quality=60)
    code = (
        "import sys\nfrom optimizer.cli import main\n"
        f"code = main(['evaluate', {str(image)!r}, {str(dist)!r}])\n"
        f"print('IMPORTED:' + ','.join(m for m in {NOT_FOR_ONE_PAIR!r} if m in sys.modules), code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    marked = [line for line in proc.stdout.splitlines() if line.startswith("IMPORTED:")]
    assert marked == ["IMPORTED: 0"], proc.stdout + proc.stderr


def test_codecs_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["codecs", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in data}
    assert {"jpeg", "webp", "avif", "png"} <= names
    jpeg = next(c for c in data if c["name"] == "jpeg")
    assert {p["name"] for p in jpeg["params"]} >= {"quality", "subsampling", "progressive", "optimize"}
    assert jpeg["library_versions"]["pillow"]
    assert main(["codecs"]) == EXIT_OK


def test_encode_prints_bytes_and_bpp(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "photo.avif"
    code = main(
        ["encode", str(image), "--format", "avif", "--param", "quality=60", "--param", "speed=8", "-o", str(out)]
    )
    text = capsys.readouterr().out
    assert code == EXIT_OK and out.exists()
    assert f"{out.stat().st_size:,} bytes" in text and "bits per pixel" in text
    resized = tmp_path / "small.jpg"
    assert (
        main(["encode", str(image), "-f", "jpeg", "--width", "128", "--sharpen", "0.5", "-o", str(resized)]) == EXIT_OK
    )
    assert PILImage.open(resized).size == (128, 96)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--format", "avif", "--param", "quality=0"], EXIT_USAGE, "quality must be an integer in [1, 100], got 0"),
        (["--format", "jpeg", "--param", "subsampling=4:1:1"], EXIT_USAGE, "subsampling"),
        (["--format", "avif", "--param", "speed=11"], EXIT_USAGE, "speed"),
        (["--format", "bmp"], EXIT_USAGE, "unknown codec 'bmp'"),
        (["--format", "jpeg", "--param", "quality"], EXIT_USAGE, "NAME=VALUE"),
    ],
)
def test_encode_errors_are_one_line(
    image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args, code, message
) -> None:
    assert main(["encode", str(image), "-o", str(tmp_path / "x"), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1  # one message, one line
    assert not (tmp_path / "x").exists()


def test_bad_input_exit_code_and_debug(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["encode", str(bad), "-f", "jpeg", "-o", str(tmp_path / "o.jpg")]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "bad.png" in err and "not a recognised image" in err and "Traceback" not in err
    assert main(["--debug", "encode", str(bad), "-f", "jpeg", "-o", str(tmp_path / "o.jpg")]) == EXIT_INPUT
    assert "Traceback" in capsys.readouterr().err


def test_evaluate_two_files(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dist = tmp_path / "photo.jpg"
    PILImage.open(image).save(dist, quality=50)
    assert main(["evaluate", str(image), str(dist), "--profile", "fast"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "composite" in out and "level:" in out
    report = tmp_path / "report.json"
    maps = tmp_path / "maps"
    assert main(["evaluate", str(image), str(dist), "--json", "--report", str(report), "--maps", str(maps)]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["pairs"][0]["scores"].keys() >= {"ssimulacra2", "ms_ssim", "ssim", "psnr"}
    assert json.loads(report.read_text())["summary"]["count"] == 1
    assert (maps / "photo.ssim.png").exists() and (maps / "photo.ssimulacra2.png").exists()


def test_evaluate_folders_and_mismatch(image: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, dist = tmp_path / "ref", tmp_path / "dist"
    ref.mkdir()
    dist.mkdir()
    PILImage.open(image).save(ref / "one.png")
    PILImage.open(image).save(dist / "one.webp", quality=60)
    PILImage.open(image).resize((128, 96)).save(dist / "two.jpg")
    PILImage.open(image).save(ref / "two.png")
    csv = tmp_path / "r.csv"
    # a pair that cannot be scored: the others are scored and written, then exit 3 (the batch rule)
    assert main(["evaluate", str(ref), str(dist), "--metrics", "ssim,psnr", "--csv", str(csv)]) == EXIT_INPUT
    out, err = capsys.readouterr()
    assert "1 pairs" in out and "expected equal sizes" in out and "two.jpg" in err.splitlines()[-1]
    assert csv.read_text().count("\n") == 2
    assert main(["evaluate", str(ref), str(dist), "--metrics", "ssim", "--resize-to-reference", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["summary"]["count"] == 2
    assert main(["evaluate", str(ref), str(image)]) == EXIT_USAGE
    assert main(["evaluate", str(image), str(tmp_path / "missing.png")]) == EXIT_INPUT


def test_weights_status_and_missing_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["weights"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "alexnet-owt-7be5be79.pth" in out and "vgg16-397923af.pth" in out
    assert main(["evaluate", str(image), str(image), "--metrics", "lpips"]) == EXIT_DEPENDENCY
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and "optimizer weights import" in err
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")
    assert main(["weights", "import", str(junk)]) == EXIT_USAGE


def test_exit_codes_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    import optimizer.cli as cli

    for code in (EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INPUT, EXIT_DEPENDENCY, 5, 130):
        assert f"| {code} |" in readme and f"{code}  " in cli.__doc__ or f"{code} " in cli.__doc__


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--bogus", "a", "b"], "No such option: --bogus"),
        (["evaluate"], "Missing argument"),
        (["no-such-command"], "No such command"),
        (["tune", "--demo", "--trials", "0"], "--trials"),
        (["serve", "--port", "70000"], "--port"),
        (["encode", "x.png", "-f", "jpeg", "--width", "abc", "-o", "y.jpg"], "--width"),
    ],
)
def test_usage_errors_exit_2_whatever_click_typer_bundles(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "re-run with --debug" not in err


def test_usage_error_exit_code_from_the_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "optimizer"
    proc = subprocess.run([str(script), "evaluate", "--bogus", "a", "b"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_USAGE and "No such option" in proc.stderr
