"""Measurements behind the reports and figures: baselines, the hardest images, crops, importances, tiers.

Everything here measures or tabulates; :mod:`optimizer.plots` and :mod:`optimizer.report` only draw what
it returns. Encodings are made exactly as a study's trials make them (:class:`Objective`, the item's width
and transform), and the baseline is one definition (:func:`~optimizer.tuning.settings.baseline_settings`)
shared with the study summary and the presets.

Study functions accept a :class:`~optimizer.tuning.study.TuningResult`, an ``optuna.Study`` created by
optimizer (its definition is stored with it) or a ``(study, definition)`` pair. Studies store corpus
names and a fingerprint, not pixels: functions that need pixels take the images again and refuse them,
through :func:`study_corpus`, unless they are the study's corpus (same names, pixels and widths).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..batch import iter_image_files
from ..errors import InvalidImageError, InvalidParameterError, PresetError, StudyError
from ..evaluator import Evaluator
from ..imageio import Image
from ..jsonio import number_from_json
from ..metrics.registry import get_spec
from .corpus import Corpus, load_corpus
from .objective import Objective
from .presets import Preset, PresetTier
from .records import (
    ATTR_BPP,
    ATTR_IMAGES,
    ATTR_QUALITY,
    ATTR_SETTINGS,
    ATTR_TOTAL_BYTES,
    BASELINE_ATTR,
    StudyDefinition,
    stored_definition,
    trial_number,
)
from .settings import EncodingSettings, baseline_settings
from .study import TuningResult
from .target import COMPOSITE, Target
from .tiers import build_preset

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = [
    "IMPORTANCE_EVALUATORS",
    "Baseline",
    "ImagesArg",
    "PresetsArg",
    "StudySource",
    "hardest_images",
    "importance_table",
    "measure_baseline",
    "resolve_presets",
    "study_corpus",
    "target_sign",
    "tier_point",
    "tier_trial",
    "tradeoff_table",
    "tuning_result",
]

StudySource = Union["TuningResult", "optuna.Study", "tuple[optuna.Study, StudyDefinition]"]


PresetsArg = Union["Preset", str, "os.PathLike[str]", None]


ImagesArg = Union["Corpus", str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]", Image]]]


IMPORTANCE_EVALUATORS: tuple[str, ...] = ("fanova", "ped-anova", "mdi")


def tuning_result(source: StudySource) -> TuningResult:
    """The :class:`TuningResult` view of any accepted study source (a result, a study, a ``load_study`` pair)."""
    if isinstance(source, TuningResult):
        return source
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], StudyDefinition):
        return TuningResult(study=source[0], definition=source[1], storage="")
    attrs = getattr(source, "user_attrs", None)
    if not isinstance(attrs, Mapping):
        raise InvalidParameterError(
            f"expected a TuningResult, an optuna.Study or a (study, definition) pair, got {type(source).__name__}"
        )
    definition = stored_definition(source)
    if definition is None:
        raise StudyError(f"study {source.study_name!r} was not created by optimizer (no stored definition)")
    return TuningResult.of(source, definition)


def resolve_presets(source: StudySource, presets: PresetsArg = "auto") -> Preset | None:
    """The tiers to show: a :class:`Preset`, a preset file, ``"auto"`` or ``None``.

    ``"auto"`` takes the result's presets or builds them from the study's trials; a study in which no trial
    met the target has no tiers then (``None``) rather than failing the figure.
    """
    if presets is None or isinstance(presets, Preset):
        return presets
    if isinstance(presets, str) and presets == "auto":
        result = tuning_result(source)
        if result.presets is not None:
            return result.presets
        try:
            return build_preset(result.study, storage=result.storage or None)
        except PresetError:
            return None
    return Preset.load(presets)


def tier_point(result: TuningResult, tier: PresetTier) -> tuple[float, float] | None:
    """Where a tier sits on the (bits per pixel, study quality) plane.

    Its own trial when the study holds it with the same settings; else the values the preset recorded, when
    they are in the study's metric; else nowhere.
    """
    goal = result.definition.target_obj
    trial = tier_trial(result, tier)
    if trial is not None:
        bpp, quality = trial_number(trial, ATTR_BPP), trial_number(trial, ATTR_QUALITY)
        if not (math.isnan(bpp) or math.isnan(quality)) and ATTR_SETTINGS in trial.user_attrs:
            return bpp, quality
    if tier.target_obj.metric == goal.metric and math.isfinite(tier.expected.quality):
        return float(tier.expected.bits_per_pixel), float(tier.expected.quality)
    return None


def tier_trial(result: TuningResult, tier: PresetTier) -> optuna.trial.FrozenTrial | None:
    """The study trial a tier came from, if the study holds it, complete, with the tier's settings."""
    if tier.trial_number is None:
        return None
    trial = next((t for t in result.study.get_trials(deepcopy=False) if t.number == tier.trial_number), None)
    if trial is None or trial.state.name != "COMPLETE":
        return None
    recorded = json.dumps(trial.user_attrs.get(ATTR_SETTINGS), sort_keys=True, default=str)
    return trial if recorded == json.dumps(tier.settings.to_dict(), sort_keys=True, default=str) else None


