"""The composite evaluator: metrics, named profiles, quality levels and the result type.

A profile is a set of weights over metrics. Each metric's raw value is normalised to [0, 1] (1 best) by its
own direction and calibrated norm range (:class:`~optimizer.metrics.MetricSpec`), then the composite is the
weighted mean of the normalised values. Norm ranges are calibrated so that a normalised value reads like
SSIMULACRA 2 / 100, which gives the quality levels a consistent meaning across profiles.

Profiles (weights are normalised to sum to 1):

``default`` — SSIMULACRA 2 0.55, MS-SSIM 0.20, SSIM 0.15, PSNR 0.10.
    Needs no downloaded weights. SSIMULACRA 2 anchors it: it is the field's reference for compression
    artefacts (SRCC 0.89 against human scores on CID22, where MS-SSIM reaches 0.78 and PSNR 0.66). MS-SSIM
    and SSIM add a structural check at several scales; PSNR keeps gross colour shifts from passing.
``seed`` — LPIPS 0.3, SSIM 0.3, DISTS 0.2, PSNR 0.1 (sum 0.9, normalised).
    The classic mix this product started from; kept for continuity. Needs AlexNet and VGG16 weights.
``perceptual`` — LPIPS 0.4, SSIMULACRA 2 0.4, MS-SSIM 0.2.
    For content where texture matters more than pixel fidelity (photos resized and sharpened). Needs
    AlexNet weights.
``fast`` — SSIM 0.6, PSNR 0.4.
    When every millisecond counts (huge corpora); not recommended for final presets.

Custom weights: ``Evaluator(weights={"ssimulacra2": 0.7, "ssim": 0.3})`` or a ``[profiles.NAME]`` table
in a config file.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .errors import ImageSizeMismatchError, InvalidParameterError, UnknownNameError
from .imageio import WHITE, Image, ImageSource, load_image
from .imageio.limits import allocation_guard, check_memory, scoring_memory
from .jsonio import dumps, json_safe, number_from_json
from .metrics.registry import create_metric, get_spec

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .metrics.base import Metric

__all__ = [
    "DEFAULT_LEVELS",
    "EvaluationResult",
    "Evaluator",
    "PROFILES",
    "Profile",
    "QualityLevels",
    "ReferenceScorer",
    "get_profile",
    "register_profile",
]


@dataclass(frozen=True)
class Profile:
    """Named weights over metrics."""

    name: str
    weights: Mapping[str, float]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.weights:
            raise InvalidParameterError(f"profile {self.name!r} has no metrics")
        for metric, weight in self.weights.items():
            get_spec(metric)  # raises UnknownNameError for unknown metrics
            if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
                raise InvalidParameterError(
                    f"profile {self.name!r}: weight of {metric!r} must be a finite number >= 0, got {weight!r}"
                )
        if sum(self.weights.values()) <= 0:
            raise InvalidParameterError(f"profile {self.name!r}: weights must not all be zero")

    @property
    def normalised_weights(self) -> dict[str, float]:
        total = float(sum(self.weights.values()))
        return {m: float(w) / total for m, w in self.weights.items()}

    @property
    def needs_weights(self) -> bool:
        """Whether any metric of the profile needs downloaded network weights."""
        return any(get_spec(m).needs_weights for m, w in self.weights.items() if w > 0)


PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile, *, replace: bool = False) -> Profile:
    if profile.name in PROFILES and not replace:
        raise ValueError(f"profile {profile.name!r} is already registered")
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str) -> Profile:
    """A named composite profile.

    Args:
        name: ``default``, ``seed``, ``perceptual``, ``fast`` or a registered custom profile.

    Returns:
        The :class:`Profile`.

    Raises:
        UnknownNameError: No profile has that name (the message lists them).
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownNameError("profile", name, list(PROFILES)) from None


