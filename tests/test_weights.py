"""The pretrained-weights policy: catalogue, cache location, status, import, download, clear errors.

No test touches the network: downloads are disabled, or ``urlopen`` is replaced.
"""

from __future__ import annotations

import hashlib
import io
import re
import urllib.error
from pathlib import Path

import pytest
import torch

from optimizer.errors import InvalidParameterError, UnknownNameError, WeightsNotFoundError
from optimizer.metrics import metric_names, weights
from optimizer.metrics.weights import (
    CATALOGUE,
    WeightsFile,
    cache_dir,
    download_allowed,
    download_weights,
    import_weights,
    load_state_dict,
    require_weights,
    weights_status,
)


@pytest.fixture(autouse=True)
def empty_cache(no_downloads: Path) -> Path:
    """Every test here sees an empty torch cache and no downloads (conftest's ``no_downloads``)."""
    return no_downloads


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[WeightsFile, Path, dict]:
    """A small real state dict registered as a catalogue entry whose hash prefix matches it."""
    state = {"features.0.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    src = tmp_path / "src" / "tiny-net.pth"
    src.parent.mkdir()
    torch.save(state, src)
    prefix = hashlib.sha256(src.read_bytes()).hexdigest()[:8]
    entry = WeightsFile(
        name="tiny",
        file=f"tiny-{prefix}.pth",
        url=f"https://example.invalid/tiny-{prefix}.pth",
        sha256_prefix=prefix,
        needed_by=("lpips",),
        description="a test network",
        approx_mb=0.0,
    )
    monkeypatch.setitem(CATALOGUE, "tiny", entry)
    return entry, src, state


def test_catalogue_names_embed_their_hash_and_urls_end_with_the_file() -> None:
    assert {"alexnet", "vgg16", "squeezenet1_1", "fid_inception"} <= set(CATALOGUE)
    known_users = set(metric_names()) | {"fid"}
    for w in CATALOGUE.values():
        assert re.fullmatch(r"[0-9a-f]{8}", w.sha256_prefix)
        assert w.file.endswith(f"-{w.sha256_prefix}.pth")
        assert w.url.endswith("/" + w.file)
        assert set(w.needed_by) <= known_users
    assert CATALOGUE["alexnet"].file == "alexnet-owt-7be5be79.pth"
    assert CATALOGUE["vgg16"].file == "vgg16-397923af.pth"
    assert CATALOGUE["fid_inception"].file == "pt_inception-2015-12-05-6726825d.pth"


def test_catalogue_matches_torchvision_urls() -> None:
    from torchvision import models

    assert CATALOGUE["alexnet"].url == models.AlexNet_Weights.IMAGENET1K_V1.url
    assert CATALOGUE["vgg16"].url == models.VGG16_Weights.IMAGENET1K_V1.url
    assert CATALOGUE["squeezenet1_1"].url == models.SqueezeNet1_1_Weights.IMAGENET1K_V1.url


def test_cache_dir_is_torch_hub_checkpoints_under_torch_home(empty_cache: Path) -> None:
    assert cache_dir() == empty_cache
    assert cache_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_download_env_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, allowed in [("0", False), ("false", False), ("OFF", False), ("no", False), ("1", True), ("yes", True)]:
        monkeypatch.setenv(weights.DOWNLOAD_ENV, value)
        assert download_allowed() is allowed
    monkeypatch.delenv(weights.DOWNLOAD_ENV)
    assert download_allowed() is True


def test_status_lists_every_file_missing_in_an_empty_cache(empty_cache: Path) -> None:
    status = weights_status()
    assert [s.name for s in status] == list(CATALOGUE)
    for s in status:
        assert not s.present and s.size is None and s.path == empty_cache / s.file
        assert "missing" in str(s)
        d = s.to_dict()
        assert d["path"] == str(s.path) and isinstance(d["needed_by"], list)


def test_missing_weights_error_names_file_place_url_and_remedy(empty_cache: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        require_weights("alexnet")
    msg = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in msg
    assert str(empty_cache / "alexnet-owt-7be5be79.pth") in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert "optimizer weights import alexnet-owt-7be5be79.pth" in msg
    assert "OPTIMIZER_ALLOW_DOWNLOAD=0" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.weights_name == "alexnet"


def test_unknown_weights_name() -> None:
    with pytest.raises(UnknownNameError, match="alexnet"):
        require_weights("resnet9000")


def test_failed_download_is_reported_and_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def no_network(url: str, timeout: float) -> None:
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv(weights.DOWNLOAD_ENV, "1")
    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    with pytest.raises(WeightsNotFoundError, match="downloading it failed.*Name or service not known"):
        require_weights("squeezenet1_1")
    with pytest.raises(WeightsNotFoundError, match="earlier download in this process failed"):
        require_weights("squeezenet1_1")
    assert len(calls) == 1
    assert calls[0][0] == CATALOGUE["squeezenet1_1"].url and 0 < calls[0][1] <= 60
    assert not any(cache_dir().glob("*.partial")) if cache_dir().exists() else True


def test_download_verifies_hash_before_moving_into_place(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    entry, src, state = tiny
    payload = {"body": src.read_bytes()}
    monkeypatch.setenv(weights.DOWNLOAD_ENV, "1")
    monkeypatch.setattr(weights.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload["body"]))

    path = require_weights("tiny")
    assert path == cache_dir() / entry.file and path.read_bytes() == payload["body"]
    assert torch.equal(load_state_dict("tiny")["features.0.weight"], state["features.0.weight"])

    path.unlink()
    payload["body"] = b"not the file" * 10
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        download_weights("tiny")
    assert not path.exists() and not list(cache_dir().glob("*.partial"))


def test_import_by_name_then_status_and_load(tiny, empty_cache: Path) -> None:
    entry, src, state = tiny
    dest = import_weights(src, name="tiny")
    assert dest == empty_cache / entry.file and dest.read_bytes() == src.read_bytes()
    assert require_weights("tiny") == dest
    status = {s.name: s for s in weights_status(verify=True)}["tiny"]
    assert status.present and status.size == src.stat().st_size and status.verified is True
    assert "present" in str(status)
    assert torch.equal(load_state_dict("tiny")["features.0.weight"], state["features.0.weight"])
    assert import_weights(dest) == dest  # importing the cached file itself is a no-op


def test_import_identifies_a_renamed_file_by_hash(tiny, tmp_path: Path) -> None:
    entry, src, _ = tiny
    renamed = tmp_path / "download (1).bin"
    renamed.write_bytes(src.read_bytes())
    assert import_weights(renamed).name == entry.file


def test_import_identifies_by_file_name_and_rejects_a_corrupt_copy(tiny, tmp_path: Path) -> None:
    entry, src, _ = tiny
    bad = tmp_path / entry.file
    bad.write_bytes(src.read_bytes()[:-10])
    with pytest.raises(InvalidParameterError, match=f"must start with {entry.sha256_prefix}"):
        import_weights(bad)
    assert not (cache_dir() / entry.file).exists()


def test_import_rejects_unknown_and_missing_files(tmp_path: Path) -> None:
    stranger = tmp_path / "mystery.pth"
    stranger.write_bytes(b"\x00" * 100)
    with pytest.raises(InvalidParameterError, match="unknown weights file.*alexnet-owt-7be5be79.pth"):
        import_weights(stranger)
    with pytest.raises(InvalidParameterError, match="existing file"):
        import_weights(tmp_path / "nope.pth")
    with pytest.raises(UnknownNameError):
        import_weights(stranger, name="nope")


def test_unreadable_cached_file_is_a_clear_error(tiny, empty_cache: Path) -> None:
    entry, _, _ = tiny
    empty_cache.mkdir(parents=True)
    (empty_cache / entry.file).write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(WeightsNotFoundError, match="cannot be read"):
        load_state_dict("tiny")
    assert {s.name: s for s in weights_status(verify=True)}["tiny"].verified is False
