"""Fixed image pairs whose PSNR, SSIM, MS-SSIM and SSIMULACRA 2 were recorded from an earlier implementation.

The pairs are built only from PNG files in the shared data sets (no encoder runs), so their pixels never change:

* ``pair:<distorted>``: each of the 28 SSIMULACRA 2 reference pairs (a Kodak image against a decoded JPEG, WebP
  or AVIF version of it);
* ``mosaic4x2``: 8 of those pairs side by side, references and distorted images tiled alike into 3072x1024;
* ``mosaic7x4``: all 28 pairs tiled 7x4 into 5376x2048 (11 MP).

``tests/data/metric_baseline.json`` holds the scores of the implementation that computed every metric on
whole planes (commit 6a9a60d), recorded with::

    git archive 6a9a60d optimizer | tar -x -C /tmp/baseline
    PYTHONPATH=/tmp/baseline python tests/metric_pairs.py 6a9a60d > tests/data/metric_baseline.json

``tests/test_metric_baseline.py`` checks the current implementation against them.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

DATASETS = Path(
    os.environ.get("OPTIMIZER_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
)
METRICS = ("psnr", "ssim", "ms_ssim", "ssimulacra2")
MOSAICS = {"mosaic4x2": (4, 2), "mosaic7x4": (7, 4)}


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def reference_rows(datasets: Path = DATASETS) -> list[dict[str, str]]:
    with open(datasets / "ssimulacra2-reference" / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def pair(row: dict[str, str], datasets: Path = DATASETS) -> tuple[np.ndarray, np.ndarray]:
    """One reference pair as ``H x W x 3`` uint8 arrays."""
    return _rgb(datasets / "kodak" / row["reference"]), _rgb(datasets / "ssimulacra2-reference" / row["distorted"])


def mosaic(name: str, datasets: Path = DATASETS) -> tuple[np.ndarray, np.ndarray]:
    """The first ``cols x rows`` reference pairs tiled row by row (every pair is 768x512)."""
    cols, rows = MOSAICS[name]
    tiles = [pair(row, datasets) for row in reference_rows(datasets)[: cols * rows]]
    ref = np.concatenate(
        [np.concatenate([t[0] for t in tiles[r * cols : (r + 1) * cols]], axis=1) for r in range(rows)]
    )
    dist = np.concatenate(
        [np.concatenate([t[1] for t in tiles[r * cols : (r + 1) * cols]], axis=1) for r in range(rows)]
    )
    return ref, dist


def pairs(datasets: Path = DATASETS) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for row in reference_rows(datasets):
        yield (f"pair:{row['distorted']}", *pair(row, datasets))
    for name in MOSAICS:
        yield (name, *mosaic(name, datasets))


def score(ref: np.ndarray, dist: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` with the importable ``optimizer`` package, uncached."""
    import torch

    from optimizer.metrics import create_metric

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32) / 255.0)[None]

    x, y = tensor(ref), tensor(dist)
    return {name: float(create_metric(name)(x, y)) for name in METRICS}


def main() -> None:
    import torch

    torch.set_num_threads(2)
    values = {name: score(ref, dist) for name, ref, dist in pairs()}
    label = sys.argv[1] if len(sys.argv) > 1 else "unlabelled"
    json.dump({"recorded_from": label, "scores": values}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
