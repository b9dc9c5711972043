"""Fréchet Inception Distance between two *sets* of images (Heusel et al. 2017).

FID fits a Gaussian to each set's InceptionV3 pool3 features (2048-d) and measures the Fréchet distance
between the two Gaussians: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``. It says whether two
collections look alike as collections; it says nothing about any one image, so it is not a per-pair metric
and is not in the metric registry.

The network is pytorch-fid's port of the TensorFlow FID Inception (its patched pooling blocks reproduce the
original FID numbers; torchvision's ImageNet Inception does not). Its weights,
``pt_inception-2015-12-05-6726825d.pth``, follow the package's weight policy (:mod:`.weights`).

Reading the value: FID is biased by the sample size and its covariance is rank-deficient below 2048 images
per set, so compare values computed on equally sized sets only; published numbers use 10,000 or more.
The matrix square root of 2048 x 2048 covariances costs tens of seconds on two cores.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidImageError, InvalidParameterError
from .weights import CATALOGUE, load_state_dict

if TYPE_CHECKING:
    import torch

__all__ = [
    "FID_DIMS",
    "FIDResult",
    "InceptionFeatures",
    "evaluate_set",
    "feature_statistics",
    "find_images",
    "frechet_distance",
]

#: Feature sizes pytorch-fid offers: 2048 (pool3, the standard FID) or earlier, smaller blocks.
FID_DIMS = (64, 192, 768, 2048)

#: Inception's input size; every image is resized to it (bilinear), as pytorch-fid does.
INPUT_SIZE = 299

_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".tga", ".jxl"}
)

_build_lock = threading.Lock()


@dataclass(frozen=True)
class FIDResult:
    """An FID value with what it was computed from (``skipped``: unreadable files and why)."""

    value: float
    n_ref: int
    n_dist: int
    feature_dim: int
    weights_file: str
    reference_dir: str = ""
    distorted_dir: str = ""
    skipped: tuple[tuple[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return d


# ----------------------------------------------------------------------------------------------- maths


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (sample) covariance of an ``N x D`` feature matrix; needs ``N >= 2``."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise InvalidParameterError(f"feature statistics need an N x D matrix with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2))``, with pytorch-fid's numerics:
    when the product's square root is not finite (singular covariances), ``eps`` is added to both diagonals;
    a negligible imaginary part from rounding is dropped, a large one is an error.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise InvalidParameterError(
            f"Fréchet distance needs means of equal length and matching square covariances, got means "
            f"{mu1.shape} and {mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}"
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # a singular product is handled just below
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = float(np.max(np.abs(covmean.imag)))
            raise InvalidParameterError(
                f"the square root of the covariance product has an imaginary part up to {worst:.3g} (allowed "
                f"1e-3 on the diagonal): the feature sets are too small or degenerate for FID"
            )
        covmean = covmean.real
    value = float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    # Identical sets give 0 up to rounding (about 1e-8 either way); a distance is not negative.
    return max(value, 0.0)


# ----------------------------------------------------------------------------------------------- features


class InceptionFeatures:
    """pytorch-fid's FID InceptionV3, built once, turning ``N x 3 x H x W`` [0, 1] batches into features.

    ``weights``: ``None`` for the standard FID weights from the cache (raises
    :class:`~optimizer.errors.WeightsNotFoundError` when missing), or an explicit state dict in pytorch-fid's
    format (the torchvision ``Inception3`` key layout with 1008 classes).
    """

    def __init__(
        self,
        *,
        dims: int = 2048,
        device: "torch.device | str | None" = None,
        weights: Mapping[str, Any] | None = None,
    ) -> None:
        import torch

        if dims not in FID_DIMS:
            raise InvalidParameterError(f"FID feature dims must be one of {FID_DIMS}, got {dims!r}")
        self.dims = dims
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if weights is None:
            state = load_state_dict("fid_inception")
            self.weights_file = CATALOGUE["fid_inception"].file
        else:
            state = dict(weights)
            self.weights_file = "(explicit state dict)"
        self._model = _build_inception(dims, state).float().to(self.device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)

    def __call__(self, batch: "torch.Tensor") -> np.ndarray:
        """``N x dims`` float64 features of a batch in [0, 1] (resized to 299 x 299 if it is not already)."""
        import torch
        import torch.nn.functional as F

        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InvalidImageError(f"Inception input must be N x 3 x H x W, got {tuple(batch.shape)}")
        with torch.inference_mode():
            x = batch.to(self.device, torch.float32)
            pred = self._model(x)[0]
            if pred.shape[2] != 1 or pred.shape[3] != 1:
                pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
        features: np.ndarray = pred[:, :, 0, 0].double().cpu().numpy()
        return features


def _build_inception(dims: int, state: Mapping[str, Any]) -> "torch.nn.Module":
    """pytorch-fid's ``InceptionV3`` with ``state`` loaded (strictly) instead of its download."""
    from pytorch_fid import inception as pfi

    block = pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]
    # fid_inception_v3() fetches its weights with this module-level function; it gets ours instead.
    with _build_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        original = pfi.load_state_dict_from_url
        pfi.load_state_dict_from_url = lambda *args, **kwargs: dict(state)
        try:
            model: torch.nn.Module = pfi.InceptionV3([block], resize_input=True, normalize_input=True)
            return model
        except RuntimeError as exc:
            raise InvalidParameterError(f"weights do not fit the FID Inception network: {exc}") from None
        finally:
            pfi.load_state_dict_from_url = original


