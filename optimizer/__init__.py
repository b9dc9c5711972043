"""optimizer: find the smallest image encodings that still look right.

The public API is re-exported here. Heavy parts (torch, Optuna, the web service) are imported on first use
of the name that needs them, so ``import optimizer`` and ``optimizer --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CodecUnavailableError,
    ConfigError,
    EncodeError,
    ImageSizeMismatchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidParameterError,
    NoPresetError,
    OptimizerError,
    PresetError,
    QualityCheckError,
    StudyError,
    StudyStorageError,
    UnknownNameError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

# name -> module that defines it (imported lazily on first attribute access)
_LAZY: dict[str, str] = {
    "Image": ".imageio",
    "ImageInfo": ".imageio",
    "Metadata": ".imageio",
    "MetadataPolicy": ".imageio",
    "load_image": ".imageio",
    "set_max_pixels": ".imageio",
    "Codec": ".codecs",
    "Param": ".codecs",
    "get_codec": ".codecs",
    "codec_names": ".codecs",
    "Transform": ".transforms",
    "resize": ".transforms",
    "sharpen": ".transforms",
    "MetricSpec": ".metrics",
    "get_spec": ".metrics",
    "metric_names": ".metrics",
    "create_metric": ".metrics",
    "Evaluator": ".evaluator",
    "EvaluationResult": ".evaluator",
    "ReferenceScorer": ".evaluator",
    "Profile": ".evaluator",
    "PROFILES": ".evaluator",
    "QualityLevels": ".evaluator",
    "get_profile": ".evaluator",
    "load_config": ".config",
    "EvaluatorConfig": ".config",
    "evaluate_folders": ".batch",
    "BatchReport": ".batch",
    "evaluate_set": ".metrics.fid",
    "FIDResult": ".metrics.fid",
    "tune": ".tuning.study",
    "TuningResult": ".tuning.results",
    "load_study": ".tuning.study",
    "SearchSpace": ".tuning.space",
    "Target": ".tuning.target",
    "EncodingSettings": ".tuning.settings",
    "Preset": ".tuning.presets",
    "PresetTier": ".tuning.presets",
    "build_preset": ".tuning.tiers",
    "TuneConfig": ".tuning.config",
    "apply_preset": ".tuning.apply",
    "ApplyReport": ".tuning.apply",
    "compress": ".tuning.adaptive",
    "CompressReport": ".tuning.adaptive",
    "CompressResult": ".tuning.adaptive",
    "QualityMonitor": ".monitor",
    "Alert": ".monitor",
    "FolderWatcher": ".monitor",
    "run_gate": ".gate",
    "create_app": ".service",
    "ServiceConfig": ".service",
    "GateReport": ".gate",
}

__all__ = [
    "CodecUnavailableError",
    "ConfigError",
    "EncodeError",
    "ImageSizeMismatchError",
    "ImageTooLargeError",
    "InvalidImageError",
    "InvalidParameterError",
    "OptimizerError",
    "PresetError",
    "QualityCheckError",
    "NoPresetError",
    "StudyError",
    "StudyStorageError",
    "UnknownNameError",
    "WeightsNotFoundError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'optimizer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .batch import BatchReport, evaluate_folders
    from .codecs import Codec, Param, codec_names, get_codec
    from .config import EvaluatorConfig, load_config
    from .evaluator import (
        PROFILES,
        EvaluationResult,
        Evaluator,
        Profile,
        QualityLevels,
        ReferenceScorer,
        get_profile,
    )
    from .gate import GateReport, run_gate
    from .imageio import Image, ImageInfo, Metadata, MetadataPolicy, load_image, set_max_pixels
    from .metrics import MetricSpec, create_metric, get_spec, metric_names
    from .metrics.fid import FIDResult, evaluate_set
    from .monitor import Alert, FolderWatcher, QualityMonitor
    from .service import ServiceConfig, create_app
    from .transforms import Transform, resize, sharpen
    from .tuning.adaptive import CompressReport, CompressResult, compress
    from .tuning.apply import ApplyReport, apply_preset
    from .tuning.config import TuneConfig
    from .tuning.presets import Preset, PresetTier
    from .tuning.settings import EncodingSettings
    from .tuning.space import SearchSpace
    from .tuning.study import TuningResult, load_study, tune
    from .tuning.target import Target
    from .tuning.tiers import build_preset
