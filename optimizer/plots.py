"""Figures and tables of studies, presets and image pairs: one code path for notebooks and the HTML report.

Every plotting function returns a :class:`matplotlib.figure.Figure` built directly, never through
``pyplot``: nothing is added to pyplot's global list of open figures, so a report that draws hundreds of
figures leaks none, and the functions work in headless processes whatever backend is configured. A notebook
displays a returned figure as the last expression of a cell (``%matplotlib inline``); a script saves it with
``fig.savefig(path)``.

Study figures accept a :class:`~optimizer.tuning.study.TuningResult`, an ``optuna.Study`` created by
optimizer (its definition is stored with it) or the ``(study, definition)`` pair that
:func:`~optimizer.tuning.study.load_study` returns.

Studies store corpus names and a fingerprint, not pixels. Figures that show pixels (:func:`comparison_crops`)
take the images again and refuse them, through :func:`study_corpus`, unless they are the study's corpus
(same names, same pixels, same widths), so a crop never shows an image the study did not score.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .errors import InvalidParameterError, PresetError, StudyError
from .imageio import Image

if TYPE_CHECKING:
    import optuna
    import pandas as pd

    from .evaluator import Evaluator
    from .tuning.corpus import Corpus, CorpusItem
    from .tuning.presets import Preset, PresetTier
    from .tuning.settings import EncodedImage, EncodingSettings
    from .tuning.study import StudyDefinition, TuningResult
    from .tuning.target import Target

__all__ = [
    "Baseline",
    "CropComparison",
    "IMPORTANCE_EVALUATORS",
    "StudySource",
    "comparison_crops",
    "default_baseline_settings",
    "hardest_crops",
    "hardest_images",
    "importance_table",
    "measure_baseline",
    "metric_maps",
    "param_importances",
    "pareto_front",
    "rate_quality",
    "resolve_presets",
    "study_corpus",
    "tradeoff_table",
    "tuning_result",
]

StudySource = Union["TuningResult", "optuna.Study", "tuple[optuna.Study, StudyDefinition]"]
#: ``"auto"``: the result's presets, else :func:`~optimizer.tuning.presets.build_preset`; ``None``: no tiers.
PresetsArg = Union["Preset", str, os.PathLike, None]
ImagesArg = Union["Corpus", str, os.PathLike, Iterable[Union[str, os.PathLike, Image]]]

#: Importance evaluators by name; ``fanova`` (the default) and ``mdi`` need scikit-learn.
IMPORTANCE_EVALUATORS: tuple[str, ...] = ("fanova", "ped-anova", "mdi")

_FEASIBLE_LABEL = "meets target"
_INFEASIBLE_LABEL = "misses target"
_PRUNED_LABEL = "pruned (part of the corpus)"


# --------------------------------------------------------------------------------------------------
# Resolving studies and presets


def tuning_result(source: StudySource) -> TuningResult:
    """The :class:`TuningResult` view of any accepted study source (a result, a study, a ``load_study`` pair)."""
    from .tuning.study import DEFINITION_ATTR, StudyDefinition, TuningResult

    if isinstance(source, TuningResult):
        return source
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[1], StudyDefinition):
        return TuningResult(study=source[0], definition=source[1], storage="")
    attrs = getattr(source, "user_attrs", None)
    if not isinstance(attrs, Mapping):
        raise InvalidParameterError(
            f"expected a TuningResult, an optuna.Study or a (study, definition) pair, got {type(source).__name__}"
        )
    stored = attrs.get(DEFINITION_ATTR)
    if stored is None:
        raise StudyError(f"study {source.study_name!r} was not created by optimizer (no stored definition)")
    return TuningResult(study=source, definition=StudyDefinition.from_dict(stored), storage="")


def resolve_presets(source: StudySource, presets: PresetsArg = "auto") -> Preset | None:
    """The tiers to show: a :class:`Preset`, a preset file, ``"auto"`` or ``None``.

    ``"auto"`` takes the result's presets or builds them from the study's trials; a study in which no trial
    met the target has no tiers then (``None``) rather than failing the figure.
    """
    from .tuning.presets import Preset, build_preset

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


def _target_sign(metric: str) -> float:
    """+1 where higher values are better, -1 for distances."""
    from .metrics.registry import get_spec
    from .tuning.target import COMPOSITE

    return 1.0 if metric == COMPOSITE or get_spec(metric).higher_is_better else -1.0


def _format_colors(formats: Iterable[str]) -> dict[str, str]:
    """A stable colour per format (its position in the codec registry), equal across figures."""
    from .codecs import codec_names

    known = list(codec_names())
    out = {}
    for fmt in formats:
        index = known.index(fmt) if fmt in known else len(known) + len(out)
        out[fmt] = f"C{index % 10}"
    return out


def _formats(result: TuningResult, seen: Iterable[Any]) -> list[str]:
    ordered = [str(f) for f in result.definition.space.get("formats", [])]
    for fmt in seen:
        if isinstance(fmt, str) and fmt not in ordered:
            ordered.append(fmt)
    return ordered


def _quality_label(result: TuningResult, metric: str) -> str:
    corpus = result.definition.corpus
    images, items = corpus.get("images"), corpus.get("items")
    if images and items and items != images:
        over = f" over {images} images at {items // images} widths"
    else:
        over = f" over {images} images" if images else ""
    return f"{metric} ({result.definition.aggregate}{over})"


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


def _envelope(x: np.ndarray, y: np.ndarray, sign: float) -> tuple[np.ndarray, np.ndarray]:
    """The best quality reachable at each rate: points not beaten by a cheaper or equally cheap one."""
    order = np.lexsort((-sign * y, x))
    best = -math.inf
    keep = []
    for i in order:
        if sign * y[i] > best:
            keep.append(i)
            best = sign * y[i]
    return x[keep], y[keep]


# --------------------------------------------------------------------------------------------------
# Rate-quality and Pareto front


def rate_quality(
    source: StudySource, *, metric: str | None = None, figsize: tuple[float, float] = (7.0, 4.5)
) -> Figure:
    """Bits per pixel against aggregate quality, one series per format, with the study target.

    Each format's line joins its best trials (the highest quality at each rate: its rate-quality curve).
    Filled markers met the study target, hollow ones missed it, crosses were pruned (their quality is over
    the images scored before pruning). ``metric`` plots another recorded aggregate instead of the target's.
    For a distance (lower is better) the quality axis is inverted so that up is always better.
    """
    result = tuning_result(source)
    goal = result.definition.target_obj
    metric = metric or goal.metric
    df = result.trials_dataframe()
    column = "quality" if metric == goal.metric else f"agg_{metric}"
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Rate–quality per format: study {result.study_name}")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(_quality_label(result, metric))
    if df.empty:
        _empty(ax, "no trials yet")
        return fig
    if column not in df.columns:
        recorded = sorted(c.removeprefix("agg_") for c in df.columns if c.startswith("agg_"))
        raise InvalidParameterError(
            f"study {result.study_name!r} did not record {metric!r}; recorded: {', '.join(recorded)}"
        )
    finished = df[df["state"].isin(["COMPLETE", "PRUNED"])]
    finished = finished[finished[column].notna() & finished["bits_per_pixel"].notna()]
    if finished.empty:
        _empty(ax, "no finished trials with recorded quality yet")
        return fig
    sign = _target_sign(metric)
    formats = _formats(result, finished["format"].unique())
    colors = _format_colors(formats)
    handles: list[Any] = []
    for fmt in formats:
        rows = finished[finished["format"] == fmt]
        if rows.empty:
            continue
        color = colors[fmt]
        complete = rows[rows["state"] == "COMPLETE"]
        feasible = complete[complete["feasible"].astype(bool)]
        infeasible = complete[~complete["feasible"].astype(bool)]
        pruned = rows[rows["state"] == "PRUNED"]
        ax.scatter(feasible["bits_per_pixel"], feasible[column], s=36, color=color, zorder=3, gid=f"feasible-{fmt}")
        ax.scatter(
            infeasible["bits_per_pixel"],
            infeasible[column],
            s=36,
            facecolors="none",
            edgecolors=color,
            linewidths=1.2,
            zorder=3,
            gid=f"infeasible-{fmt}",
        )
        ax.scatter(
            pruned["bits_per_pixel"],
            pruned[column],
            s=30,
            marker="x",
            color=color,
            alpha=0.6,
            zorder=2,
            gid=f"pruned-{fmt}",
        )
        if not complete.empty:
            x, y = _envelope(complete["bits_per_pixel"].to_numpy(float), complete[column].to_numpy(float), sign)
            (line,) = ax.plot(x, y, "-", color=color, linewidth=1.6, label=fmt, gid=f"curve-{fmt}", zorder=2)
        else:
            line = Line2D([], [], color=color, linewidth=1.6, label=fmt)
        handles.append(line)
    if metric == goal.metric:
        handles.append(
            ax.axhline(goal.value, linestyle="--", color="0.3", linewidth=1, label=f"target {goal}", gid="target")
        )
    handles += [
        Line2D([], [], linestyle="", marker="o", color="0.2", label=_FEASIBLE_LABEL),
        Line2D(
            [], [], linestyle="", marker="o", markerfacecolor="none", markeredgecolor="0.2", label=_INFEASIBLE_LABEL
        ),
        Line2D([], [], linestyle="", marker="x", color="0.2", label=_PRUNED_LABEL),
    ]
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.grid(True, alpha=0.3)
    if sign < 0:
        ax.invert_yaxis()
        ax.set_ylabel(ax.get_ylabel() + " (lower is better, axis inverted)")
    return fig


def _tier_point(result: TuningResult, tier: PresetTier) -> tuple[float, float] | None:
    """Where a tier sits on the (bits per pixel, study quality) plane.

    Its own trial when the study holds it with the same settings; else the values the preset recorded, when
    they are in the study's metric; else nowhere.
    """
    from .tuning.objective import ATTR_BPP, ATTR_QUALITY, ATTR_SETTINGS

    goal = result.definition.target_obj
    trial = _trial(result, tier)
    if trial is not None:
        bpp, quality = trial.user_attrs.get(ATTR_BPP), trial.user_attrs.get(ATTR_QUALITY)
        if bpp is not None and quality is not None and ATTR_SETTINGS in trial.user_attrs:
            return float(bpp), float(quality)
    if tier.target_obj.metric == goal.metric and math.isfinite(tier.expected.quality):
        return float(tier.expected.bits_per_pixel), float(tier.expected.quality)
    return None


def _trial(result: TuningResult, tier: PresetTier) -> optuna.trial.FrozenTrial | None:
    """The study trial a tier came from, if the study holds it, complete, with the tier's settings."""
    import json

    from .tuning.objective import ATTR_SETTINGS

    if tier.trial_number is None:
        return None
    trial = next((t for t in result.study.get_trials(deepcopy=False) if t.number == tier.trial_number), None)
    if trial is None or trial.state.name != "COMPLETE":
        return None
    recorded = json.dumps(trial.user_attrs.get(ATTR_SETTINGS), sort_keys=True, default=str)
    return trial if recorded == json.dumps(tier.settings.to_dict(), sort_keys=True, default=str) else None


