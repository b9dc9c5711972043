"""Response models and examples for the OpenAPI schema (``/docs``, ``/openapi.json``).

Numbers that can be non-finite (PSNR of identical images is infinite) are written as the strings
``"inf"``, ``"-inf"`` or ``"nan"``, since JSON has no such numbers; their type is ``number | string``.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchResponse",
    "CompressResponse",
    "ErrorResponse",
    "HealthResponse",
    "PairResponse",
    "PresetListResponse",
    "ReadyResponse",
]

Number = Union[float, str]

_WEIGHTS = {"ssimulacra2": 0.55, "ms_ssim": 0.2, "ssim": 0.15, "psnr": 0.1}
_VERSIONS = {"ssimulacra2": "2.1", "ms_ssim": "1", "ssim": "1", "psnr": "1"}
_EVALUATOR: dict[str, Any] = {
    "profile": "default",
    "weights": _WEIGHTS,
    "metrics": list(_WEIGHTS),
    "metric_versions": _VERSIONS,
    "levels": {"excellent": 0.9, "very_good": 0.8, "good": 0.7, "acceptable": 0.6, "poor": 0.5},
}
PAIR_EXAMPLE: dict[str, Any] = {
    "key": "kodim23.jpg",
    "reference": "kodim23.png",
    "distorted": "kodim23.jpg",
    "reference_bytes": 557596,
    "distorted_bytes": 41907,
    "bits_per_pixel": 0.8526,
    "byte_ratio": 0.07516,
    "scores": {"ssimulacra2": 76.733, "ms_ssim": 0.98655, "ssim": 0.94094, "psnr": 37.115},
    "normalised": {"ssimulacra2": 0.76733, "ms_ssim": 0.77585, "ssim": 0.75392, "psnr": 0.73717},
    "composite": 0.7640,
    "level": "good",
    "profile": "default",
    "weights": _WEIGHTS,
    "metric_versions": _VERSIONS,
    "width": 768,
    "height": 512,
    "seconds": 0.142,
}


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="Stable machine-readable error name, e.g. invalid_image, too_large, overloaded.")
    message: str = Field(description="What went wrong: the rule and the actual values.")


class ErrorResponse(BaseModel):
    """Every error has this shape; extra keys (limit, field, kind, known) depend on the type."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "type": "size_mismatch",
                        "message": "expected equal sizes, got 768x512 (original 'a.png') and 512x768 (processed 'a.jpg')",
                    }
                }
            ]
        }
    )

    error: ErrorInfo


