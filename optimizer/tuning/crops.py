"""The hardest images of a tier as crops, and damage maps of a pair: the pixels behind the report's figures.

Each crop re-encodes an image exactly as the study's trial did (the item's width and transform) and sits
where its damage map is worst. Damage maps show where a pair differs: ``|difference|`` (mean absolute
RGB difference) or a metric's spatial map as damage (:meth:`MetricSpec.damage`; SSIM as ``1 - SSIM``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InvalidParameterError, PresetError
from ..evaluator import Evaluator
from ..heatmaps import DIFFERENCE, fixed_scale, legend_label
from ..imageio import Image
from ..metrics.registry import get_spec
from .analysis import (
    ImagesArg,
    PresetsArg,
    StudySource,
    hardest_images,
    resolve_presets,
    study_corpus,
    tier_trial,
    tuning_result,
)
from .corpus import Corpus, CorpusItem
from .results import TuningResult
from .settings import EncodedImage, EncodingSettings
from .target import COMPOSITE, Target

__all__ = ["CropComparison", "PairMaps", "hardest_crops", "map_title", "pair_maps"]


@dataclass(frozen=True, eq=False)
class CropComparison:
    """One crop of one image at one tier: the reference, the decoded candidate and its damage map.

    Arrays are ``h x w x 3`` float32 RGB in [0, 1] (composited as scored) and an ``h x w`` damage map
    (0 = no damage; for SSIM it is ``1 - SSIM``). ``box`` is ``(x, y, width, height)`` in the image;
    ``damage_scale`` is the value drawn brightest: the map's fixed scale (:func:`optimizer.heatmaps.
    fixed_scale`), the same for every image and tier so that crops compare.
    """

    tier: str
    name: str
    quality: float
    metric: str
    bits_per_pixel: float
    box: tuple[int, int, int, int]
    original: np.ndarray
    candidate: np.ndarray
    damage: np.ndarray
    map_name: str
    damage_scale: float
    settings: str

    @property
    def map_title(self) -> str:
        """``1 - SSIM``, ``|difference|`` or ``<metric> map``: what the damage panel shows."""
        return map_title(self.map_name)

    @property
    def legend(self) -> str:
        """What the damage panel's colour bar measures (:func:`optimizer.heatmaps.legend_label`)."""
        return legend_label(self.map_name)


def _damage_map(kind: str, reference: Image, decoded: Image, evaluator: Evaluator | None) -> np.ndarray:
    if kind == "difference":
        difference: np.ndarray = np.abs(reference.for_scoring() - decoded.for_scoring()).mean(axis=2)
        return difference.astype(np.float32)
    scorer = (evaluator or Evaluator(metrics=[kind])).for_reference(reference)
    maps = scorer.maps(decoded)
    if kind not in maps:
        raise InvalidParameterError(
            f"metric {kind!r} offers no spatial map; use ssim, ssimulacra2, lpips or difference"
        )
    return get_spec(kind).damage(maps[kind])


def _worst_window(damage: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """The ``size`` x ``size`` window (clipped to the image) with the most damage."""
    h, w = damage.shape
    ch, cw = min(size, h), min(size, w)
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = np.nan_to_num(damage, nan=0.0).cumsum(0).cumsum(1)
    sums = integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), int(cw), int(ch)


def _encode_item(item: CorpusItem, settings: EncodingSettings) -> EncodedImage:
    """``settings`` applied to one corpus item exactly as a study trial applies them (at the item's width)."""
    return EncodingSettings(settings.codec, settings.params, item.candidate_transform(settings.transform)).encode(
        item.source
    )


def _item_qualities(
    corpus: Corpus, settings: EncodingSettings, target: Target, evaluator: Evaluator
) -> list[dict[str, Any]]:
    """Score every corpus item with ``settings`` (for tiers whose trial the study does not hold)."""
    rows: list[dict[str, Any]] = []
    for item in corpus.items:
        encoded = _encode_item(item, settings)
        quality = target.value_of(evaluator.for_reference(item.reference).score(encoded.decoded))
        rows.append(
            {
                "name": item.name,
                "quality": float(quality),
                "bits_per_pixel": encoded.bits_per_pixel,
                "bytes": encoded.bytes,
            }
        )
    sign = 1.0 if target.higher_is_better else -1.0
    rows.sort(key=lambda r: (sign * float(r["quality"]), str(r["name"])))
    return rows


def hardest_crops(
    source: StudySource,
    images: ImagesArg,
    *,
    presets: PresetsArg = "auto",
    tier: str | None = None,
    count: int = 3,
    crop: int = 160,
    damage_map: Literal["ssim", "difference"] | str = "ssim",
) -> list[CropComparison]:
    """Crops of the ``count`` hardest images at a tier, each where its damage is worst.

    The hardest images are those the tier's trial scored lowest on the tier's target metric (from the
    per-image scores it recorded; a tier whose trial the study does not hold is scored afresh). Each is
    re-encoded with the tier's settings, exactly as the trial did, and compared with its reference.
    ``images`` must rebuild the study corpus (see :func:`study_corpus`). ``damage_map``: ``ssim`` (1 - SSIM),
    ``difference`` (mean absolute RGB difference) or another metric with a spatial map.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidParameterError(f"count must be an integer >= 1, got {count!r}")
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 8:
        raise InvalidParameterError(f"crop must be an integer >= 8 pixels, got {crop!r}")
    result = tuning_result(source)
    preset = resolve_presets(result, presets)
    if preset is None:
        raise PresetError(f"study {result.study_name!r} has no preset tiers to compare (no trial met its target)")
    chosen = preset.tier(tier)
    corpus = study_corpus(result, images)
    target = chosen.target_obj
    trial = tier_trial(result, chosen)
    ranked = hardest_images(trial, target, len(corpus.items)) if trial is not None else []
    if len(ranked) != len(corpus.items):
        evaluator = _scoring_evaluator(result, target)
        ranked = _item_qualities(corpus, chosen.settings, target, evaluator)
    items = {item.name: item for item in corpus.items}
    map_evaluator = None
    if damage_map != "difference":
        map_evaluator = Evaluator(metrics=[damage_map])
    out = []
    for row in ranked[:count]:
        item: CorpusItem | None = items.get(row["name"])
        if item is None:
            continue
        decoded = _encode_item(item, chosen.settings).decoded
        damage = _damage_map(damage_map, item.reference, decoded, map_evaluator)
        scale = fixed_scale(damage_map)
        x, y, w, h = _worst_window(damage, crop)
        window = (slice(y, y + h), slice(x, x + w))
        out.append(
            CropComparison(
                tier=chosen.name,
                name=item.name,
                quality=row["quality"],
                metric=target.metric,
                bits_per_pixel=row["bits_per_pixel"],
                box=(x, y, w, h),
                original=item.reference.for_scoring()[window].astype(np.float32),
                candidate=decoded.for_scoring()[window].astype(np.float32),
                damage=damage[window],
                map_name=damage_map,
                damage_scale=scale,
                settings=chosen.label(),
            )
        )
    return out


def _scoring_evaluator(result: TuningResult, target: Target) -> Evaluator:
    """The study's evaluator, plus the target's metric when it is not one of them."""
    info = result.definition.evaluator
    metrics = [str(m) for m in info.get("metrics") or []]
    if target.metric != COMPOSITE and target.metric not in metrics:
        metrics.append(target.metric)
    return Evaluator(weights=info["weights"], metrics=metrics)


def map_title(kind: str) -> str:
    return {"ssim": "1 - SSIM", "difference": "|difference|"}.get(kind, f"{kind} map")


@dataclass(frozen=True, eq=False)
class PairMaps:
    """One pair's images, scores and damage maps (0 = no damage), each with its fixed scale (the value drawn
    brightest, :func:`optimizer.heatmaps.fixed_scale`)."""

    reference: Image
    distorted: Image
    scores: Mapping[str, float]
    damage: Mapping[str, np.ndarray]
    scales: Mapping[str, float]
    names: tuple[str, str]


def pair_maps(
    reference: Any,
    distorted: Any,
    *,
    metrics: Sequence[str] = ("ssim", "ssimulacra2"),
    evaluator: Evaluator | None = None,
) -> PairMaps:
    """Score a pair and compute its damage maps: ``|difference|`` (mean absolute RGB difference) and each
    metric's spatial map as damage (:meth:`MetricSpec.damage`; SSIM as ``1 - SSIM``).

    ``reference`` and ``distorted``: anything :func:`~optimizer.imageio.load_image` reads.
    """
    from ..imageio import load_image

    ref = reference if isinstance(reference, Image) else load_image(reference, color="keep")
    dist = distorted if isinstance(distorted, Image) else load_image(distorted, color="keep")
    evaluator = evaluator or Evaluator(metrics=list(metrics))
    scorer = evaluator.for_reference(ref)
    result = scorer.score(dist)
    damage: dict[str, np.ndarray] = {
        DIFFERENCE: np.abs(ref.for_scoring() - dist.for_scoring()).mean(axis=2).astype(np.float32)
    }
    for name, arr in scorer.maps(dist).items():
        damage[name] = get_spec(name).damage(arr)
    names = (
        Path(ref.source).name if ref.source else "reference",
        Path(dist.source).name if dist.source else "distorted",
    )
    return PairMaps(ref, dist, dict(result.scores), damage, {k: fixed_scale(k) for k in damage}, names)
