"""FID: the Fréchet distance against closed forms and pytorch-fid, feature extraction against pytorch-fid's
network with identical (random) weights, the set API and the weight policy. No download is attempted."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from optimizer.errors import InvalidParameterError, WeightsNotFoundError
from optimizer.imageio import load_image
from optimizer.metrics import metric_names
from optimizer.metrics.fid import (
    FIDResult,
    InceptionFeatures,
    evaluate_set,
    feature_statistics,
    find_images,
    frechet_distance,
)


@pytest.fixture(autouse=True)
def _isolated_weights(no_downloads: Path) -> None:
    """Every test here sees an empty torch cache and no downloads (conftest's ``no_downloads``)."""


@pytest.fixture(scope="module")
def random_inception() -> dict[str, torch.Tensor]:
    """A state dict in pytorch-fid's layout (torchvision Inception3, 1008 classes) with random weights,
    Kaiming-scaled so that activations neither vanish nor explode through the 90-odd layers."""
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    return model.state_dict()


def _pytorch_fid_model(state: dict, dims: int) -> torch.nn.Module:
    from pytorch_fid import inception as pfi

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
        return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval()


# ----------------------------------------------------------------------------------------------- maths


def test_frechet_identical_gaussians_is_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 6))
    mu, sigma = feature_statistics(a)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_shifted_means_is_the_squared_distance() -> None:
    rng = np.random.default_rng(1)
    mu = rng.normal(size=5)
    sigma = np.cov(rng.normal(size=(30, 5)), rowvar=False)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_diagonal_covariances_closed_form() -> None:
    v1, v2 = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    mu1, mu2 = np.zeros(4), np.array([0.0, 1.0, 0.0, 2.0])
    expected = 5.0 + float(np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_covariances_stay_finite() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 16)), rng.normal(size=(4, 16)) + 0.3  # rank 2 and 3 covariances in 16-d
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    value = frechet_distance(m1, s1, m2, s2)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6)