def _importance_evaluator(name: str, seed: int) -> tuple[Any, str, str | None]:
    """The Optuna evaluator for ``name``, its display name, and a note when it had to fall back."""
    import optuna

    if name not in IMPORTANCE_EVALUATORS:
        raise InvalidParameterError(
            f"importance evaluator must be one of {', '.join(IMPORTANCE_EVALUATORS)}, got {name!r}"
        )
    if name != "ped-anova":
        cls = (
            optuna.importance.FanovaImportanceEvaluator
            if name == "fanova"
            else optuna.importance.MeanDecreaseImpurityImportanceEvaluator
        )
        try:
            return cls(seed=seed), ("fANOVA" if name == "fanova" else "mean decrease impurity"), None
        except ImportError:
            note = f"{name} needs scikit-learn (pip install scikit-learn); PED-ANOVA was used instead"
            return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA", note
    return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA", None


def importance_table(
    source: StudySource,
    *,
    evaluator: str = "fanova",
    per_format: bool = True,
    min_trials: int = 4,
    seed: int = 0,
) -> pd.DataFrame:
    """Parameter importances for bytes and for quality, over all formats and within each format.

    Columns: ``scope`` (``all formats`` or a format name), ``param``, ``objective`` (``bytes`` or
    ``quality``), ``importance`` (normalised to sum to 1 per scope and objective). Encoder parameters exist
    only in their format's trials, so the all-formats scope sees the parameters every trial shares (the
    format itself); the per-format scopes show the encoder's own. ``df.attrs["evaluator"]`` names the method
    used and ``df.attrs["notes"]`` maps each scope left out (too few trials, nothing varied) to the reason.
    Uses :func:`optuna.importance.get_param_importances` on complete trials; ``evaluator`` is ``fanova``
    (scikit-learn; PED-ANOVA when it is missing, noted), ``ped-anova`` or ``mdi``.
    """
    import optuna
    import pandas as pd
    from optuna.search_space import intersection_search_space

    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 2:
        raise InvalidParameterError(f"min_trials must be an integer >= 2, got {min_trials!r}")
    result = tuning_result(source)
    sign = target_sign(result.definition.target_obj.metric)
    engine, engine_name, fallback = _importance_evaluator(evaluator, seed)
    complete = [
        t
        for t in result.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get(ATTR_TOTAL_BYTES) is not None and t.user_attrs.get(ATTR_QUALITY) is not None
    ]
    formats = [str(f) for f in result.definition.space.get("formats", [])]
    scopes: list[tuple[str, list[optuna.trial.FrozenTrial]]] = []
    if len(formats) > 1 or not per_format:
        scopes.append(("all formats", complete))
    if per_format:
        for fmt in formats:
            scopes.append((fmt, [t for t in complete if t.params.get("format", formats[0]) == fmt]))
    objectives: dict[str, Callable[[optuna.trial.FrozenTrial], float]] = {
        "bytes": lambda t: float(t.user_attrs[ATTR_TOTAL_BYTES]),
        # lower is better for both, which PED-ANOVA assumes (fANOVA is indifferent to the sign)
        "quality": lambda t: -sign * trial_number(t, ATTR_QUALITY),
    }
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for scope, trials in scopes:
        if len(trials) < min_trials:
            notes[scope] = f"{len(trials)} complete trial(s); importances need at least {min_trials}"
            continue
        space = intersection_search_space(trials)
        params = sorted(p for p in space if not (scope != "all formats" and p == "format"))
        params = [p for p in params if len({repr(t.params[p]) for t in trials}) > 1]
        if not params:
            notes[scope] = "no searched parameter varied across these trials"
            continue
        for objective, value_of in objectives.items():
            values = [value_of(t) for t in trials]
            if max(values) - min(values) <= 1e-12 * max(1.0, abs(max(values))):
                notes[f"{scope}: {objective}"] = f"{objective} did not vary across these trials"
                continue
            importances = _importances(trials, params, value_of, engine)
            if importances is None:
                notes[f"{scope}: {objective}"] = f"{engine_name} could not assess these trials"
                continue
            for param in params:
                rows.append(
                    {"scope": scope, "param": param, "objective": objective, "importance": importances.get(param, 0.0)}
                )
    table = pd.DataFrame(rows, columns=["scope", "param", "objective", "importance"])
    table.attrs["evaluator"] = engine_name
    table.attrs["notes"] = notes
    table.attrs["fallback"] = fallback
    table.attrs["trials"] = len(complete)
    return table


