"""LPIPS, DISTS and ST-LPIPS against their reference implementations, cached and uncached.

The ImageNet backbones cannot be downloaded here, so the comparisons give both sides the same random
backbone: they check the plumbing (scaling, normalisation, layers, heads, pooling, reductions), which is
what this package adds. Learned heads (LPIPS linear layers, DISTS alpha/beta, ST-LPIPS networks) are the
real ones shipped in the wheels.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import models

from optimizer.errors import ImageSizeMismatchError, InvalidImageError, InvalidParameterError, WeightsNotFoundError
from optimizer.imageio import load_image
from optimizer.metrics import create_metric, weights
from optimizer.metrics.learned import DISTS, LPIPS, STLPIPS

TV_CTOR = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


@pytest.fixture(autouse=True)
def _isolated_weights(no_downloads: Path) -> None:
    """Every test here sees an empty torch cache and no downloads (conftest's ``no_downloads``)."""


def _jpeg(tensor: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (tensor[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    load_image(arr).to_pil().save(buf, "JPEG", quality=quality)
    return load_image(buf.getvalue()).to_tensor()


@pytest.fixture(scope="module")
def crops(kodak_paths: list[Path]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two Kodak 256x256 crops, each with a JPEG-damaged and a noisy version."""
    a = load_image(kodak_paths[0]).to_tensor()[..., 128:384, 256:512]
    b = load_image(kodak_paths[4]).to_tensor()[..., 0:256, 0:256]
    g = torch.Generator().manual_seed(3)
    noisy = (b + 0.03 * torch.randn(b.shape, generator=g)).clamp(0, 1)
    return [(a, _jpeg(a, 20)), (b, noisy)]


@pytest.fixture(scope="module")
def small_crops(crops) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """128x128 corners of the crops, for the VGG networks (about 8x the cost of AlexNet)."""
    return [(r[..., :128, :128], d[..., :128, :128]) for r, d in crops]


@pytest.fixture(scope="module")
def random_backbones() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {net: getattr(models, ctor)(weights=None).eval() for net, ctor in TV_CTOR.items()}


def _reference_lpips(net: str, model: torch.nn.Module, *, spatial: bool = False) -> torch.nn.Module:
    """lpips.LPIPS as its users build it (pretrained trunk), the trunk being ``model``."""
    import lpips

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lpips.pretrained_networks.tv, TV_CTOR[net], lambda *a, **k: model)
        return lpips.LPIPS(pretrained=True, net=net, version="0.1", spatial=spatial, verbose=False)


# ----------------------------------------------------------------------------------------------- LPIPS


@pytest.mark.parametrize("net", ["alex", "squeeze", pytest.param("vgg", marks=pytest.mark.slow)])
def test_lpips_equals_reference_cached_and_uncached(net: str, crops, small_crops, random_backbones) -> None:
    model = random_backbones[net]
    ours = LPIPS(net, backbone_weights=model.state_dict())
    ref = _reference_lpips(net, model)
    for reference, distorted in small_crops[:1] if net == "vgg" else crops:
        with torch.no_grad():
            expected = float(ref(reference * 2 - 1, distorted * 2 - 1))
        uncached = ours(reference, distorted)
        state = ours.prepare(reference, {})
        cached = [ours.compute(state, distorted, {}) for _ in range(2)]
        assert expected > 0
        assert abs(uncached - expected) <= 1e-6
        assert cached == [uncached, uncached]
    with torch.no_grad():  # lpips' own [0, 1] path agrees too
        assert abs(float(ref(reference, distorted, normalize=True)) - uncached) <= 1e-6


def test_lpips_map_equals_reference_spatial(crops, random_backbones) -> None:
    model = random_backbones["alex"]
    ours = LPIPS("alex", backbone_weights=model.state_dict())
    ref = _reference_lpips("alex", model, spatial=True)
    reference, distorted = crops[0]
    state = ours.prepare(reference, {})
    got = ours.compute_map(state, distorted, {})
    with torch.no_grad():
        expected = ref(reference * 2 - 1, distorted * 2 - 1)[0, 0].numpy()
    assert got.shape == (256, 256) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-6


def test_lpips_map_reuses_the_pair_work(crops, random_backbones) -> None:
    ours = LPIPS("alex", backbone_weights=random_backbones["alex"].state_dict())
    calls = []
    ours._model.net.register_forward_hook(lambda *args: calls.append(1))
    reference, distorted = crops[0]
    state = ours.prepare(reference, {})
    pair: dict = {}
    value = ours.compute(state, distorted, pair)
    ours.compute_map(state, distorted, pair)
    assert len(calls) == 2  # reference once, distorted once
    assert ours.compute(state, distorted, pair) == value


def test_lpips_loads_the_backbone_from_the_torch_cache(no_downloads: Path, crops, random_backbones) -> None:
    sd = random_backbones["squeeze"].state_dict()
    no_downloads.mkdir(parents=True)
    torch.save(sd, no_downloads / weights.CATALOGUE["squeezenet1_1"].file)
    reference, distorted = crops[1]
    from_cache = create_metric("lpips", net="squeeze")
    explicit = LPIPS("squeeze", backbone_weights=sd)
    assert isinstance(from_cache, LPIPS) and from_cache.name == "lpips"
    assert from_cache(reference, distorted) == explicit(reference, distorted)


@pytest.mark.parametrize(
    ("build", "file"),
    [
        (lambda: LPIPS(), "alexnet-owt-7be5be79.pth"),
        (lambda: create_metric("lpips"), "alexnet-owt-7be5be79.pth"),
        (lambda: LPIPS("vgg"), "vgg16-397923af.pth"),
        (lambda: LPIPS(net="squeeze"), "squeezenet1_1-b8a52dc0.pth"),
        (lambda: DISTS(), "vgg16-397923af.pth"),
        (lambda: create_metric("dists"), "vgg16-397923af.pth"),
    ],
)
def test_missing_backbone_raises_naming_the_file(build, file: str, no_downloads: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        build()
    msg = str(info.value)
    assert file in msg and str(no_downloads / file) in msg and f"optimizer weights import {file}" in msg


def test_lpips_and_dists_of_identical_images_are_zero(crops, small_crops, random_backbones) -> None:
    reference, _ = crops[0]
    lp = LPIPS("alex", backbone_weights=random_backbones["alex"].state_dict())
    assert lp(reference, reference.clone()) == 0.0
    state = lp.prepare(reference, {})
    assert np.all(lp.compute_map(state, reference.clone(), {}) == 0)
    ds = DISTS(backbone_weights=random_backbones["vgg"].state_dict())
    for small, _ in small_crops:
        assert ds(small, small.clone()) == 0.0


def test_input_validation(crops, small_crops, random_backbones) -> None:
    lp = LPIPS("alex", backbone_weights=random_backbones["alex"].state_dict())
    reference, _ = crops[0]
    state = lp.prepare(reference, {})
    with pytest.raises(ImageSizeMismatchError, match="256x256 .reference. and 255x256 .distorted."):
        lp.compute(state, reference[..., :255], {})
    with pytest.raises(InvalidImageError, match="1 x 3 x H x W"):
        lp.prepare(reference[0], {})
    with pytest.raises(InvalidImageError, match="at least 31 pixels"):
        lp(torch.rand(1, 3, 20, 64), torch.rand(1, 3, 20, 64))
    with pytest.raises(InvalidParameterError, match="alex, vgg, squeeze"):
        LPIPS("resnet")
    with pytest.raises(InvalidParameterError, match="do not fit"):
        LPIPS("alex", backbone_weights=random_backbones["squeeze"].state_dict())
    ds = DISTS(backbone_weights=random_backbones["vgg"].state_dict())
    small, _ = small_crops[0]
    with pytest.raises(ImageSizeMismatchError):
        ds(small, small[..., :64, :])


def test_networks_are_frozen_float32_eval_on_the_device(random_backbones) -> None:
    metrics = [
        LPIPS("alex", backbone_weights=random_backbones["alex"].state_dict(), device="cpu"),
        DISTS(backbone_weights=random_backbones["vgg"].state_dict()),
    ]
    for m in metrics:
        module = m._model if isinstance(m, LPIPS) else m._stages
        params = list(module.parameters())
        assert params and not module.training
        assert all(p.dtype == torch.float32 and not p.requires_grad and p.device == m.device for p in params)


# ----------------------------------------------------------------------------------------------- DISTS


def _reference_dists(model: torch.nn.Module) -> torch.nn.Module:
    """DISTS_pytorch.DISTS with ``model`` as its VGG16 and the alpha/beta shipped beside it."""
    import DISTS_pytorch.DISTS_pt as dists_pt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dists_pt.models, "vgg16", lambda *a, **k: model)
        ref = dists_pt.DISTS(load_weights=False)
    ab = torch.load(os.path.join(os.path.dirname(dists_pt.__file__), "weights.pt"), weights_only=True)
    ref.alpha.data, ref.beta.data = ab["alpha"], ab["beta"]
    return ref.eval()


@pytest.mark.slow
def test_dists_equals_reference_cached_and_uncached(small_crops, random_backbones) -> None:
    model = random_backbones["vgg"]
    ours = DISTS(backbone_weights=model.state_dict())
    ref = _reference_dists(model)
    for reference, distorted in small_crops:
        with torch.no_grad():
            expected = float(ref(reference, distorted))
        uncached = ours(reference, distorted)
        state = ours.prepare(reference, {})
        assert expected > 0
        assert abs(uncached - expected) <= 1e-6
        assert ours.compute(state, distorted, {}) == uncached


def test_dists_alpha_beta_are_the_published_ones(random_backbones) -> None:
    import DISTS_pytorch.DISTS_pt as dists_pt

    ours = DISTS(backbone_weights=random_backbones["vgg"].state_dict())
    ab = torch.load(os.path.join(os.path.dirname(dists_pt.__file__), "weights.pt"), weights_only=True)
    w_sum = ab["alpha"].sum() + ab["beta"].sum()
    assert torch.equal(torch.cat(ours._alpha, dim=1), ab["alpha"] / w_sum)
    assert torch.equal(torch.cat(ours._beta, dim=1), ab["beta"] / w_sum)


# ----------------------------------------------------------------------------------------------- ST-LPIPS


@pytest.mark.slow
def test_stlpips_grows_as_jpeg_quality_falls_and_matches_the_package(kodak_paths: list[Path]) -> None:
    metric = create_metric("stlpips")
    assert isinstance(metric, STLPIPS)
    reference = load_image(kodak_paths[4]).to_tensor()[..., 128:320, 256:448]
    state = metric.prepare(reference, {})
    scores = [metric.compute(state, _jpeg(reference, q), {}) for q in (90, 50, 20)]
    assert 0 < scores[0] < scores[1] < scores[2]
    assert metric.compute(state, reference.clone(), {}) <= 1e-6

    from stlpips_pytorch import stlpips  # importable now: the metric imported it

    ref = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    with torch.no_grad():
        expected = float(ref(reference, _jpeg(reference, 20), normalize=True))
    assert abs(expected - scores[2]) <= 1e-6


@pytest.mark.slow
def test_stlpips_works_without_ipython_and_torchsummary(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys, torch

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("IPython", "torchsummary"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Hide())
        from optimizer.metrics.learned import STLPIPS

        m = STLPIPS()
        x = torch.rand(1, 3, 48, 48)
        assert m(x, x) <= 1e-6, m(x, x)
        assert "IPython" not in sys.modules and "torchsummary" not in sys.modules
        try:
            import IPython
        except ImportError:
            pass
        else:
            raise SystemExit("IPython stub leaked")
        print("ok")
        """
    )
    env = dict(os.environ, TORCH_HOME=str(tmp_path), OPTIMIZER_ALLOW_DOWNLOAD="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_stlpips_vgg_builds_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    metric = STLPIPS("vgg")
    x = torch.rand(1, 3, 40, 40)
    assert metric(x, x) == 0.0
    assert metric(x, torch.rand(1, 3, 40, 40)) > 0


def test_stlpips_rejects_unknown_net() -> None:
    with pytest.raises(InvalidParameterError, match="alex, vgg"):
        STLPIPS("squeeze")


def test_lpips_heads_are_the_shipped_v0_1_weights(random_backbones) -> None:
    import lpips

    shipped = torch.load(
        Path(lpips.__file__).parent / "weights" / "v0.1" / "squeeze.pth", map_location="cpu", weights_only=True
    )
    ours = LPIPS("squeeze", backbone_weights=random_backbones["squeeze"].state_dict())
    assert len(shipped) == 7
    for key, value in shipped.items():
        assert torch.equal(ours._model.state_dict()[key], value)