def test_frechet_agrees_with_pytorch_fid() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) * 1.5 + 0.2
    (m1, s1), (m2, s2) = feature_statistics(a), feature_statistics(b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = calculate_frechet_distance(m1, s1, m2, s2)
        except TypeError:  # its sqrtm(disp=False) call is gone from a newer scipy
            pytest.skip("pytorch-fid's calculate_frechet_distance does not run on this scipy")
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_and_statistics_validate_shapes() -> None:
    with pytest.raises(InvalidParameterError, match="equal length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InvalidParameterError, match="N >= 2"):
        feature_statistics(np.zeros((1, 5)))
    mu, sigma = feature_statistics(np.arange(12.0).reshape(4, 3) ** 2)
    assert np.allclose(sigma, np.cov(np.arange(12.0).reshape(4, 3) ** 2, rowvar=False))


# ----------------------------------------------------------------------------------------------- network


@pytest.mark.slow
def test_features_equal_pytorch_fid_with_identical_weights(random_inception, kodak_paths: list[Path]) -> None:
    ours = InceptionFeatures(weights=random_inception)
    ref = _pytorch_fid_model(random_inception, 2048)
    batch = torch.cat([load_image(p).to_tensor() for p in kodak_paths[:2]])  # 768x512, resized to 299 inside
    got = ours(batch)
    with torch.no_grad():
        expected = ref(batch)[0][:, :, 0, 0].double().numpy()
    assert got.shape == (2, 2048) and got.dtype == np.float64
    assert np.abs(expected).mean() > 1e-3  # the random network is not dead
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert not ours._model.training and all(not p.requires_grad for p in ours._model.parameters())


def test_missing_inception_weights_raise_naming_the_file(no_downloads: Path, kodak_dir: Path) -> None:
    file = "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(WeightsNotFoundError) as info:
        InceptionFeatures()
    msg = str(info.value)
    assert file in msg and str(no_downloads / file) in msg and f"optimizer weights import {file}" in msg
    assert "github.com/mseitzer/pytorch-fid" in msg
    with pytest.raises(WeightsNotFoundError, match=file):
        evaluate_set(kodak_dir, kodak_dir, max_images=2)


def test_inception_weights_load_from_the_torch_cache(no_downloads: Path, random_inception) -> None:
    no_downloads.mkdir(parents=True)
    torch.save(random_inception, no_downloads / "pt_inception-2015-12-05-6726825d.pth")
    ex = InceptionFeatures(dims=64)
    assert ex.weights_file == "pt_inception-2015-12-05-6726825d.pth"
    x = torch.rand(2, 3, 80, 80)
    np.testing.assert_array_equal(ex(x), InceptionFeatures(dims=64, weights=random_inception)(x))


def test_inception_rejects_bad_options(random_inception) -> None:
    with pytest.raises(InvalidParameterError, match="2048"):
        InceptionFeatures(dims=100, weights=random_inception)
    with pytest.raises(InvalidParameterError, match="do not fit"):
        InceptionFeatures(weights={"conv.weight": torch.zeros(1)})


# ----------------------------------------------------------------------------------------------- sets


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory: pytest.TempPathFactory, kodak_paths: list[Path]) -> tuple[Path, Path, Path]:
    """Three 128x192 crops of Kodak images: originals, a JPEG q10 copy, and a copy with one unreadable file."""
    root = tmp_path_factory.mktemp("fid-sets")
    ref, dist, broken = root / "ref", root / "dist", root / "broken"
    for d in (ref, dist / "sub", broken):
        d.mkdir(parents=True)
    for i, p in enumerate(kodak_paths[:3]):
        crop = load_image(p).to_pil().crop((100, 100, 292, 228))
        crop.save(ref / f"img{i}.png")
        crop.save(broken / f"img{i}.png")
        crop.save(dist / "sub" / f"img{i}.jpg", quality=10)
    (broken / "zz-garbage.png").write_bytes(b"not an image")
    (ref / "notes.txt").write_text("not an image either")
    return ref, dist, broken


def test_evaluate_set_agrees_with_pytorch_fid(random_inception, image_sets) -> None:
    from pytorch_fid.fid_score import calculate_activation_statistics

    ref_dir, dist_dir, _ = image_sets
    ex = InceptionFeatures(dims=64, weights=random_inception)
    same = evaluate_set(ref_dir, ref_dir, extractor=ex, batch_size=2)
    result = evaluate_set(ref_dir, dist_dir, extractor=ex)
    assert isinstance(result, FIDResult)
    assert (result.n_ref, result.n_dist, result.feature_dim) == (3, 3, 64)
    assert result.weights_file == "(explicit state dict)" and result.skipped == ()
    assert same.value == pytest.approx(0.0, abs=1e-9)
    assert result.value > 0

    model = _pytorch_fid_model(random_inception, 64)
    stats = [
        calculate_activation_statistics([str(p) for p in find_images(d)], model, batch_size=3, dims=64, num_workers=0)
        for d in (ref_dir, dist_dir)
    ]
    expected = frechet_distance(*stats[0], *stats[1])
    assert result.value == pytest.approx(expected, rel=1e-6)
    assert result.to_dict()["value"] == result.value


def test_evaluate_set_skips_unreadable_files(random_inception, image_sets) -> None:
    ref_dir, _, broken = image_sets
    ex = InceptionFeatures(dims=64, weights=random_inception)
    result = evaluate_set(ref_dir, broken, extractor=ex)
    assert result.n_dist == 3
    assert len(result.skipped) == 1 and result.skipped[0][0].endswith("zz-garbage.png")
    assert result.value == pytest.approx(0.0, abs=1e-9)
    assert result.to_dict()["skipped"][0]["path"].endswith("zz-garbage.png")


def test_evaluate_set_needs_two_images_per_set(random_inception, image_sets, tmp_path: Path) -> None:
    ref_dir, _, _ = image_sets
    ex = InceptionFeatures(dims=64, weights=random_inception)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "a.png").write_bytes((ref_dir / "img0.png").read_bytes())
    with pytest.raises(InvalidParameterError, match="at least 2 images.*found 1"):
        evaluate_set(ref_dir, lonely, extractor=ex)
    with pytest.raises(InvalidParameterError, match="existing folder"):
        evaluate_set(ref_dir, tmp_path / "absent", extractor=ex)
    (lonely / "b.png").write_bytes(b"broken")
    with pytest.raises(InvalidParameterError, match="1 of 2"):
        evaluate_set(ref_dir, lonely, extractor=ex)
    with pytest.raises(InvalidParameterError, match="max_images"):
        evaluate_set(ref_dir, ref_dir, extractor=ex, max_images=1)
    assert evaluate_set(ref_dir, ref_dir, extractor=ex, max_images=2).n_ref == 2


def test_fid_is_not_a_per_pair_metric() -> None:
    assert "fid" not in metric_names()