def _importances(
    trials: Sequence[optuna.trial.FrozenTrial],
    params: list[str],
    value_of: Callable[[optuna.trial.FrozenTrial], float],
    engine: Any,
) -> dict[str, float] | None:
    """Importances of ``params`` for one value over ``trials``, in a throwaway in-memory study."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="minimize")
        study.add_trials(
            optuna.trial.create_trial(
                params={p: t.params[p] for p in params},
                distributions={p: t.distributions[p] for p in params},
                value=value_of(t),
            )
            for t in trials
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=engine, params=params))
    except (ValueError, RuntimeError, ZeroDivisionError, FloatingPointError):
        return None
    finally:
        optuna.logging.set_verbosity(verbosity)


@dataclass(frozen=True)
class Baseline:
    """What a reference encoding costs on the study corpus, to state each tier's savings against."""

    label: str
    total_bytes: int
    bits_per_pixel: float
    quality: float | None = None
    settings: EncodingSettings | None = None


def measure_baseline(
    source: StudySource,
    corpus: Corpus | None = None,
    settings: EncodingSettings | None = None,
    *,
    evaluator: Evaluator | None = None,
    label: str | None = None,
) -> Baseline:
    """What ``settings`` (default: :func:`~optimizer.tuning.settings.baseline_settings`) cost on the study
    corpus, scored as the study scored its trials.

    The study's own measurement is reused when it stored one for these settings (every study measures its
    baseline once); otherwise ``corpus`` (the study's images, see :func:`study_corpus`) is encoded through
    the study's objective, so bytes, bits per pixel and the aggregate are comparable with every trial.
    Raises :class:`InvalidParameterError` when a measurement is needed and no corpus is given.
    """
    result = tuning_result(source)
    definition = result.definition
    settings = settings or baseline_settings()
    stored = result.study.user_attrs.get(BASELINE_ATTR)
    if evaluator is None and stored is not None and stored.get("settings") == settings.to_dict():
        measured = stored
    elif corpus is None:
        raise InvalidParameterError(
            f"study {result.study_name!r} holds no measurement of {settings.label()}; give its images to measure it"
        )
    else:
        objective = Objective.from_definition(definition, corpus, evaluator=evaluator)
        measured = objective.measure_settings(settings)
    return Baseline(
        label or settings.label(),
        int(measured["total_bytes"]),
        number_from_json(measured["bits_per_pixel"]),
        number_from_json(measured["quality"]),
        settings,
    )


def tradeoff_table(
    source: StudySource, presets: PresetsArg = "auto", *, baseline: Baseline | None = None
) -> pd.DataFrame:
    """The preset tiers side by side: format, settings, bits per pixel, quality, bytes, savings.

    One row per tier (``default`` marks the tier ``apply`` uses); ``quality`` is the aggregate of the
    tier's target metric. With a :class:`Baseline` a last row shows it and ``savings`` is each row's byte
    saving against it (0.25 = a quarter fewer bytes); ``df.attrs["baseline"]`` names it.
    """
    import pandas as pd

    preset = resolve_presets(source, presets)
    columns = ["tier", "default", "target", "format", "settings", "bits_per_pixel", "quality", "total_bytes", "trial"]
    if baseline is not None:
        columns.append("savings")
    rows: list[dict[str, Any]] = []
    for tier in preset.tiers if preset is not None else []:
        row: dict[str, Any] = {
            "tier": tier.name,
            "default": preset is not None and tier.name == preset.default,
            "target": tier.target,
            "format": tier.codec,
            "settings": tier.label(),
            "bits_per_pixel": tier.expected.bits_per_pixel,
            "quality": tier.expected.quality,
            "total_bytes": tier.expected.total_bytes,
            "trial": tier.trial_number,
        }
        if baseline is not None:
            row["savings"] = (
                1.0 - tier.expected.total_bytes / baseline.total_bytes if baseline.total_bytes else math.nan
            )
        rows.append(row)
    if baseline is not None:
        rows.append(
            {
                "tier": "baseline",
                "default": False,
                "target": "",
                "format": baseline.settings.codec if baseline.settings is not None else "",
                "settings": baseline.settings.label() if baseline.settings is not None else baseline.label,
                "bits_per_pixel": baseline.bits_per_pixel,
                "quality": math.nan if baseline.quality is None else baseline.quality,
                "total_bytes": baseline.total_bytes,
                "trial": None,
                "savings": 0.0,
            }
        )
    table = pd.DataFrame(rows, columns=columns)
    table["trial"] = table["trial"].astype("Int64")
    table.attrs["baseline"] = baseline.label if baseline is not None else None
    return table


