"""The hostile-input contract: every bad or odd file (tests/hostile_corpus.py) gives a clean outcome.

For ``load_image`` and for ``optimizer evaluate``, ``encode``, ``compress`` and ``monitor`` (in process through
``optimizer.cli.main``, and a few through a real process): a valid file works (exit 0); anything else is
one line naming the file and the reason, with an exit code in {1, 2, 3, 4} (3 for bad input), never 5,
never a traceback. The corpus runs under a 2 GiB memory budget so that huge images are refused from their
headers. Also here: batches go on past a file over the budget, allocation failures while scoring are
clean errors, and resize targets are checked against the pixel limit.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import ALLOWED, TEST_MEMORY_BUDGET, HostileFile, build_corpus, cli_problems
from PIL import Image as PILImage

from optimizer.cli import main
from optimizer.errors import ImageTooLargeError, InvalidImageError, InvalidParameterError, ResourceLimitError
from optimizer.imageio import load_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[HostileFile]:
    return build_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(autouse=True)
def memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIMIZER_MAX_MEMORY", TEST_MEMORY_BUDGET)


def test_the_corpus_is_broad(corpus: list[HostileFile]) -> None:
    assert len(corpus) >= 60
    outcomes = {e.outcome for e in corpus}
    assert {"valid", "invalid", "resource", "either"} <= outcomes
    kinds = {e.path.suffix for e in corpus}
    assert {".png", ".jpg", ".webp", ".avif", ".gif", ".tif", ".bmp"} <= kinds


def test_load_image_on_every_entry(corpus: list[HostileFile]) -> None:
    failures = []
    for entry in corpus:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load_image(entry.path)
                got = "valid"
            except (ImageTooLargeError, ResourceLimitError) as exc:
                got, message = "resource", str(exc)
            except InvalidImageError as exc:
                got, message = "invalid", str(exc)
            except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
                failures.append(f"{entry.name}: {type(exc).__name__}: {exc}")
                continue
        expected = {"either": {"valid", "invalid"}, "tiny": {"valid"}}.get(entry.outcome, {entry.outcome})
        if got not in expected:
            failures.append(f"{entry.name}: {got}, expected {entry.outcome}")
        elif got != "valid" and (str(entry.path) not in message or "\n" in message):
            failures.append(f"{entry.name}: message does not name the file on one line: {message!r}")
    assert not failures, "\n".join(failures)


def test_evaluate_on_every_entry(corpus: list[HostileFile], capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    for entry in corpus:
        if entry.path.is_dir():  # a folder pair is folder mode, tested below
            continue
        code = main(["evaluate", str(entry.path), str(entry.path)])
        failures += cli_problems(entry, code, capsys.readouterr().err, ALLOWED[entry.outcome])
    assert not failures, "\n".join(failures)


def test_evaluate_with_a_folder_named_like_an_image(corpus: list[HostileFile], capsys) -> None:
    [folder] = [e.path for e in corpus if e.path.is_dir()]
    png = next(e.path for e in corpus if e.name == "png")
    assert main(["evaluate", str(folder), str(png)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "both be files or both be folders" in err


def test_encode_on_every_entry(corpus: list[HostileFile], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    for entry in corpus:
        out = tmp_path / f"{entry.name}.png"
        code = main(["encode", str(entry.path), "-f", "png", "-o", str(out)])
        failures += cli_problems(entry, code, capsys.readouterr().err, ALLOWED[entry.outcome] - {2})
        if (code == 0) != out.is_file():
            failures.append(f"{entry.name}: exit {code} but output {'missing' if code == 0 else 'written'}")
    assert not failures, "\n".join(failures)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_compress_on_every_entry(corpus: list[HostileFile], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each entry alone through ``optimizer compress``: a valid image is written (exit 0, or 1 when a tiny one
    cannot meet the target), anything else is one error line and exit 3; never 5, never a traceback."""
    failures = []
    for entry in corpus:
        out = tmp_path / entry.name
        code = main(["compress", str(entry.path), "-t", "psnr:30", "--formats", "jpeg", "-d", str(out)])
        captured = capsys.readouterr()
        allowed = {"valid": {0, 1}, "tiny": {0, 1, 2, 3}}.get(entry.outcome, ALLOWED[entry.outcome] | {1})
        if code not in allowed or code == 5:
            failures.append(f"{entry.name}: exit {code}, expected one of {sorted(allowed)}: {captured.err[-300:]!r}")
        if "Traceback" in captured.out + captured.err:
            failures.append(f"{entry.name}: a traceback")
        if code == 3 and entry.path.name not in captured.out + captured.err:
            failures.append(f"{entry.name}: the failure does not name the file")
        written = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
        if code in (0, 1) and len(written) != 1:
            failures.append(f"{entry.name}: exit {code} but {len(written)} outputs")
        if out.is_dir() and any(p.name.startswith(".") for p in out.iterdir()):
            failures.append(f"{entry.name}: temporary files left behind")
    assert not failures, "\n".join(failures)


