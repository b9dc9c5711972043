"""Pretrained network weights: which files the package can use, where they live, how they get there.

Backbones (AlexNet, VGG16, SqueezeNet for LPIPS and DISTS; the FID Inception) are large files that do not
ship with any wheel. They live where torchvision keeps them, ``torch.hub.get_dir()/checkpoints`` (so
``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), so a file torchvision or
pytorch-fid already downloaded is reused and the other way round.

Policy:

* A missing file is downloaded once per process from its usual URL, unless ``OPTIMIZER_ALLOW_DOWNLOAD`` is
  ``0`` (``false``, ``no``, ``off``). A download is verified against the SHA-256 prefix that the file name
  carries before it is moved into place.
* When the file is missing and cannot be downloaded, :class:`~optimizer.errors.WeightsNotFoundError` names
  the file, the folder it is expected in, the URL it comes from and how to supply it
  (``optimizer weights import FILE``). Nothing ever falls back to random weights.
* :func:`import_weights` takes a file brought from elsewhere, identifies it by name or hash, verifies it and
  copies it into the cache.

This module imports neither torch nor torchvision until a state dict is actually loaded, so the CLI can show
the status cheaply.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameterError, UnknownNameError, WeightsNotFoundError

__all__ = [
    "CATALOGUE",
    "DOWNLOAD_ENV",
    "WeightStatus",
    "WeightsFile",
    "cache_dir",
    "download_allowed",
    "download_weights",
    "import_weights",
    "load_state_dict",
    "require_weights",
    "weights_status",
]

log = logging.getLogger(__name__)

#: Environment variable that turns automatic downloads off (``0``) or on (anything else; the default).
DOWNLOAD_ENV = "OPTIMIZER_ALLOW_DOWNLOAD"

#: Seconds a download may wait on one network operation before it gives up.
DOWNLOAD_TIMEOUT_S = 30.0

_FALSY = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class WeightsFile:
    """One weight file the package knows: its cache name, its origin and who needs it."""

    name: str
    file: str
    url: str
    sha256_prefix: str
    needed_by: tuple[str, ...]
    description: str
    approx_mb: float

    def needed_by_text(self) -> str:
        return ", ".join(self.needed_by)


#: Every weight file the package can use, by short name.
CATALOGUE: dict[str, WeightsFile] = {
    w.name: w
    for w in (
        WeightsFile(
            name="alexnet",
            file="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            sha256_prefix="7be5be79",
            needed_by=("lpips",),
            description="torchvision AlexNet, ImageNet (IMAGENET1K_V1): the LPIPS backbone (net='alex', default)",
            approx_mb=233.1,
        ),
        WeightsFile(
            name="vgg16",
            file="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            sha256_prefix="397923af",
            needed_by=("dists", "lpips"),
            description="torchvision VGG16, ImageNet (IMAGENET1K_V1): the DISTS backbone and LPIPS net='vgg'",
            approx_mb=527.8,
        ),
        WeightsFile(
            name="squeezenet1_1",
            file="squeezenet1_1-b8a52dc0.pth",
            url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
            sha256_prefix="b8a52dc0",
            needed_by=("lpips",),
            description="torchvision SqueezeNet 1.1, ImageNet (IMAGENET1K_V1): LPIPS net='squeeze'",
            approx_mb=4.7,
        ),
        WeightsFile(
            name="fid_inception",
            file="pt_inception-2015-12-05-6726825d.pth",
            url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            sha256_prefix="6726825d",
            needed_by=("fid",),
            description="TensorFlow FID InceptionV3 (2015-12-05) ported by pytorch-fid: FID pool3 features",
            approx_mb=91.2,
        ),
    )
}


@dataclass(frozen=True)
class WeightStatus:
    """Whether one catalogue file is in the cache (``verified`` is ``None`` unless a hash check was asked)."""

    name: str
    file: str
    path: Path
    present: bool
    size: int | None
    needed_by: tuple[str, ...]
    url: str
    description: str
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["needed_by"] = list(self.needed_by)
        return d

    def __str__(self) -> str:
        if self.present:
            state = f"present ({self.size / 1e6:.1f} MB)" if self.size is not None else "present"
            if self.verified is False:
                state += ", HASH MISMATCH"
            elif self.verified:
                state += ", verified"
        else:
            state = "missing"
        return f"{self.name:<14} {state:<28} {self.file}  (needed by {', '.join(self.needed_by)})"


# ----------------------------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """Where weight files live: ``torch.hub.get_dir()/checkpoints``, honouring ``TORCH_HOME``.

    When torch is already imported its own answer is used (it also honours ``torch.hub.set_dir``); otherwise
    the same rule is applied without importing it.
    """
    hub = sys.modules.get("torch.hub")
    if hub is not None:
        return Path(hub.get_dir()) / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(xdg, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def download_allowed() -> bool:
    """Whether a missing file may be fetched from its URL (``OPTIMIZER_ALLOW_DOWNLOAD``, default yes)."""
    return os.environ.get(DOWNLOAD_ENV, "1").strip().lower() not in _FALSY


def _entry(name: str) -> WeightsFile:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownNameError("weights", name, list(CATALOGUE)) from None


# ----------------------------------------------------------------------------------------------- status


def weights_status(*, verify: bool = False) -> list[WeightStatus]:
    """One :class:`WeightStatus` per catalogue file; ``verify=True`` also checks present files' hashes."""
    folder = cache_dir()
    out = []
    for w in CATALOGUE.values():
        path = folder / w.file
        present = path.is_file()
        size = path.stat().st_size if present else None
        verified = _sha256(path).startswith(w.sha256_prefix) if (present and verify) else None
        out.append(
            WeightStatus(
                name=w.name,
                file=w.file,
                path=path,
                present=present,
                size=size,
                needed_by=w.needed_by,
                url=w.url,
                description=w.description,
                verified=verified,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------- obtaining

_failed: dict[str, str] = {}  # name -> why the download failed, so one process tries each file once
_lock = threading.Lock()


def require_weights(name: str, *, allow_download: bool | None = None) -> Path:
    """The cached path of catalogue file ``name``, downloading it when allowed.

    Args:
        name: the catalogue name (``alexnet``, ``vgg16``...).
        allow_download: whether a missing file may be fetched; ``None`` follows ``OPTIMIZER_ALLOW_DOWNLOAD``.

    Returns:
        The file's path in the cache.

    Raises :class:`WeightsNotFoundError` naming the file, where it is expected, its URL and how to supply it
    when it is missing and cannot be downloaded.
    """
    w = _entry(name)
    path = cache_dir() / w.file
    if path.is_file():
        return path
    with _lock:
        if path.is_file():
            return path
        if allow_download is False:
            reason = "downloads are disabled (allow_download=False)"
        elif allow_download is None and not download_allowed():
            reason = f"downloads are disabled ({DOWNLOAD_ENV}=0)"
        elif name in _failed:
            reason = f"an earlier download in this process failed: {_failed[name]}"
        else:
            try:
                return _download(w, path, timeout=DOWNLOAD_TIMEOUT_S)
            except Exception as exc:  # any network, disk or hash failure: remembered, then reported
                _failed[name] = f"{type(exc).__name__}: {exc}"
                reason = f"downloading it failed: {_failed[name]}"
    raise _not_found(w, path, reason)


def download_weights(name: str, *, timeout: float = DOWNLOAD_TIMEOUT_S, force: bool = False) -> Path:
    """Fetch catalogue file ``name`` into the cache now (ignores ``OPTIMIZER_ALLOW_DOWNLOAD``).

    Meant for an explicit user action such as ``optimizer weights download``; errors carry the same advice
    as :func:`require_weights`.
    """
    w = _entry(name)
    path = cache_dir() / w.file
    if path.is_file() and not force:
        return path
    with _lock:
        try:
            path = _download(w, path, timeout=timeout)
        except Exception as exc:
            raise _not_found(w, path, f"downloading it failed: {type(exc).__name__}: {exc}") from exc
        _failed.pop(name, None)
        return path


def import_weights(path: str | os.PathLike[str], *, name: str | None = None) -> Path:
    """Copy a weight file you brought into the cache, after identifying and verifying it.

    The file is identified by ``name`` when given, else by its file name, else by its SHA-256; it must match
    the catalogue's hash prefix. Returns the path in the cache. Raises :class:`InvalidParameterError` for a
    missing, unknown or corrupt file.
    """
    src = Path(path).expanduser()
    if not src.is_file():
        raise InvalidParameterError(f"weights file to import must be an existing file, got {str(src)!r}")
    digest = _sha256(src)
    if name is not None:
        w = _entry(name)
    else:
        by_name = [w for w in CATALOGUE.values() if w.file == src.name]
        by_hash = [w for w in CATALOGUE.values() if digest.startswith(w.sha256_prefix)]
        candidates = by_name or by_hash
        if not candidates:
            known = "; ".join(f"{w.file} (sha256 {w.sha256_prefix}...)" for w in CATALOGUE.values())
            raise InvalidParameterError(
                f"unknown weights file {str(src)!r} (sha256 {digest[:16]}...): neither its name nor its hash "
                f"matches a known file; known: {known}"
            )
        w = candidates[0]
    if not digest.startswith(w.sha256_prefix):
        raise InvalidParameterError(
            f"{str(src)!r} is not a valid copy of {w.file}: its sha256 must start with {w.sha256_prefix}, "
            f"got {digest[:16]}... (truncated or corrupt download, or a different file); fetch it again from "
            f"{w.url}"
        )
    dest_dir = cache_dir()
    dest = dest_dir / w.file
    dest_dir.mkdir(parents=True, exist_ok=True)
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    fd, tmp = tempfile.mkstemp(prefix=f".{w.file}.", suffix=".partial", dir=dest_dir)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    with _lock:
        _failed.pop(w.name, None)
    log.info("imported %s into %s", src, dest)
    return dest


def load_state_dict(name: str, *, allow_download: bool | None = None) -> dict[str, Any]:
    """Load catalogue file ``name`` (see :func:`require_weights`, which ``allow_download`` is passed to) as a
    CPU state dict of tensors."""
    import torch

    w = _entry(name)
    path = require_weights(name, allow_download=allow_download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _not_found(
            w, path, f"the file there cannot be read ({type(exc).__name__}: {exc}); it is probably truncated"
        ) from exc
    if not isinstance(state, dict) or not state:
        raise _not_found(w, path, f"the file there holds {type(state).__name__}, not a state dict")
    return dict(state)


# ----------------------------------------------------------------------------------------------- helpers


def _not_found(w: WeightsFile, path: Path, reason: str) -> WeightsNotFoundError:
    err = WeightsNotFoundError(
        f"pretrained weights {w.file} ({w.description}; needed by {w.needed_by_text()}) are missing: expected "
        f"at {path}; {reason}. The file normally comes from {w.url}. Download it on a connected machine and "
        f"run `optimizer weights import {w.file}`, or copy it to {path.parent}/ (TORCH_HOME moves that folder)."
    )
    # Attributes for callers that want the parts (``filename`` is avoided: OSError would reformat str()).
    err.weights_name = w.name  # type: ignore[attr-defined]
    err.weights_file = w.file  # type: ignore[attr-defined]
    err.expected_path = path  # type: ignore[attr-defined]
    err.url = w.url  # type: ignore[attr-defined]
    return err


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(w: WeightsFile, dest: Path, *, timeout: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.warning("downloading %s from %s to %s", w.file, w.url, dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{w.file}.", suffix=".partial", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(w.url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
                h.update(block)
        digest = h.hexdigest()
        if not digest.startswith(w.sha256_prefix):
            raise InvalidParameterError(
                f"downloaded {w.file} has sha256 {digest[:16]}..., expected a prefix of {w.sha256_prefix}"
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