def study_corpus(source: StudySource, images: ImagesArg) -> Corpus:
    """The study's corpus rebuilt from ``images`` (files, folders, or :class:`Image` objects), verified.

    Files are picked by the names the study recorded, so a folder holding more images than the study used
    is fine; the pixels, names and widths must then give the study's corpus fingerprint. A path that is not
    there or cannot be read is an :class:`~optimizer.errors.InvalidImageError` naming it. Raises
    :class:`~optimizer.errors.InvalidParameterError` saying what differs when they do not.
    """
    result = tuning_result(source)
    recorded = result.definition.corpus
    expected = recorded.get("fingerprint")
    name = result.study_name
    if isinstance(images, Corpus):
        corpus = images
    else:
        space = result.definition.space_obj
        entries = [images] if isinstance(images, (str, os.PathLike)) else list(images)
        if not entries:
            raise InvalidParameterError(f"no images given to rebuild study {name!r}'s corpus")
        objects = [e for e in entries if isinstance(e, Image)]
        if objects:
            if len(objects) != len(entries):
                raise InvalidParameterError("give either Image objects or paths, not both")
            corpus = load_corpus(objects, widths=space.widths, reference_transform=space.reference_transform)
        else:
            files: list[Path] = []
            for entry in entries:
                path = Path(entry)  # type: ignore[arg-type]  # not an Image: checked above
                if path.is_dir():
                    files.extend(iter_image_files(path))
                elif path.is_file():
                    files.append(path)
                elif path.exists() or path.is_symlink():
                    raise InvalidImageError("not an image file or a folder (a FIFO, device or broken link)", path)
                else:
                    raise InvalidImageError("no such file or folder", path)
            names = [str(n) for n in recorded.get("names") or []]
            if names:
                by_name: dict[str, Path] = {}
                for file in files:
                    by_name.setdefault(file.name, file)
                missing = [n for n in names if n not in by_name]
                if missing:
                    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                    raise InvalidParameterError(
                        f"the images given are not the corpus of study {name!r}: {len(missing)} of its {len(names)} "
                        f"images are missing ({shown})"
                    )
                files = [by_name[n] for n in names]
            corpus = load_corpus(files, widths=space.widths, reference_transform=space.reference_transform)
    if corpus.fingerprint != expected:
        raise InvalidParameterError(
            f"the images given are not the corpus of study {name!r}: their fingerprint is {corpus.fingerprint}, "
            f"the study's is {expected} ({len(corpus.names)} images given, the study used {recorded.get('images')}); "
            "same names but other pixels (another crop or size, edited files) give another fingerprint"
        )
    return corpus


def hardest_images(trial: optuna.trial.FrozenTrial, target: Target | str, count: int = 3) -> list[dict[str, Any]]:
    """The ``count`` images a trial scored worst on ``target``'s metric, worst first.

    Each entry: ``name``, ``quality`` (the target metric, or the composite), ``bits_per_pixel``, ``bytes``.
    Read from the per-image records the objective stores on every trial.
    """
    goal = Target.parse(target)
    records = trial.user_attrs.get(ATTR_IMAGES) or []
    rows = []
    for record in records:
        value = record.get("composite") if goal.metric == COMPOSITE else (record.get("scores") or {}).get(goal.metric)
        value = None if value is None else number_from_json(value)
        if value is None:
            continue
        rows.append(
            {
                "name": record["name"],
                "quality": float(value),
                "bits_per_pixel": number_from_json(record.get("bits_per_pixel", "nan")),
                "bytes": int(record.get("bytes", 0)),
            }
        )
    sign = 1.0 if goal.higher_is_better else -1.0
    rows.sort(key=lambda r: (sign * r["quality"] if not math.isnan(r["quality"]) else -math.inf, r["name"]))
    return rows[: max(0, int(count))]


def target_sign(metric: str) -> float:
    """+1 where higher values are better, -1 for distances."""
    return 1.0 if metric == COMPOSITE or get_spec(metric).higher_is_better else -1.0
