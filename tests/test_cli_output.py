"""Command output is independent of the terminal width, the temporary path and the machine.

Errors are one whole line however long the paths and whatever ``COLUMNS`` says; tables printed to a pipe
keep their natural width; progress off a terminal is plain log lines on stderr.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

from optimizer.cli import EXIT_INPUT, EXIT_OK, main
from optimizer.cli._output import ProgressReporter, StreamConsole
from optimizer.errors import InvalidImageError
from optimizer.imageio import load_image

WIDTHS = [None, "40", "200"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def long_dir(tmp_path: Path) -> Path:
    """A folder whose path alone is longer than any terminal default."""
    folder = tmp_path / ("a-fairly-long-directory-name-" * 3) / ("another-long-directory-name-here-" * 3)
    folder.mkdir(parents=True)
    assert len(str(folder)) > 160
    return folder


@pytest.fixture
def bad_image(long_dir: Path) -> tuple[Path, str]:
    """A file that is not an image, and the whole error line the CLI must print for it."""
    bad = long_dir / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InvalidImageError) as caught:
        load_image(bad)
    return bad, f"error: {caught.value}"


def _env(columns: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TERM")}
    if columns is not None:
        env["COLUMNS"] = columns
    return env


def _cli(args: list[str], columns: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimizer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(columns),
        cwd=cwd,
    )


@pytest.mark.parametrize("columns", WIDTHS)
def test_error_is_one_whole_line_in_a_pipe(bad_image: tuple[Path, str], tmp_path: Path, columns: str | None) -> None:
    bad, expected = bad_image
    proc = _cli(["encode", str(bad), "--format", "webp", "-o", str(tmp_path / "x.webp")], columns, tmp_path)
    assert proc.returncode == EXIT_INPUT
    assert proc.stderr.splitlines() == [expected]
    assert "\x1b[" not in proc.stderr


@pytest.mark.parametrize("columns", WIDTHS)
def test_error_is_one_whole_line_in_process(
    bad_image: tuple[Path, str],
    tmp_path: Path,
    columns: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    bad, expected = bad_image
    assert main(["encode", str(bad), "-f", "jpeg", "-o", str(tmp_path / "o.jpg")]) == EXIT_INPUT
    assert capsys.readouterr().err.splitlines() == [expected]
    # a usage error raised by a command (an unknown codec) is one line too
    assert main(["encode", str(bad), "-f", "no-such-codec-" + "x" * 100, "-o", str(tmp_path / "o")]) != EXIT_OK
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown codec 'no-such-codec-xxx")


def test_error_is_one_logical_line_on_a_narrow_terminal(bad_image: tuple[Path, str], tmp_path: Path) -> None:
    """On a 40-column terminal the message is written without inserted line breaks."""
    bad, expected = bad_image
    master, slave = pty.openpty()
    env = {**_env("40"), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer", "encode", str(bad), "-f", "webp", "-o", str(tmp_path / "x.webp")],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == EXIT_INPUT
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    assert lines == [expected]


@pytest.mark.parametrize("columns", ["40", "200"])
def test_tables_keep_their_natural_width_in_a_pipe(tmp_path: Path, columns: str) -> None:
    wide = _cli(["codecs"], None, tmp_path)
    proc = _cli(["codecs"], columns, tmp_path)
    assert proc.returncode == wide.returncode == EXIT_OK
    assert proc.stdout == wide.stdout  # the width of the caller's terminal setting does not matter in a pipe
    assert max(len(line) for line in proc.stdout.splitlines()) > 80  # and nothing was squeezed to fit 80
    assert "…" not in proc.stdout


def test_progress_is_plain_log_lines_off_a_terminal(kodak_paths: list[Path], long_dir: Path) -> None:
    ref, dist = long_dir / "ref", long_dir / "dist"
    ref.mkdir()
    dist.mkdir()
    for path in kodak_paths[:2]:
        small = PILImage.open(path).convert("RGB").crop((0, 0, 96, 64))
        small.save(ref / path.name)
        small.save(dist / (path.stem + ".jpg"), quality=70)
    proc = _cli(["evaluate", str(ref), str(dist), "--profile", "fast"], "40", long_dir)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "evaluating: 2/2" in proc.stderr.splitlines()
    assert "\r" not in proc.stderr and "\x1b[" not in proc.stderr


def test_progress_reporter_throttles_log_lines() -> None:
    stream = io.StringIO()
    now = [0.0]
    reporter = ProgressReporter("work", total=10, interval=5.0, clock=lambda: now[0], stream=StreamConsole(file=stream))
    assert not reporter.live
    with reporter:
        for done in range(1, 11):
            now[0] += 1.0
            reporter.update(done, detail=f"item{done}")
        reporter.update(10, detail="item10")  # the same state again writes nothing
    assert stream.getvalue().splitlines() == ["work: 1/10 item1", "work: 6/10 item6", "work: 10/10 item10"]


def test_progress_reporter_writes_the_final_state_it_held_back() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter("scan", interval=60.0, clock=lambda: 0.0, stream=StreamConsole(file=stream))
    with reporter:
        for done in range(1, 4):
            reporter.update(done)
    assert stream.getvalue().splitlines() == ["scan: 1", "scan: 3"]
