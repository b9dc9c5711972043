"""Learned full-reference metrics: LPIPS, shift-tolerant LPIPS and DISTS, with reference-side caching.

Each metric builds its network once per instance (eval mode, float32, on ``self.device``) and splits the
score in two: :meth:`prepare` runs the backbone on the reference once and keeps its features; :meth:`compute`
runs it on the distorted image only and reproduces the reference implementation's arithmetic on the cached
features, so cached and uncached scores are identical.

Inputs are the package's ``1 x 3 x H x W`` float32 tensors in ``[0, 1]``; each metric converts to its own
convention inside (LPIPS: ``[-1, 1]`` then its scaling layer; DISTS: ImageNet mean/std, as DISTS itself does).

Backbone weights (AlexNet, VGG16, SqueezeNet) come from torchvision's cache through :mod:`.weights`; a
missing file raises :class:`~optimizer.errors.WeightsNotFoundError`, never a silent random network.
``backbone_weights=`` takes a torchvision-format state dict (or a path to one) to use other weights
explicitly; ``allow_download=`` says whether a missing catalogue file may be fetched (``None``: the
``OPTIMIZER_ALLOW_DOWNLOAD`` default). The learned heads ship in the wheels: LPIPS' linear layers in ``lpips``, DISTS' alpha/beta in
``DISTS_pytorch``, the whole shift-tolerant networks in ``stlpips_pytorch``.

Memory: a cached reference keeps its feature maps. At 768x512 that is a few MB for LPIPS AlexNet and about
190 MB for DISTS and LPIPS VGG (the first VGG stage is full resolution with 64 channels).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ..errors import ImageSizeMismatchError, InvalidImageError, InvalidParameterError, WeightsNotFoundError
from .base import Metric
from .registry import get_spec
from .weights import load_state_dict

if TYPE_CHECKING:
    import torch

__all__ = ["DISTS", "LPIPS", "STLPIPS", "LPIPS_NETS", "STLPIPS_NETS"]

BackboneWeights = Union[Mapping[str, "torch.Tensor"], str, "os.PathLike[str]", None]

#: LPIPS backbones and the catalogue file each one needs.
LPIPS_NETS: dict[str, str] = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}

#: Shift-tolerant LPIPS networks shipped in stlpips-pytorch.
STLPIPS_NETS = ("alex", "vgg")

# Smallest side each backbone accepts (below it a pooling layer runs out of pixels).
_MIN_SIDE = {"lpips-alex": 31, "lpips-vgg": 16, "lpips-squeeze": 17, "stlpips-alex": 21, "stlpips-vgg": 18}


# ----------------------------------------------------------------------------------------------- helpers


def _as_input(t: "torch.Tensor", device: "torch.device", role: str) -> "torch.Tensor":
    import torch

    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] != 1 or t.shape[1] != 3:
        shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
        raise InvalidImageError(f"{role} must be a 1 x 3 x H x W tensor, got {shape}")
    return t.to(device=device, dtype=torch.float32)


def _check_same_size(ref_hw: tuple[int, int], dist: "torch.Tensor") -> None:
    h, w = int(dist.shape[-2]), int(dist.shape[-1])
    if (h, w) != ref_hw:
        raise ImageSizeMismatchError(
            f"reference and distorted images must have equal sizes, got {ref_hw[1]}x{ref_hw[0]} (reference) "
            f"and {w}x{h} (distorted)"
        )


def _check_min_side(t: "torch.Tensor", key: str) -> None:
    h, w = int(t.shape[-2]), int(t.shape[-1])
    if min(h, w) < _MIN_SIDE[key]:
        raise InvalidImageError(f"{key} needs images of at least {_MIN_SIDE[key]} pixels a side, got {w}x{h}")


def _resolve_backbone(
    backbone_weights: BackboneWeights, catalogue_name: str, allow_download: bool | None
) -> dict[str, Any]:
    """A torchvision-format state dict: the catalogue file, or what the caller explicitly passed."""
    if backbone_weights is None:
        return load_state_dict(catalogue_name, allow_download=allow_download)
    if isinstance(backbone_weights, (str, os.PathLike)):
        import torch

        return dict(torch.load(os.fspath(backbone_weights), map_location="cpu", weights_only=True))
    if isinstance(backbone_weights, Mapping):
        return dict(backbone_weights)
    raise InvalidParameterError(
        f"backbone_weights must be None, a state dict or a path, got {type(backbone_weights).__name__}"
    )


def _load_features(target: "torch.nn.Module", state: Mapping[str, Any], *, sliced: bool, what: str) -> None:
    """Load torchvision ``features.N.*`` weights into ``target``, strictly.

    ``sliced``: ``target`` holds the layers split into ``sliceK`` children that keep their original indices
    as names (the lpips layout); otherwise ``target`` is the features ``Sequential`` itself.
    """
    prefix_of: dict[str, str] = {}
    if sliced:
        for slice_name, part in target.named_children():
            for idx, _ in part.named_children():
                prefix_of[idx] = f"{slice_name}.{idx}"
    mapped = {}
    for key, value in state.items():
        if not key.startswith("features."):
            continue
        idx, rest = key[len("features.") :].split(".", 1)
        if sliced:
            if idx in prefix_of:
                mapped[f"{prefix_of[idx]}.{rest}"] = value
        else:
            mapped[f"{idx}.{rest}"] = value
    expected = set(target.state_dict())
    missing = sorted(expected - set(mapped))
    if missing:
        raise InvalidParameterError(
            f"backbone weights do not fit {what}: missing {len(missing)} tensors, e.g. {missing[:3]} "
            f"(expected a torchvision state dict with 'features.N.*' keys)"
        )
    try:
        target.load_state_dict({k: v for k, v in mapped.items() if k in expected}, strict=True)
    except RuntimeError as exc:
        raise InvalidParameterError(f"backbone weights do not fit {what}: {exc}") from None


def _same_pixels(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def _freeze(module: "torch.nn.Module", device: "torch.device") -> "torch.nn.Module":
    module = module.float().to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _normalize(x: "torch.Tensor", eps: float = 1e-10) -> "torch.Tensor":
    """Unit length along channels, with lpips' exact arithmetic (``normalize_tensor``)."""
    import torch

    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)