register_profile(
    Profile(
        "default",
        {"ssimulacra2": 0.55, "ms_ssim": 0.20, "ssim": 0.15, "psnr": 0.10},
        "SSIMULACRA 2 anchored; no downloaded weights needed.",
    )
)
register_profile(
    Profile(
        "seed",
        {"lpips": 0.3, "ssim": 0.3, "dists": 0.2, "psnr": 0.1},
        "The classic LPIPS/SSIM/DISTS/PSNR mix; needs AlexNet and VGG16 weights.",
    )
)
register_profile(
    Profile(
        "perceptual",
        {"lpips": 0.4, "ssimulacra2": 0.4, "ms_ssim": 0.2},
        "Learned perceptual distance with SSIMULACRA 2 and MS-SSIM; needs AlexNet weights.",
    )
)
register_profile(Profile("fast", {"ssim": 0.6, "psnr": 0.4}, "SSIM and PSNR only; for very large corpora."))


@dataclass(frozen=True)
class QualityLevels:
    """Composite thresholds, best first; a composite below the last threshold is ``lowest``."""

    thresholds: tuple[tuple[str, float], ...] = (
        ("excellent", 0.9),
        ("very_good", 0.8),
        ("good", 0.7),
        ("acceptable", 0.6),
        ("poor", 0.5),
    )
    lowest: str = "very_poor"

    def __post_init__(self) -> None:
        values = [t for _, t in self.thresholds]
        if any(b >= a for a, b in zip(values, values[1:])):
            raise InvalidParameterError(f"quality level thresholds must be strictly decreasing, got {values}")

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.thresholds] + [self.lowest]

    def level(self, composite: float) -> str:
        for name, threshold in self.thresholds:
            if composite >= threshold:
                return name
        return self.lowest

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, float], lowest: str = "very_poor") -> QualityLevels:
        ordered = sorted(mapping.items(), key=lambda kv: -kv[1])
        return cls(tuple((str(k), float(v)) for k, v in ordered), lowest)


DEFAULT_LEVELS = QualityLevels()