class PairResponse(BaseModel):
    """One scored pair: every metric's raw and normalised value, the composite and level, sizes and bytes.

    ``reference`` is the original upload and ``distorted`` the processed one (the names the batch reports
    and the CLI use); ``bits_per_pixel`` and ``byte_ratio`` are those of the processed file.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [PAIR_EXAMPLE]})

    key: str
    reference: str
    distorted: str
    reference_bytes: int
    distorted_bytes: int
    bits_per_pixel: float
    byte_ratio: Number
    scores: dict[str, Number] = Field(description="Raw value per metric, in the metric's own unit.")
    normalised: dict[str, Number] = Field(description="Per metric, 0 (worst) to 1 (best), direction applied.")
    composite: Number = Field(description="Weighted mean of the normalised values, 0 to 1.")
    level: str = Field(
        description="Quality level of the composite: excellent, very_good, good, acceptable, poor, very_poor."
    )
    profile: str
    weights: dict[str, float]
    metric_versions: dict[str, str]
    width: int
    height: int
    seconds: float = Field(description="Time spent scoring (decoding and queueing excluded).")


class MetricSummary(BaseModel):
    mean: Number
    median: Number
    p10: Number
    p90: Number
    worst: Number
    worst_pair: str


class BytesSummary(BaseModel):
    reference_total: int
    distorted_total: int
    ratio: Optional[Number] = None
    bits_per_pixel: Number


class BatchSummary(BaseModel):
    count: int = Field(description="Pairs scored.")
    unpaired: int
    failed: int
    metrics: dict[str, MetricSummary] = Field(default_factory=dict)
    levels: dict[str, int] = Field(default_factory=dict)
    bytes: Optional[BytesSummary] = None


class BatchIssue(BaseModel):
    path: str = Field(description="The processed file (or archive entry) concerned.")
    reason: str
    kind: str = Field(description="unpaired (no partner, ambiguous name) or failed (could not be scored).")
    type: Optional[str] = Field(default=None, description="The error type a single request would have got.")


class EvaluatorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    profile: str
    weights: dict[str, float]
    metrics: list[str]
    metric_versions: dict[str, str]
    levels: dict[str, float]


class BatchResponse(BaseModel):
    """Per-pair results, the entries left out (with reasons), and a summary over the scored pairs."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "evaluator": _EVALUATOR,
                    "summary": {
                        "count": 1,
                        "unpaired": 1,
                        "failed": 1,
                        "metrics": {
                            "composite": {
                                "mean": 0.764,
                                "median": 0.764,
                                "p10": 0.764,
                                "p90": 0.764,
                                "worst": 0.764,
                                "worst_pair": "0",
                            }
                        },
                        "levels": {
                            "excellent": 0,
                            "very_good": 0,
                            "good": 1,
                            "acceptable": 0,
                            "poor": 0,
                            "very_poor": 0,
                        },
                        "bytes": {
                            "reference_total": 557596,
                            "distorted_total": 41907,
                            "ratio": 0.07516,
                            "bits_per_pixel": 0.8526,
                        },
                    },
                    "pairs": [{**PAIR_EXAMPLE, "key": "0"}],
                    "issues": [
                        {
                            "path": "broken.jpg",
                            "reason": "broken.jpg: cannot read image header (corrupt or truncated)",
                            "kind": "failed",
                            "type": "invalid_image",
                        },
                        {
                            "path": "original_2",
                            "reason": "no processed_2 for original_2",
                            "kind": "unpaired",
                            "type": None,
                        },
                    ],
                }
            ]
        }
    )

    evaluator: EvaluatorInfo
    summary: BatchSummary
    pairs: list[PairResponse]
    issues: list[BatchIssue]


class FormatOutcomeModel(BaseModel):
    format: str
    axis: str
    probes: int
    met: bool
    setting: Optional[Union[int, float]] = None
    params: Optional[dict[str, Any]] = None
    bytes: Optional[int] = None
    quality: Optional[Number] = None
    certified: bool = False
    note: Optional[str] = None