def _age(path: Path) -> None:
    past = time.time() - 120
    os.utime(path, (past, past), follow_symlinks=False)


def test_monitor_over_the_whole_corpus(corpus: list[HostileFile], tmp_path: Path, capsys) -> None:
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    orig.mkdir()
    proc.mkdir()
    regular = [e for e in corpus if e.path.is_file() and not e.path.is_symlink()]
    for entry in regular:
        for folder in (orig, proc):
            target = folder / f"{entry.name}{entry.path.suffix}"
            shutil.copyfile(entry.path, target)
            _age(target)
    os.mkfifo(proc / "fifo.png")  # a FIFO among the processed files is skipped, never opened
    os.mkfifo(orig / "fifo.png")
    (proc / "loop.png").symlink_to(proc / "loop.png")
    alerts, state = tmp_path / "alerts.jsonl", tmp_path / "state.jsonl"
    args = ["monitor", "--watch", str(orig), str(proc), "--metrics", "ssim", "--once", "--settle", "0"]
    code = main([*args, "--alerts", str(alerts), "--state", str(state)])
    err = capsys.readouterr().err
    # every pair is processed; the unreadable ones make the run exit 3 at the end (the batch rule)
    assert code == 3 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    errors = {a["item"]: a["message"] for a in map(json.loads, alerts.read_text().splitlines()) if a["kind"] == "error"}
    failures = []
    for entry in regular:
        refused = entry.name in errors
        if entry.outcome in ("invalid", "resource") and not refused:
            failures.append(f"{entry.name}: no error alert")
        if entry.outcome == "valid" and refused:
            failures.append(f"{entry.name}: error alert {errors[entry.name]!r}")
        if refused and "\n" in errors[entry.name]:
            failures.append(f"{entry.name}: multi-line message")
    assert not failures, "\n".join(failures)
    recorded = [json.loads(line)["key"] for line in state.read_text().splitlines()]
    assert sorted(recorded) == sorted(e.name for e in regular)  # every pair recorded once, the FIFO never


