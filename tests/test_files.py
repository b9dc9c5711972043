"""Reading and writing files (optimizer._files): permissions, symlinks, refused targets, full disks, FIFOs,
deeply nested JSON. Everything happens under tmp_path (plus /dev/full, /dev/null and /dev/zero, never written)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer import _files
from optimizer._files import (
    MAX_JSON_DEPTH,
    parse_json,
    read_json,
    read_regular,
    read_toml,
    write_atomic,
)
from optimizer.errors import ConfigError, InputFileError, OptimizerError, OutputError

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    for umask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(umask)
        try:
            path = write_atomic(tmp_path / f"out-{umask:o}.bin", b"data")
        finally:
            os.umask(old)
        assert _mode(path) == expected, f"umask {umask:o}"
        assert path.read_bytes() == b"data"


def test_replacing_a_file_keeps_its_permission_bits(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "shared.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640
    path.chmod(0o755)
    write_atomic(path, b"newer")
    assert _mode(path) == 0o755


def test_parents_are_created_and_text_is_utf8(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "a" / "b" / "c.txt", "naïve ✓")
    assert path.read_bytes() == "naïve ✓".encode()


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "created-through-the-link.txt")
    write_atomic(dangling, "made")
    assert (tmp_path / "created-through-the-link.txt").read_text() == "made" and dangling.is_symlink()


def test_a_symlink_loop_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputError, match="symbolic links"):
        write_atomic(tmp_path / "a", b"x")


def test_a_folder_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "out.webp"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(OutputError, match=r"out\.webp: is a folder; refusing to replace it with a file"):
        write_atomic(folder, b"x")
    assert (folder / "keep.txt").read_text() == "keep" and _leftovers(tmp_path) == []


def test_a_fifo_is_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="is a FIFO"):
        write_atomic(fifo, b"x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("device", ["/dev/full", "/dev/null"])
def test_a_device_is_never_replaced(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    before = os.stat(device)
    with pytest.raises(OutputError, match=f"{device}: is a character device; refusing"):
        write_atomic(device, b"RIFF....WEBP")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_a_full_disk_is_an_output_error_and_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous")

    def full(fd: int, payload: bytes) -> None:
        os.write(fd, payload[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_files, "_write_all", full)
    with pytest.raises(OutputError) as caught:
        write_atomic(target, b"new content")
    assert str(caught.value) == f"{target}: cannot write: no space left on device"
    assert isinstance(caught.value, OSError) and isinstance(caught.value, OptimizerError)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == []


def test_an_interrupt_while_writing_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    def interrupted(fd: int, payload: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_files, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "out.png", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_parent_that_is_a_file_is_an_output_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="a parent of the path is not a folder"):
        write_atomic(tmp_path / "file" / "out.png", b"x")
    with pytest.raises(OutputError, match="a parent of the path is not a folder"):
        write_atomic(tmp_path / "file" / "sub" / "out.png", b"x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_an_output_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            write_atomic(folder / "out.png", b"x")
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
def test_a_real_write_failure_through_the_cli_is_exit_3_with_no_partial_file(tmp_path: Path) -> None:
    """A file size limit (EFBIG) makes the write itself fail, as a full disk would: one line, exit 3, no debris."""
    import numpy as np
    from PIL import Image as PILImage

    source = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(source)
    out = tmp_path / "out" / "big.png"
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)); "
        "from optimizer.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["encode", str(source), "-f", "png", "-o", str(out)]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip() == f"error: {out}: cannot write: file too large (a file size limit was reached)"
    assert list(out.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Reading


@pytest.mark.timeout(20)
def test_reading_refuses_fifos_and_devices_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(_files.NotRegularFileError, match="FIFO"):
        read_regular(fifo)
    with pytest.raises(ConfigError, match="config.toml: cannot read config file: is a FIFO"):
        read_toml(fifo)
    with pytest.raises(ConfigError, match="cannot read JSON file: is a FIFO"):
        read_json(fifo)
    if Path("/dev/zero").exists():
        with pytest.raises(ConfigError, match="is a character device, not a regular file"):
            read_toml("/dev/zero")
    with pytest.raises(ConfigError, match="is a folder"):
        read_toml(tmp_path)


def test_deeply_nested_json_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="deep.json: JSON nested too deeply"):
        read_json(path)
    just_over = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(InputFileError, match="nested too deeply"):
        parse_json(just_over, "x", error=InputFileError)
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(at_limit, "x") is not None
    deep_object = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_json(deep_object, "obj")


def test_deeply_nested_toml_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="deep.toml: not valid TOML"):
        read_toml(path)


@pytest.mark.parametrize(
    "text,fragment",
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"[NaN]", "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
    ],
)
def test_bad_json_is_one_clean_error(text: bytes, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_json(text, "file.json")


def test_json_round_trip() -> None:
    assert parse_json(b'{"a": [1, 2.5, "inf"]}', "x") == {"a": [1, 2.5, "inf"]}