@dataclass(frozen=True)
class EvaluationResult:
    """Every metric's raw and normalised value, the composite and its level, for one pair."""

    scores: dict[str, float]
    normalised: dict[str, float]
    composite: float
    level: str
    profile: str
    weights: dict[str, float]
    metric_versions: dict[str, str]
    width: int
    height: int
    reference: str | None = None
    distorted: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (non-finite numbers as strings: :mod:`optimizer.jsonio`)."""
        data: dict[str, Any] = json_safe(asdict(self))
        return data

    def to_json(self, **kwargs: Any) -> str:
        return dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        values = dict(data)
        values["scores"] = {k: number_from_json(v) for k, v in data["scores"].items()}
        values["normalised"] = {k: number_from_json(v) for k, v in data["normalised"].items()}
        values["composite"] = number_from_json(data["composite"])
        return cls(**values)

    def meets(self, metric: str, target: float) -> bool:
        """Whether this result reaches ``target`` on ``metric`` (or ``"composite"``), by its direction."""
        if metric == "composite":
            return self.composite >= target
        return get_spec(metric).meets(self.scores[metric], target)


class Evaluator:
    """Scores distorted images against references with a set of metrics and a composite.

    ``Evaluator()`` uses the ``default`` profile. ``Evaluator(profile="perceptual")`` picks a named profile;
    ``Evaluator(weights={...})`` defines custom weights; ``Evaluator(metrics=[...])`` scores those metrics
    with equal weights (or, with ``profile``/``weights`` too, reports them beside the composite).
    Metric models load once per evaluator and are reused for every pair.
    """

    def __init__(
        self,
        profile: str | Profile | None = None,
        *,
        metrics: Sequence[str] | None = None,
        weights: Mapping[str, float] | None = None,
        levels: QualityLevels | None = None,
        device: str | None = None,
        background: tuple[float, float, float] = WHITE,
        resize_to_reference: bool = False,
        metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if weights is not None and profile is not None:
            raise InvalidParameterError("give either a profile or custom weights, not both")
        if weights is not None:
            self.profile = Profile("custom", dict(weights))
        elif profile is not None:
            self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        elif metrics:
            self.profile = Profile("custom", {m: 1.0 for m in metrics})
        else:
            self.profile = get_profile("default")
        names = list(self.profile.weights)
        for extra in metrics or ():
            get_spec(extra)
            if extra not in names:
                names.append(extra)
        self.metric_names: list[str] = names
        self.weights = self.profile.normalised_weights
        self.levels = levels or DEFAULT_LEVELS
        self.device = device or "cpu"
        self.background = background
        self.resize_to_reference = resize_to_reference
        self._metric_options = {k: dict(v) for k, v in (metric_options or {}).items()}
        for name in self._metric_options:
            if name not in self.metric_names:
                raise InvalidParameterError(f"options given for metric {name!r}, which this evaluator does not use")
        self._metrics: dict[str, Metric] | None = None
        self._lock = threading.Lock()

    # -- metric instances ----------------------------------------------------------------------------

    @property
    def metrics(self) -> dict[str, Metric]:
        """The metric instances, built on first use (loading network weights once)."""
        return self._build(None)

    def _build(self, allow_download: bool | None) -> dict[str, Metric]:
        if self._metrics is None:
            with self._lock:
                if self._metrics is None:
                    built = {}
                    for name in self.metric_names:
                        options = self._metric_options.get(name, {})
                        built[name] = create_metric(name, device=self.device, allow_download=allow_download, **options)
                    self._metrics = built
        return self._metrics

    def load(self, *, allow_download: bool | None = None) -> Evaluator:
        """Build every metric now (load weights), so that errors surface at start-up, not mid-batch.

        Args:
            allow_download: whether missing network weights may be downloaded; ``None`` follows
                ``OPTIMIZER_ALLOW_DOWNLOAD`` (default yes). A server passes ``False`` to never fetch.

        Returns:
            This evaluator.
        """
        self._build(allow_download)
        return self

    @property
    def metric_versions(self) -> dict[str, str]:
        return {name: get_spec(name).version for name in self.metric_names}

    def config(self) -> dict[str, Any]:
        """Keyword arguments that build an equivalent evaluator (e.g. in a worker process)."""
        return {
            "profile": self.profile if self.profile.name != "custom" else None,
            "weights": dict(self.profile.weights) if self.profile.name == "custom" else None,
            "metrics": list(self.metric_names),
            "levels": self.levels,
            "device": self.device,
            "background": self.background,
            "resize_to_reference": self.resize_to_reference,
            "metric_options": self._metric_options,
        }

    def describe(self) -> dict[str, Any]:
        """Profile, weights, metrics and versions: what presets and reports record."""
        return {
            "profile": self.profile.name,
            "weights": self.weights,
            "metrics": self.metric_names,
            "metric_versions": self.metric_versions,
            "levels": dict(self.levels.thresholds),
        }

    # -- scoring ------------------------------------------------------------------------------------

    def for_reference(
        self, reference: ImageSource | Image, *, name: str | None = None, max_memory: int | None = None
    ) -> ReferenceScorer:
        """A scorer that caches the reference side (pixels, filtered statistics, network features).

        Scoring memory is estimated from the pixel count first (:func:`~optimizer.imageio.limits.check_memory`,
        budget ``max_memory`` or ``OPTIMIZER_MAX_MEMORY``): too large an image is a
        :class:`~optimizer.errors.ResourceLimitError`, as is an allocation that fails anyway. Images are
        compared in sRGB: a file with a wide-gamut profile is converted for scoring, never clipped in silence
        elsewhere (loaded with ``color="keep"``, :meth:`Image.for_scoring` converts it).
        """
        image = load_image(reference, name=name, max_memory=max_memory, color="keep")
        return ReferenceScorer(self, image, max_memory=max_memory)

    def evaluate(self, reference: ImageSource | Image, distorted: ImageSource | Image) -> EvaluationResult:
        """Score one pair (paths, bytes, PIL images, arrays or :class:`Image`)."""
        return self.for_reference(reference).score(distorted)

    def composite_of(self, scores: Mapping[str, float]) -> tuple[dict[str, float], float]:
        """Normalised values and the weighted composite for raw ``scores``.

        When ``scores`` holds only some of the weighted metrics, the composite is the weighted mean over
        those present (weights renormalised); with none present it is NaN.
        """
        normalised = {name: get_spec(name).normalise(value) for name, value in scores.items()}
        present = {n: w for n, w in self.weights.items() if n in normalised}
        total = sum(present.values())
        if total <= 0:
            return normalised, math.nan
        composite = sum(w * normalised[n] for n, w in present.items()) / total
        return normalised, float(min(max(composite, 0.0), 1.0))

    def result_from_scores(
        self,
        scores: Mapping[str, float],
        *,
        width: int,
        height: int,
        reference: str | None = None,
        distorted: str | None = None,
        seconds: float = 0.0,
    ) -> EvaluationResult:
        normalised, composite = self.composite_of(scores)
        return EvaluationResult(
            scores=dict(scores),
            normalised=normalised,
            composite=composite,
            level=self.levels.level(composite),
            profile=self.profile.name,
            weights=dict(self.weights),
            metric_versions=self.metric_versions,
            width=width,
            height=height,
            reference=reference,
            distorted=distorted,
            seconds=seconds,
        )


class ReferenceScorer:
    """One reference, prepared once, scored against many candidates. Results equal the uncached path."""

    def __init__(self, evaluator: Evaluator, reference: Image, *, max_memory: int | None = None) -> None:
        import torch

        self.evaluator = evaluator
        self.reference = reference
        self._what = f"scoring a {reference.width}x{reference.height} image with {', '.join(evaluator.metric_names)}"
        needed = scoring_memory(evaluator.metric_names, reference.width, reference.height)
        check_memory(needed, self._what, reference.source, max_memory=max_memory)
        self._shared: dict[str, Any] = {}
        self._states: dict[str, Any] = {}
        with allocation_guard(self._what, reference.source), torch.inference_mode():
            self._tensor = reference.to_tensor(evaluator.device, background=evaluator.background)
            for name, metric in evaluator.metrics.items():
                self._states[name] = metric.prepare(self._tensor, self._shared)

    @property
    def size(self) -> tuple[int, int]:
        return self.reference.size

    def _distorted_tensor(self, distorted: ImageSource | Image) -> tuple[Image, torch.Tensor]:
        image = load_image(distorted, color="keep")  # compared in sRGB: for_scoring converts
        if image.size != self.reference.size:
            if not self.evaluator.resize_to_reference:
                raise ImageSizeMismatchError(
                    f"expected equal sizes, got {self.reference.width}x{self.reference.height} (reference "
                    f"{self.reference.source or ''}) and {image.width}x{image.height} (distorted "
                    f"{image.source or ''}); use resize_to_reference / --resize-to-reference to resize"
                )
            from .transforms import resize

            with allocation_guard(self._what, image.source):
                image = resize(image, width=self.reference.width, height=self.reference.height, filter="lanczos")
        with allocation_guard(self._what, image.source):
            return image, image.to_tensor(self.evaluator.device, background=self.evaluator.background)

    def score(self, distorted: ImageSource | Image, *, metrics: Iterable[str] | None = None) -> EvaluationResult:
        """Score one candidate; ``metrics`` restricts to a subset (the composite then uses only those)."""
        import torch

        started = time.perf_counter()
        names = list(metrics) if metrics is not None else self.evaluator.metric_names
        unknown = [n for n in names if n not in self._states]
        if unknown:
            raise UnknownNameError("metric of this evaluator", unknown[0], self.evaluator.metric_names)
        image, tensor = self._distorted_tensor(distorted)
        pair_shared: dict[str, Any] = {}
        scores: dict[str, float] = {}
        with allocation_guard(self._what, image.source or self.reference.source), torch.inference_mode():
            for name in names:
                metric = self.evaluator.metrics[name]
                scores[name] = float(metric.compute(self._states[name], tensor, pair_shared))
        return self.evaluator.result_from_scores(
            scores,
            width=self.reference.width,
            height=self.reference.height,
            reference=self.reference.source,
            distorted=image.source,
            seconds=time.perf_counter() - started,
        )

    def maps(self, distorted: ImageSource | Image) -> dict[str, np.ndarray]:
        """Spatial maps (H x W float32) from every metric that offers one, keyed by metric name."""
        import torch

        _, tensor = self._distorted_tensor(distorted)
        pair_shared: dict[str, Any] = {}
        out: dict[str, np.ndarray] = {}
        with allocation_guard(self._what, self.reference.source), torch.inference_mode():
            for name, metric in self.evaluator.metrics.items():
                if get_spec(name).has_map:
                    result = metric.compute_map(self._states[name], tensor, pair_shared)
                    if result is not None:
                        out[name] = result
        return out
