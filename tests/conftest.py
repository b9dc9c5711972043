"""Shared fixtures: paths to the Kodak images and the SSIMULACRA 2 reference scores.

The data sets live beside the checkout (``../shared/datasets``) or where ``OPTIMIZER_DATASETS`` points.
Tests that need them skip on a machine without them, except under CI (``CI`` set), where a missing data
set is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