class CompressResponse(BaseModel):
    """The smallest encoding found that meets the target, the search's report, and the file (base64)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "input": "kodim23.png",
                    "format": "webp",
                    "setting": 83,
                    "params": {"quality": 83, "method": 4, "lossless": False},
                    "bytes": 30512,
                    "original_bytes": 557596,
                    "saved": 0.9453,
                    "width": 768,
                    "height": 512,
                    "bits_per_pixel": 0.6207,
                    "quality": 80.41,
                    "target": "ssimulacra2:80",
                    "met": True,
                    "kept_original": False,
                    "minimal": True,
                    "probes": {"avif": 4, "webp": 3, "jpeg": 2},
                    "total_probes": 9,
                    "formats": [
                        {
                            "format": "webp",
                            "axis": "quality",
                            "probes": 3,
                            "met": True,
                            "setting": 83,
                            "params": {"quality": 83},
                            "bytes": 30512,
                            "quality": 80.41,
                            "certified": True,
                            "note": None,
                        }
                    ],
                    "scores": {"ssimulacra2": 80.41, "ms_ssim": 0.9902, "ssim": 0.9561, "psnr": 38.9},
                    "seconds": 1.84,
                    "reason": None,
                    "media_type": "image/webp",
                    "extension": ".webp",
                    "evaluator": _EVALUATOR,
                    "data_base64": "UklGRuR2AABXRUJQVlA4INh2AA...",
                }
            ]
        }
    )

    input: str
    format: str
    setting: Optional[Union[int, float]] = None
    params: dict[str, Any]
    bytes: int
    original_bytes: int = Field(description="Size of the upload.")
    saved: Optional[float] = Field(default=None, description="1 - bytes / original_bytes (negative when larger).")
    width: int
    height: int
    bits_per_pixel: float
    quality: Optional[Number] = Field(default=None, description="The target metric's value for the returned file.")
    target: str
    met: bool = Field(
        description="Whether the returned file meets the target (false: the best-quality "
        "candidate is returned and reason says why)."
    )
    kept_original: bool
    minimal: bool = Field(description="The next lower setting was probed and failed the target.")
    probes: dict[str, int]
    total_probes: int
    formats: list[FormatOutcomeModel]
    scores: dict[str, Number]
    seconds: float
    reason: Optional[str] = None
    media_type: str
    extension: str
    evaluator: EvaluatorInfo
    data_base64: Optional[str] = Field(default=None, description="The encoded file, base64 (standard alphabet).")


class TierSummary(BaseModel):
    tier: str
    default: bool
    target: str
    codec: str
    settings: str
    bits_per_pixel: Optional[float] = None
    total_bytes: int
    quality: Optional[float] = None
    trial: Optional[int] = None


class PresetSummary(BaseModel):
    name: str = Field(description="The preset file's stem; GET /presets/{name} returns the whole file.")
    default_tier: str
    mode: str
    target: str
    aggregate: str
    study: Optional[str] = None
    created: str
    optimizer_version: str
    fingerprint: str
    tiers: list[TierSummary]


class PresetListResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "presets": [
                        {
                            "name": "web",
                            "default_tier": "target",
                            "mode": "constrained",
                            "target": "ssimulacra2:80",
                            "aggregate": "p10",
                            "study": "corpus",
                            "created": "2025-01-01T00:00:00+00:00",
                            "optimizer_version": "0.1.0",
                            "fingerprint": "3f2a9c1b7d0e4a55",
                            "tiers": [
                                {
                                    "tier": "target",
                                    "default": True,
                                    "target": "ssimulacra2:80",
                                    "codec": "avif",
                                    "settings": "avif quality=58 speed=6",
                                    "bits_per_pixel": 0.61,
                                    "total_bytes": 240311,
                                    "quality": 80.3,
                                    "trial": 41,
                                }
                            ],
                        }
                    ]
                }
            ]
        }
    )

    presets: list[PresetSummary]


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "version": "0.1.0"}]})

    status: str
    version: str


class PoolInfo(BaseModel):
    workers: int
    max_queue: int
    running: int
    waiting: int


class MemoryInfo(BaseModel):
    budget: int = Field(description="Bytes of scoring memory admitted requests may hold at once.")
    held: int = Field(description="Bytes of that budget held now (estimated from the images' headers).")
    buffered_limit: int = Field(description="Bytes of request bodies held at once, at most.")
    buffered: int = Field(description="Bytes of request bodies held now.")


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "profiles": ["default", "fast"],
                    "default_profile": "default",
                    "metrics": ["ssimulacra2", "ms_ssim", "ssim", "psnr"],
                    "presets": ["web"],
                    "pool": {"workers": 2, "max_queue": 32, "running": 0, "waiting": 0},
                    "memory": {
                        "budget": 8589934592,
                        "held": 0,
                        "buffered_limit": 209715200,
                        "buffered": 0,
                    },
                    "error": None,
                }
            ]
        }
    )

    ready: bool
    profiles: list[str]
    default_profile: str
    metrics: list[str]
    presets: list[str]
    pool: PoolInfo
    memory: Optional[MemoryInfo] = None
    error: Optional[str] = None