@contextlib.contextmanager
def _optional_imports_stubbed(stubs: Mapping[str, tuple[str, ...]]) -> Iterator[None]:
    """Stand in for modules imported but never used, only while they are missing, and only for the import.

    stlpips-pytorch 0.0.2 imports ``IPython.embed`` and ``torchsummary.summary`` at module level without
    needing them to score; the core install has neither.
    """
    inserted: list[tuple[str, types.ModuleType]] = []
    for name, attrs in stubs.items():
        if name in sys.modules or _importable(name):
            continue
        stub = types.ModuleType(name)
        for attr in attrs:
            setattr(stub, attr, _unavailable(name, attr))
        sys.modules[name] = stub
        inserted.append((name, stub))
    try:
        yield
    finally:
        for name, stub in inserted:
            if sys.modules.get(name) is stub:
                del sys.modules[name]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _unavailable(module: str, attr: str) -> Any:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise ImportError(f"{module}.{attr} is not installed")

    return missing


# ----------------------------------------------------------------------------------------------- LPIPS family


@dataclass
class _FeatureState:
    """Reference side of an LPIPS-style metric: its unit-normalised backbone features."""

    feats: list["torch.Tensor"]
    hw: tuple[int, int]
    pixels: "torch.Tensor"


class _LpipsFamily(Metric):
    """Shared scoring for networks with lpips' layout (``scaling_layer``, ``net``, ``lins``).

    Per layer: unit-normalise the features along channels, square the difference, weight the channels with
    the learned 1x1 convolution, average over space; sum over layers (lpips ``forward``, ``spatial=False``).
    The map (``spatial=True``) upsamples each layer's weighted difference bilinearly to H x W and sums.
    """

    _model: Any
    _size_key: str

    def _features(self, x: "torch.Tensor") -> list["torch.Tensor"]:
        outs = self._model.net(self._model.scaling_layer(2 * x - 1))
        return [_normalize(o) for o in outs]

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _FeatureState:
        import torch

        ref = _as_input(reference, self.device, "reference")
        _check_min_side(ref, self._size_key)
        with torch.inference_mode():
            feats = self._features(ref)
        return _FeatureState(feats=feats, hw=(int(ref.shape[-2]), int(ref.shape[-1])), pixels=ref.clone())

    def _layers(self, state: _FeatureState, distorted: "torch.Tensor", shared: dict[str, Any]) -> list["torch.Tensor"]:
        """Per-layer weighted squared differences (``1 x 1 x h_l x w_l``), kept in the pair's shared dict."""
        import torch

        key = f"{self.name}:{id(self)}:{id(state)}:layers"
        cached: list[torch.Tensor] | None = shared.get(key)
        if cached is not None:
            return cached
        dist = _as_input(distorted, self.device, "distorted")
        _check_same_size(state.hw, dist)
        if _same_pixels(dist, state.pixels):
            # The definition gives exactly 0; a second backbone pass could differ in the last bit on a GPU.
            layers = [self._model.lins[k](torch.zeros_like(f0)) for k, f0 in enumerate(state.feats)]
        else:
            feats1 = self._features(dist)
            layers = [self._model.lins[k]((f0 - f1) ** 2) for k, (f0, f1) in enumerate(zip(state.feats, feats1))]
        shared[key] = layers
        return layers

    def compute(self, state: _FeatureState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        with torch.inference_mode():
            layers = self._layers(state, distorted, shared)
            val = torch.zeros((), device=layers[0].device)
            for layer in layers:
                val = val + layer.mean([2, 3], keepdim=True)
        return float(val)

    def compute_map(self, state: _FeatureState, distorted: "torch.Tensor", shared: dict[str, Any]) -> np.ndarray:
        """The ``H x W`` distance map (lpips ``spatial=True``); its mean is close to, not equal to, the score."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            layers = self._layers(state, distorted, shared)
            total = torch.zeros((1, 1, *state.hw), device=layers[0].device)
            for layer in layers:
                total = total + F.interpolate(layer, size=state.hw, mode="bilinear", align_corners=False)
        distance_map: np.ndarray = total[0, 0].float().cpu().numpy()
        return distance_map


class LPIPS(_LpipsFamily):
    """LPIPS v0.1 (Zhang et al. 2018): a learned distance, 0 for identical images, lower is better.

    ``net``: ``"alex"`` (default, the best forward metric in the paper), ``"vgg"`` or ``"squeeze"``. The
    linear heads come from the ``lpips`` wheel; the torchvision backbone from the weight cache (or
    ``backbone_weights=``).
    """

    spec = get_spec("lpips")

    def __init__(
        self,
        net: str = "alex",
        *,
        device: "torch.device | str | None" = None,
        backbone_weights: BackboneWeights = None,
        allow_download: bool | None = None,
    ) -> None:
        super().__init__(device)
        if net not in LPIPS_NETS:
            raise InvalidParameterError(f"LPIPS net must be one of {', '.join(LPIPS_NETS)}, got {net!r}")
        self.net = net
        self._size_key = f"lpips-{net}"
        # Fails fast, before building anything.
        state = _resolve_backbone(backbone_weights, LPIPS_NETS[net], allow_download)

        import lpips

        with warnings.catch_warnings():
            # lpips builds its trunk with torchvision's deprecated ``pretrained=False``: random, replaced below.
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
        _load_features(model.net, state, sliced=True, what=f"LPIPS net={net!r}")
        self._model = _freeze(model, self.device)


class STLPIPS(_LpipsFamily):
    """Shift-tolerant LPIPS (Ghildyal & Liu 2022): LPIPS over anti-aliased networks trained to ignore
    sub-pixel shifts; lower is better.

    The whole network (``"alex"`` default, or ``"vgg"``) ships in ``stlpips-pytorch``, so it runs offline.
    Reference features are cached like LPIPS'; the network itself works at stride 1 before blurring down,
    so one image costs several times an AlexNet LPIPS pass: fit for reports, slow for tuning loops.
    """

    spec = get_spec("stlpips")

    def __init__(self, net: str = "alex", *, device: "torch.device | str | None" = None) -> None:
        super().__init__(device)
        if net not in STLPIPS_NETS:
            raise InvalidParameterError(f"ST-LPIPS net must be one of {', '.join(STLPIPS_NETS)}, got {net!r}")
        self.net = net
        self._size_key = f"stlpips-{net}"

        import torch

        weights_path = _stlpips_weights_path(net)
        with _optional_imports_stubbed({"IPython": ("embed",), "torchsummary": ("summary",)}):
            from stlpips_pytorch import stlpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model = stlpips.LPIPS(pretrained=False, net=net, variant="shift_tolerant", verbose=False)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        result = model.load_state_dict(state, strict=False)
        # ``lins`` is a ModuleList over the same layers as ``lin0..lin4``: its keys are aliases, filled too.
        missing = [k for k in result.missing_keys if not k.startswith("lins.")]
        if missing or result.unexpected_keys:
            raise InvalidParameterError(
                f"{weights_path} does not fit ST-LPIPS net={net!r}: missing {missing[:3]}, "
                f"unexpected {list(result.unexpected_keys)[:3]}"
            )
        self._model = _freeze(model, self.device)


def _stlpips_weights_path(net: str) -> str:
    try:
        path = importlib.resources.files("stlpips_pytorch") / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsNotFoundError(
            f"ST-LPIPS weights {net}_shift_tolerant.pth are missing: they ship in the stlpips-pytorch wheel "
            f"(stlpips_pytorch/weights/vST0.0/); reinstall it with `pip install --force-reinstall stlpips-pytorch`"
        )
    return str(path)


# ----------------------------------------------------------------------------------------------- DISTS

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_features() -> "torch.nn.Sequential":
    """torchvision's ``vgg16().features`` layout (same indices, so its state dict keys load directly)."""
    from torch import nn

    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


def _l2pool(channels: int) -> "torch.nn.Module":
    """DISTS' L2 pooling: sqrt of a 3x3 Hann-weighted average of squares, stride 2 (replaces max-pooling)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class L2Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            a = np.hanning(5)[1:-1]
            g = torch.Tensor(a[:, None] * a[None, :])
            g = g / torch.sum(g)
            self.register_buffer("filter", g[None, None, :, :].repeat((channels, 1, 1, 1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            kernel: torch.Tensor = self.filter  # type: ignore[assignment]  # a registered buffer
            out = F.conv2d(x**2, kernel, stride=2, padding=1, groups=x.shape[1])
            return (out + 1e-12).sqrt()

    return L2Pool()


def _dists_alpha_beta() -> dict[str, Any]:
    import torch

    try:
        path = importlib.resources.files("DISTS_pytorch") / "weights.pt"
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsNotFoundError(
            "DISTS alpha/beta weights DISTS_pytorch/weights.pt are missing: they ship in the dists-pytorch "
            "wheel; install it with `pip install dists-pytorch`"
        )
    weights: dict[str, Any] = torch.load(str(path), map_location="cpu", weights_only=True)
    if not {"alpha", "beta"} <= set(weights):
        raise InvalidParameterError(f"{path} has no alpha/beta tensors (keys: {sorted(weights)})")
    return weights


@dataclass
class _DistsState:
    """Reference side of DISTS per stage: features, their spatial means and variances."""

    feats: list["torch.Tensor"]
    means: list["torch.Tensor"]
    variances: list["torch.Tensor"]
    hw: tuple[int, int]
    pixels: "torch.Tensor"


class DISTS(Metric):
    """DISTS (Ding et al. 2020): structure and texture similarity over VGG16 with L2 pooling.

    ``1 - sum_k (alpha_k S1_k + beta_k S2_k)`` over the input and five VGG stages, where S1 compares the
    channels' spatial means and S2 their covariance; alpha/beta are the published learned weights. A
    distance in [0, 1], exactly 0 for identical images, lower is better.
    """

    spec = get_spec("dists")
    _CHANNELS = (3, 64, 128, 256, 512, 512)
    _C1 = 1e-6
    _C2 = 1e-6

    def __init__(
        self,
        *,
        device: "torch.device | str | None" = None,
        backbone_weights: BackboneWeights = None,
        allow_download: bool | None = None,
    ) -> None:
        super().__init__(device)
        import torch
        from torch import nn

        state = _resolve_backbone(backbone_weights, "vgg16", allow_download)
        ab = _dists_alpha_beta()

        features = _vgg16_features()
        _load_features(features, state, sliced=False, what="the DISTS VGG16")
        stage_ranges = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))
        stages = []
        for i, (lo, hi) in enumerate(stage_ranges):
            layers = [] if i == 0 else [_l2pool(self._CHANNELS[i])]
            layers += [features[j] for j in range(lo, hi)]
            stages.append(nn.Sequential(*layers))
        self._stages = nn.ModuleList(stages)
        _freeze(self._stages, self.device)
        self._mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, -1, 1, 1)
        alpha = ab["alpha"].float().to(self.device)
        beta = ab["beta"].float().to(self.device)
        w_sum = alpha.sum() + beta.sum()
        self._alpha = torch.split(alpha / w_sum, list(self._CHANNELS), dim=1)
        self._beta = torch.split(beta / w_sum, list(self._CHANNELS), dim=1)

    def _features(self, x: "torch.Tensor") -> list["torch.Tensor"]:
        out = [x]
        h = (x - self._mean) / self._std
        for stage in self._stages:
            h = stage(h)
            out.append(h)
        return out

    def prepare(self, reference: "torch.Tensor", shared: dict[str, Any]) -> _DistsState:
        import torch

        ref = _as_input(reference, self.device, "reference")
        with torch.inference_mode():
            feats = self._features(ref)
            means = [f.mean([2, 3], keepdim=True) for f in feats]
            variances = [((f - m) ** 2).mean([2, 3], keepdim=True) for f, m in zip(feats, means)]
        return _DistsState(feats, means, variances, (int(ref.shape[-2]), int(ref.shape[-1])), ref.clone())

    def compute(self, state: _DistsState, distorted: "torch.Tensor", shared: dict[str, Any]) -> float:
        import torch

        dist = _as_input(distorted, self.device, "distorted")
        _check_same_size(state.hw, dist)
        if _same_pixels(dist, state.pixels):
            # S1 = S2 = 1 by definition; the float sums of alpha and beta would leave about 1e-7 either way.
            return 0.0
        c1, c2 = self._C1, self._C2
        with torch.inference_mode():
            feats1 = self._features(dist)
            dist1 = torch.zeros((), device=dist.device)
            dist2 = torch.zeros((), device=dist.device)
            for k, f1 in enumerate(feats1):
                f0, x_mean, x_var = state.feats[k], state.means[k], state.variances[k]
                y_mean = f1.mean([2, 3], keepdim=True)
                s1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
                dist1 = dist1 + (self._alpha[k] * s1).sum(1, keepdim=True)
                y_var = ((f1 - y_mean) ** 2).mean([2, 3], keepdim=True)
                xy_cov = (f0 * f1).mean([2, 3], keepdim=True) - x_mean * y_mean
                s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
                dist2 = dist2 + (self._beta[k] * s2).sum(1, keepdim=True)
            score = 1 - (dist1 + dist2).squeeze()
        # Nearly identical inputs can round to about -1e-7; a distance is not negative.
        return max(float(score), 0.0)