def pareto_front(
    source: StudySource, presets: PresetsArg = "auto", *, figsize: tuple[float, float] = (7.0, 4.5)
) -> Figure:
    """The non-dominated trials on (bits per pixel, quality), with the exported preset tiers marked.

    Grey points are every complete trial; the stepped line joins the Pareto front, its points coloured by
    format; stars are the preset's tiers, labelled with their names. ``presets``: a :class:`Preset`, a
    preset file, ``"auto"`` (the study's own tiers) or ``None``.
    """
    result = tuning_result(source)
    goal = result.definition.target_obj
    preset = resolve_presets(result, presets)
    df = result.trials_dataframe()
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Pareto front: study {result.study_name}")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(_quality_label(result, goal.metric))
    complete = df[(df["state"] == "COMPLETE") & df["quality"].notna()] if not df.empty else df
    if complete.empty:
        _empty(ax, "no complete trials yet")
        return fig
    ax.scatter(
        complete["bits_per_pixel"], complete["quality"], s=22, color="0.75", label="trials", zorder=1, gid="trials"
    )
    front = result.pareto_front
    from .tuning.objective import ATTR_BPP, ATTR_QUALITY, ATTR_SETTINGS

    fx = np.array([float(t.user_attrs[ATTR_BPP]) for t in front])
    fy = np.array([float(t.user_attrs[ATTR_QUALITY]) for t in front])
    fmts = [(t.user_attrs.get(ATTR_SETTINGS) or {}).get("codec") for t in front]
    ax.plot(
        fx, fy, "-", drawstyle="steps-post", color="0.25", linewidth=1.2, label="Pareto front", zorder=2, gid="front"
    )
    colors = _format_colors(_formats(result, fmts))
    for fmt in dict.fromkeys(fmts):
        pick = [i for i, f in enumerate(fmts) if f == fmt]
        ax.scatter(
            fx[pick], fy[pick], s=40, color=colors.get(fmt, "0.2"), label=f"front: {fmt}", zorder=3, gid=f"front-{fmt}"
        )
    ax.axhline(goal.value, linestyle="--", color="0.3", linewidth=1, label=f"target {goal}", gid="target")
    if preset is not None:
        points = [(tier, _tier_point(result, tier)) for tier in preset.tiers]
        placed = [(tier, p) for tier, p in points if p is not None]
        if placed:
            ax.scatter(
                [p[0] for _, p in placed],
                [p[1] for _, p in placed],
                marker="*",
                s=260,
                color="gold",
                edgecolors="black",
                linewidths=0.8,
                zorder=5,
                label="preset tiers",
                gid="tiers",
            )
            for tier, (x, y) in placed:
                ax.annotate(
                    tier.name + (" (default)" if tier.name == preset.default else ""),
                    (x, y),
                    xytext=(8, -12),
                    textcoords="offset points",
                    fontsize="small",
                    gid=f"tier-{tier.name}",
                )
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, alpha=0.3)
    if _target_sign(goal.metric) < 0:
        ax.invert_yaxis()
        ax.set_ylabel(ax.get_ylabel() + " (lower is better, axis inverted)")
    return fig