def find_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively, by extension), sorted by relative path."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidParameterError(f"image set must be an existing folder, got {str(root)!r}")
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def _set_features(
    paths: Sequence[Path], extractor: InceptionFeatures, batch_size: int
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    import torch
    import torch.nn.functional as F

    from ..imageio import load_image

    rows: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            rows.append(extractor(torch.cat(batch)))
            batch.clear()

    for path in paths:
        try:
            t = load_image(path).to_tensor()
        except InvalidImageError as exc:
            skipped.append((str(path), str(exc)))
            continue
        batch.append(F.interpolate(t, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False))
        if len(batch) >= batch_size:
            flush()
    flush()
    feats = np.concatenate(rows) if rows else np.empty((0, extractor.dims))
    return feats, skipped


def evaluate_set(
    reference_dir: str | os.PathLike[str],
    distorted_dir: str | os.PathLike[str],
    *,
    batch_size: int = 32,
    device: "torch.device | str | None" = None,
    max_images: int | None = None,
    dims: int = 2048,
    extractor: InceptionFeatures | None = None,
) -> FIDResult:
    """FID between the images under ``reference_dir`` and those under ``distorted_dir`` (0 for identical sets).

    Each folder is read recursively. Unreadable files are skipped and listed in the result. Each set needs
    at least 2 readable images (thousands for a meaningful value).

    Args:
        reference_dir: The folder of reference images.
        distorted_dir: The folder of processed images.
        batch_size: Images per forward pass of the Inception network.
        device: Torch device (default: CPU).
        max_images: Use the first N files of each folder, in path order.
        dims: Feature dimension (2048: the pool features FID is defined on).
        extractor: An already built :class:`InceptionFeatures` to reuse.

    Returns:
        The :class:`FIDResult`.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_images is not None and (not isinstance(max_images, int) or max_images < 2):
        raise InvalidParameterError(f"max_images must be an integer >= 2 or None, got {max_images!r}")
    sets = []
    for folder in (reference_dir, distorted_dir):
        paths = find_images(folder)[:max_images]
        if len(paths) < 2:
            raise InvalidParameterError(
                f"FID needs at least 2 images in each set to estimate a covariance; found {len(paths)} in "
                f"{str(folder)!r}"
            )
        sets.append(paths)
    if extractor is None:
        extractor = InceptionFeatures(dims=dims, device=device)
    stats = []
    skipped: list[tuple[str, str]] = []
    counts = []
    for folder, paths in zip((reference_dir, distorted_dir), sets):
        feats, bad = _set_features(paths, extractor, batch_size)
        skipped += bad
        if feats.shape[0] < 2:
            raise InvalidParameterError(
                f"FID needs at least 2 readable images in each set; {feats.shape[0]} of {len(paths)} in "
                f"{str(folder)!r} could be read"
            )
        counts.append(int(feats.shape[0]))
        stats.append(feature_statistics(feats))
    (mu1, s1), (mu2, s2) = stats
    return FIDResult(
        value=frechet_distance(mu1, s1, mu2, s2),
        n_ref=counts[0],
        n_dist=counts[1],
        feature_dim=extractor.dims,
        weights_file=extractor.weights_file,
        reference_dir=str(reference_dir),
        distorted_dir=str(distorted_dir),
        skipped=tuple(skipped),
    )