@pytest.mark.parametrize(
    "name,args",
    [
        ("fifo", ["evaluate", "{path}", "{path}"]),
        ("dev-zero", ["encode", "{path}", "-f", "webp", "-o", "{out}"]),
        ("jpeg-truncated-with-eoi", ["evaluate", "{path}", "{path}"]),
        ("png-9999x9999-12kB", ["evaluate", "{path}", "{path}"]),
        ("text-named-png", ["monitor-args"]),
    ],
)
def test_through_a_real_process(corpus: list[HostileFile], tmp_path: Path, name: str, args: list[str]) -> None:
    entry = next(e for e in corpus if e.name == name)
    if args == ["monitor-args"]:
        orig, proc = tmp_path / "o", tmp_path / "p"
        orig.mkdir()
        proc.mkdir()
        for folder in (orig, proc):
            shutil.copyfile(entry.path, folder / "x.png")
            _age(folder / "x.png")
        args = ["monitor", "--watch", str(orig), str(proc), "--metrics", "psnr", "--once", "--settle", "0"]
        args += ["--fail-on", "warning"]
        expected = {3}  # the unreadable pair is a warning alert, and an input that could not be processed
        named = str(proc / "x.png")
    else:
        args = [a.format(path=entry.path, out=tmp_path / "out.webp") for a in args]
        expected = {3}
        named = str(entry.path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPTIMIZER_MAX_MEMORY": TEST_MEMORY_BUDGET}
    done = subprocess.run(
        [sys.executable, "-m", "optimizer", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode in expected, done.stderr
    assert "Traceback" not in done.stderr
    if done.returncode == 3:
        [line] = [line for line in done.stderr.strip().splitlines() if not line.startswith("x: could not be scored")]
        assert line.startswith("error: ") and named in line


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_encode_to_a_device_keeps_the_device(corpus: list[HostileFile], capsys) -> None:
    png = next(e.path for e in corpus if e.name == "png")
    assert main(["encode", str(png), "-f", "webp", "-o", "/dev/full"]) == 3
    assert "is a character device; refusing to replace it" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.slow
def test_evaluate_a_9999x9999_png_with_the_default_budget(corpus: list[HostileFile], tmp_path: Path) -> None:
    """The reported case, as a user meets it: the machine's own budget, a 12 kB file: exit 3, not 5."""
    entry = next(e for e in corpus if e.name == "png-9999x9999-12kB")
    assert entry.path.stat().st_size < 20_000
    env = {k: v for k, v in os.environ.items() if k != "OPTIMIZER_MAX_MEMORY"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "optimizer", "evaluate", str(entry.path), str(entry.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "9999x9999" in line and "needs about" in line and "OPTIMIZER_MAX_MEMORY=" in line


# --------------------------------------------------------------------------------------------------
# Memory: batches go on, allocation failures are clean


def _flat_png(path: Path, width: int, height: int) -> Path:
    PILImage.new("RGB", (width, height), (120, 130, 140)).save(path)
    return path


def test_a_batch_goes_on_past_a_pair_over_the_scoring_budget(tmp_path: Path, monkeypatch) -> None:
    from optimizer.batch import evaluate_folders

    monkeypatch.setenv("OPTIMIZER_MAX_MEMORY", "1G")  # decoding 6 MP fits, scoring it does not
    orig, proc = tmp_path / "orig", tmp_path / "proc"
    orig.mkdir()
    proc.mkdir()
    for folder in (orig, proc):
        _flat_png(folder / "big.png", 3000, 2000)
        PILImage.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
            folder / "small.png"
        )
    report = evaluate_folders(orig, proc)
    assert [p.key for p in report.pairs] == ["small"]
    [issue] = report.issues
    assert issue.path.endswith("big.png") and "scoring a 3000x2000 image" in issue.reason
    assert "over the budget of 1.0 GiB" in issue.reason


def test_compress_goes_on_past_an_image_over_the_budget(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPTIMIZER_MAX_MEMORY", "1G")
    inputs = tmp_path / "in"
    inputs.mkdir()
    _flat_png(inputs / "big.png", 3000, 2000)  # decoding it fits in 1 GiB, scoring it with SSIMULACRA 2 does not
    y, x = np.mgrid[0:48, 0:64]
    PILImage.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], axis=2).astype(np.uint8)).save(inputs / "small.png")
    out = tmp_path / "out"
    code = main(["compress", str(inputs), "--target", "ssimulacra2:70", "--formats", "jpeg", "-d", str(out)])
    captured = capsys.readouterr()
    assert code == 3 and "Traceback" not in captured.err + captured.out
    assert "big.png" in captured.out and "scoring a 3000x2000 image with ssimulacra2 needs about" in captured.out
    assert [p.stem for p in out.iterdir() if not p.name.startswith(".")] == ["small"]


class _Exploding:
    """A metric whose compute fails the way an allocator does."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def prepare(self, reference, shared):  # type: ignore[no-untyped-def]
        return None

    def compute(self, state, distorted, shared):  # type: ignore[no-untyped-def]
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 1199760012 bytes. Error code 12 (Cannot allocate memory)"
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    ],
    ids=["MemoryError", "cpu-allocator", "cuda"],
)
def test_allocation_failures_while_scoring_are_resource_errors(error: BaseException, tmp_path: Path, capsys) -> None:
    from optimizer.evaluator import Evaluator

    evaluator = Evaluator(metrics=["psnr"])
    evaluator._metrics = {"psnr": _Exploding(error)}  # type: ignore[dict-item]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(ResourceLimitError, match="ran out of memory scoring a 32x32 image"):
        evaluator.evaluate(image, image)
    path = _flat_png(tmp_path / "x.png", 32, 32)
    from optimizer.cli import evaluate_cmd

    original = evaluate_cmd.build_evaluator
    try:
        evaluate_cmd.build_evaluator = lambda *a, **k: evaluator  # type: ignore[assignment]
        assert main(["evaluate", str(path), str(path)]) == 3
    finally:
        evaluate_cmd.build_evaluator = original  # type: ignore[assignment]
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {path}: ran out of memory")


def test_other_runtime_errors_are_not_mistaken_for_memory() -> None:
    from optimizer.evaluator import Evaluator

    evaluator = Evaluator(metrics=["psnr"])
    evaluator._metrics = {"psnr": _Exploding(RuntimeError("shape mismatch"))}  # type: ignore[dict-item]
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluator.evaluate(image, image)


# --------------------------------------------------------------------------------------------------
# Resize targets


def test_resize_target_over_the_pixel_limit_is_refused_before_allocating() -> None:
    from optimizer.transforms import Transform, resize

    image = load_image(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(InvalidParameterError, match=r"resize to 100000x75000 = 7,500,000,000 pixels is over"):
        Transform(width=100_000).apply(image)
    with pytest.raises(InvalidParameterError, match="over the pixel limit"):
        resize(image, scale=2000.0)
    with pytest.raises(InvalidParameterError, match="over the pixel limit of 100,000,000"):
        Transform(width=20_000, height=20_000)  # known before any image: refused at construction
    with pytest.raises(InvalidParameterError, match="over the pixel limit"):
        Transform.from_dict({"width": 200_000_000})  # a preset with such a width cannot even be loaded
    assert Transform(width=128).apply(image).size == (128, 96)


def test_encode_with_a_huge_width_is_exit_2(corpus: list[HostileFile], tmp_path: Path, capsys) -> None:
    png = next(e.path for e in corpus if e.name == "png")
    out = tmp_path / "wide.webp"
    assert main(["encode", str(png), "-f", "webp", "-o", str(out), "--width", "100000"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "resize to 100000x75000" in line and "over the pixel limit" in line
    assert not out.exists()
