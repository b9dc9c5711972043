"""Shared fixtures: paths to the Kodak images and the SSIMULACRA 2 reference scores.

The data sets live beside the checkout (``../shared/datasets``) or where ``OPTIMIZER_DATASETS`` points.
Tests that need them skip on a machine without them, except under CI (``CI`` set), where a missing data
set is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from optimizer.tuning.study import TuningResult

# Tests never download network weights: a missing file must surface as WeightsNotFoundError.
os.environ.setdefault("OPTIMIZER_ALLOW_DOWNLOAD", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("OPTIMIZER_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def _dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        message = f"data set {name!r} not found at {path} (set OPTIMIZER_DATASETS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def kodak_dir() -> Path:
    return _dataset("kodak")


@pytest.fixture(scope="session")
def kodak_paths(kodak_dir: Path) -> list[Path]:
    paths = sorted(kodak_dir.glob("kodim*.png"))
    assert len(paths) == 24, f"expected 24 Kodak images in {kodak_dir}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def ssimulacra2_reference_dir() -> Path:
    return _dataset("ssimulacra2-reference")


@pytest.fixture
def no_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache (``TORCH_HOME`` in ``tmp_path``) with downloads off: a missing weights file
    must surface as WeightsNotFoundError naming it. Returns the checkpoint folder (not created)."""
    from optimizer.metrics import weights

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv(weights.DOWNLOAD_ENV, "0")
    monkeypatch.setattr(weights, "_failed", {})
    return home / "hub" / "checkpoints"


#: The two Kodak crops of the shared small study (textured: they need real bits to pass SSIM 0.9).
SMALL_STUDY_IMAGES = ("kodim01.png", "kodim05.png")


@pytest.fixture(scope="session")
def small_study_dir(kodak_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 192x128 Kodak crops, the corpus of :func:`small_study`."""
    from optimizer.imageio import load_image

    out = tmp_path_factory.mktemp("small-study-corpus")
    for name in SMALL_STUDY_IMAGES:
        load_image(kodak_dir / name).to_pil().crop((200, 150, 392, 278)).save(out / name)
    return out


@pytest.fixture(scope="session")
def small_study(small_study_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TuningResult:
    """One real 8-trial study (jpeg and webp, ssim:0.9, profile fast) shared by the plot and report tests.

    Tests read it and may build reports from it; none adds trials to it.
    """
    from optimizer.tuning.study import tune

    db = tmp_path_factory.mktemp("small-study") / "study.db"
    return tune(
        sorted(small_study_dir.glob("*.png")),
        # 11 settings besides the quality, which each trial solves: 6 JPEG, 5 WebP
        space={
            "formats": ["jpeg", "webp"],
            "jpeg": {"subsampling": ["4:2:0", "4:2:2", "4:4:4"], "optimize": [False, True]},
            "webp": {"method": [2, 6]},
        },
        target="ssim:0.9",
        profile="fast",
        storage=f"sqlite:///{db}",
        study_name="small",
        trials=8,
        seed=3,
    )


@dataclass(frozen=True)
class TinyStudy:
    """A real two-trial study on two generated 64x48 images (no data set needed): its images folder, SQLite
    file, name, preset file, and the ``tune`` options that resume it. Tests copy the file before writing."""

    images: Path
    db: Path
    name: str
    presets: Path
    tune_options: tuple[str, ...]

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.db}"


def textured_image(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A smooth gradient with noise (compresses like a photo), saved as PNG."""
    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 4.0, y * 5.0, (x + y) * 2.0], axis=2) + rng.normal(0, 10, (height, width, 3))
    PILImage.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    from optimizer.cli import main

    root = tmp_path_factory.mktemp("tiny-study")
    images = root / "images"
    images.mkdir()
    for seed in (1, 2):
        textured_image(images / f"image{seed}.png", seed)
    db, presets = root / "study.db", root / "presets.json"
    options = ("--formats", "jpeg", "--subsampling", "4:2:0,4:4:4", "--target", "ssim:0.9", "--profile", "fast")
    code = main(["tune", str(images), *options, "--trials", "2", "--seed", "1", "--study", "tiny",
                 "--storage", f"sqlite:///{db}", "--export", str(presets)])  # fmt: skip
    assert code == 0, "the tiny study could not be made"
    return TinyStudy(images, db, "tiny", presets, options)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    small images score fastest on one thread; on a busy 2-core machine two threads were ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