# --------------------------------------------------------------------------------------------------
# Parameter importances


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

    from .tuning.objective import ATTR_QUALITY, ATTR_TOTAL_BYTES

    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 2:
        raise InvalidParameterError(f"min_trials must be an integer >= 2, got {min_trials!r}")
    result = tuning_result(source)
    sign = _target_sign(result.definition.target_obj.metric)
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
        "quality": lambda t: -sign * float(t.user_attrs[ATTR_QUALITY]),
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


def param_importances(
    source: StudySource,
    *,
    evaluator: str = "fanova",
    per_format: bool = True,
    min_trials: int = 4,
    seed: int = 0,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Which parameters drive bytes and quality: one panel per scope of :func:`importance_table`.

    A panel with too few trials, or where nothing varied, says so instead of drawing bars.
    """
    table = importance_table(source, evaluator=evaluator, per_format=per_format, min_trials=min_trials, seed=seed)
    result = tuning_result(source)
    formats = [str(f) for f in result.definition.space.get("formats", [])]
    scopes = (["all formats"] if len(formats) > 1 or not per_format else []) + (formats if per_format else [])
    notes: dict[str, str] = table.attrs["notes"]
    counts = [max(1, table[table["scope"] == s]["param"].nunique()) for s in scopes]
    height = 1.1 + sum(0.45 * c + 0.9 for c in counts)
    fig = Figure(figsize=figsize or (7.0, max(2.6, height)), layout="constrained")
    title = f"Parameter importances ({table.attrs['evaluator']}, {table.attrs['trials']} complete trials)"
    if table.attrs.get("fallback"):
        title += f"\n{table.attrs['fallback']}"
    fig.suptitle(title, fontsize="medium")
    axes = fig.subplots(len(scopes), 1, squeeze=False, height_ratios=counts)[:, 0]
    drawn = False
    for ax, scope in zip(axes, scopes):
        rows = table[table["scope"] == scope]
        missing = [v for k, v in notes.items() if k.startswith(f"{scope}: ")]
        ax.set_title(scope + (f" ({'; '.join(missing)})" if missing else ""), fontsize="medium", loc="left")
        if rows.empty:
            _empty(ax, notes.get(scope) or "; ".join(missing) or "no data")
            continue
        params = list(dict.fromkeys(rows.sort_values("importance", ascending=False)["param"]))[::-1]
        y = np.arange(len(params), dtype=float)
        for offset, (objective, color) in zip((0.2, -0.2), (("bytes", "C0"), ("quality", "C1"))):
            part = rows[rows["objective"] == objective].set_index("param")["importance"]
            values = [float(part.get(p, np.nan)) for p in params]
            ax.barh(
                y + offset, values, height=0.38, color=color, label=objective, gid=f"importance-{scope}-{objective}"
            )
        ax.set_yticks(y, params)
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("importance (normalised)")
        ax.grid(True, axis="x", alpha=0.3)
        drawn = True
    if drawn:
        fig.legend(
            handles=[Patch(color="C0", label="bytes"), Patch(color="C1", label="quality")],
            loc="outside lower center",
            ncols=2,
            fontsize="small",
        )
    return fig


# --------------------------------------------------------------------------------------------------
# Trade-off table and baseline


@dataclass(frozen=True)
class Baseline:
    """What a reference encoding costs on the study corpus, to state each tier's savings against."""

    label: str
    total_bytes: int
    bits_per_pixel: float
    quality: float | None = None
    settings: EncodingSettings | None = None


def default_baseline_settings() -> EncodingSettings:
    """JPEG quality 85 with Pillow's defaults (4:2:0, baseline): what a site ships without tuning."""
    from .tuning.settings import EncodingSettings

    return EncodingSettings("jpeg", {"quality": 85})


def measure_baseline(
    source: StudySource,
    corpus: Corpus,
    settings: EncodingSettings | None = None,
    *,
    evaluator: Evaluator | None = None,
    label: str | None = None,
) -> Baseline:
    """Encode the study corpus with ``settings`` and score it as the study scored its trials.

    Bytes, bits per pixel and the study target's aggregate come out comparable with every trial: same
    items (widths included), same evaluator, same aggregate.
    """
    result = tuning_result(source)
    definition = result.definition
    goal = definition.target_obj
    settings = settings or default_baseline_settings()
    evaluator = evaluator or definition.evaluator_obj()
    total = pixels = 0
    qualities = []
    for item in corpus.items:
        encoded = _encode_item(item, settings)
        total += encoded.bytes
        pixels += encoded.width * encoded.height
        qualities.append(goal.value_of(evaluator.for_reference(item.reference).score(encoded.decoded)))
    quality = goal.aggregate(qualities, definition.aggregate) if qualities else None
    return Baseline(label or settings.label(), total, total * 8.0 / pixels if pixels else math.nan, quality, settings)


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
            "default": tier.name == preset.default,
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


# --------------------------------------------------------------------------------------------------
# The study corpus, hardest images and crops


def study_corpus(source: StudySource, images: ImagesArg) -> Corpus:
    """The study's corpus rebuilt from ``images`` (files, folders, or :class:`Image` objects), verified.

    Files are picked by the names the study recorded, so a folder holding more images than the study used
    is fine; the pixels, names and widths must then give the study's corpus fingerprint. Raises
    :class:`~optimizer.errors.InvalidParameterError` saying what differs when they do not.
    """
    from .batch import iter_image_files
    from .tuning.corpus import Corpus, load_corpus

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
                path = Path(entry)
                if path.is_dir():
                    files.extend(iter_image_files(path))
                elif path.is_file():
                    files.append(path)
                else:
                    raise InvalidParameterError(f"{path}: no such file or folder")
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
    from .tuning.objective import ATTR_IMAGES
    from .tuning.target import COMPOSITE, Target

    goal = Target.parse(target)
    records = trial.user_attrs.get(ATTR_IMAGES) or []
    rows = []
    for record in records:
        value = record.get("composite") if goal.metric == COMPOSITE else (record.get("scores") or {}).get(goal.metric)
        if value is None:
            continue
        rows.append(
            {
                "name": record["name"],
                "quality": float(value),
                "bits_per_pixel": float(record.get("bits_per_pixel", math.nan)),
                "bytes": int(record.get("bytes", 0)),
            }
        )
    sign = 1.0 if goal.higher_is_better else -1.0
    rows.sort(key=lambda r: (sign * r["quality"] if not math.isnan(r["quality"]) else -math.inf, r["name"]))
    return rows[: max(0, int(count))]


@dataclass(frozen=True, eq=False)
class CropComparison:
    """One crop of one image at one tier: the reference, the decoded candidate and its damage map.

    Arrays are ``h x w x 3`` float32 RGB in [0, 1] (composited as scored) and an ``h x w`` damage map
    (0 = no damage; for SSIM it is ``1 - SSIM``). ``box`` is ``(x, y, width, height)`` in the image;
    ``damage_scale`` is the value drawn brightest (the whole image's 99th percentile), equal for all crops
    of one image so that crops compare.
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
        return _map_title(self.map_name)


def _damage_map(kind: str, reference: Image, decoded: Image, evaluator: Evaluator | None) -> np.ndarray:
    if kind == "difference":
        return np.abs(reference.for_scoring() - decoded.for_scoring()).mean(axis=2).astype(np.float32)
    from .evaluator import Evaluator
    from .metrics.registry import get_spec

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
    from .tuning.settings import EncodingSettings

    return EncodingSettings(settings.codec, settings.params, item.candidate_transform(settings.transform)).encode(
        item.source
    )


def _item_qualities(
    corpus: Corpus, settings: EncodingSettings, target: Target, evaluator: Evaluator
) -> list[dict[str, Any]]:
    """Score every corpus item with ``settings`` (for tiers whose trial the study does not hold)."""
    rows = []
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
    rows.sort(key=lambda r: (sign * r["quality"], r["name"]))
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
    from .batch import damage_scale

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
    trial = _trial(result, chosen)
    ranked = hardest_images(trial, target, len(corpus.items)) if trial is not None else []
    if len(ranked) != len(corpus.items):
        evaluator = _scoring_evaluator(result, target)
        ranked = _item_qualities(corpus, chosen.settings, target, evaluator)
    items = {item.name: item for item in corpus.items}
    map_evaluator = None
    if damage_map != "difference":
        from .evaluator import Evaluator

        map_evaluator = Evaluator(metrics=[damage_map])
    out = []
    for row in ranked[:count]:
        item: CorpusItem | None = items.get(row["name"])
        if item is None:
            continue
        decoded = _encode_item(item, chosen.settings).decoded
        damage = _damage_map(damage_map, item.reference, decoded, map_evaluator)
        scale = damage_scale(damage)
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
    from .evaluator import Evaluator
    from .tuning.target import COMPOSITE

    info = result.definition.evaluator
    metrics = [str(m) for m in info.get("metrics") or []]
    if target.metric != COMPOSITE and target.metric not in metrics:
        metrics.append(target.metric)
    return Evaluator(weights=info["weights"], metrics=metrics)


def _map_title(kind: str) -> str:
    return {"ssim": "1 - SSIM", "difference": "|difference|"}.get(kind, f"{kind} map")


def comparison_crops(
    source: StudySource,
    images: ImagesArg,
    *,
    presets: PresetsArg = "auto",
    tier: str | None = None,
    count: int = 3,
    crop: int = 160,
    damage_map: Literal["ssim", "difference"] | str = "ssim",
    crops: Sequence[CropComparison] | None = None,
) -> Figure:
    """Original, candidate and damage map side by side for the hardest images at a tier.

    One row per image (see :func:`hardest_crops`; pass ``crops`` to draw ones already computed). Pixels are
    drawn without smoothing; the damage map is scaled to its image's 99th percentile (brighter = worse).
    """
    if crops is None:
        crops = hardest_crops(source, images, presets=presets, tier=tier, count=count, crop=crop, damage_map=damage_map)
    rows = max(1, len(crops))
    fig = Figure(figsize=(9.0, 3.1 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    if not crops:
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no images to compare", ha="center", va="center", transform=axes[0, 1].transAxes)
        return fig
    fig.suptitle(f"Hardest images at tier {crops[0].tier}: {crops[0].settings}", fontsize="medium")
    for row, c in zip(axes, crops):
        x, y, w, h = c.box
        row[0].imshow(c.original, interpolation="nearest")
        row[0].set_title(f"{c.name} original\n[{x}:{x + w}, {y}:{y + h}]", fontsize="small")
        row[1].imshow(c.candidate, interpolation="nearest")
        row[1].set_title(f"candidate {c.bits_per_pixel:.3f} bpp\n{c.metric} {c.quality:.4g}", fontsize="small")
        row[2].imshow(c.damage, cmap="inferno", vmin=0.0, vmax=c.damage_scale, interpolation="nearest")
        row[2].set_title(f"{c.map_title}\n(bright = worse)", fontsize="small")
        for ax in row:
            ax.set_axis_off()
    return fig


# --------------------------------------------------------------------------------------------------
# Metric maps of one pair


def metric_maps(
    reference: Any,
    distorted: Any,
    *,
    metrics: Sequence[str] = ("ssim", "ssimulacra2"),
    evaluator: Evaluator | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A pair side by side with its absolute difference and every metric's spatial map.

    ``reference`` and ``distorted``: anything :func:`~optimizer.imageio.load_image` reads. ``metrics`` name
    the metrics (those without a map are scored and listed in the title); ``evaluator`` overrides them.
    Maps are drawn as damage (SSIM as ``1 - SSIM``), each scaled to its 99th percentile.
    """
    from .batch import damage_scale
    from .evaluator import Evaluator
    from .imageio import load_image
    from .metrics.registry import get_spec

    ref = reference if isinstance(reference, Image) else load_image(reference)
    dist = distorted if isinstance(distorted, Image) else load_image(distorted)
    evaluator = evaluator or Evaluator(metrics=list(metrics))
    scorer = evaluator.for_reference(ref)
    result = scorer.score(dist)
    maps = scorer.maps(dist)
    panels: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("reference", ref.for_scoring(), {}),
        ("distorted", dist.for_scoring(), {}),
    ]
    diff = np.abs(ref.for_scoring() - dist.for_scoring()).mean(axis=2)
    panels.append(("|difference|", diff, {"cmap": "inferno", "vmin": 0.0, "vmax": damage_scale(diff)}))
    for name, arr in maps.items():
        damage = get_spec(name).damage(arr)
        title = f"{_map_title(name)}\n{name} = {result.scores[name]:.4g}"
        panels.append((title, damage, {"cmap": "inferno", "vmin": 0.0, "vmax": damage_scale(damage)}))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    aspect = ref.height / ref.width
    fig = Figure(figsize=figsize or (4.0 * cols, 4.0 * aspect * rows + 0.9), layout="constrained")
    scores = ", ".join(f"{k} {v:.4g}" for k, v in result.scores.items())
    names = (
        Path(ref.source).name if ref.source else "reference",
        Path(dist.source).name if dist.source else "distorted",
    )
    fig.suptitle(f"{names[0]} vs {names[1]}: {scores}", fontsize="medium")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, arr, style) in zip(axes, panels):
        ax.imshow(arr, interpolation="nearest", **style)
        ax.set_title(title, fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    return fig
