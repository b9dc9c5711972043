"""Figures of studies, presets and image pairs: one code path for notebooks and the HTML report.

Plots only draw. What they show is measured by :mod:`optimizer.tuning.analysis` (baselines, the hardest
images and their crops, importances, tier tables) and read from the study's records; nothing here
encodes or scores except :func:`metric_maps`, which draws the maps :func:`~optimizer.tuning.crops.pair_maps`
computes for one pair.

Every plotting function returns a :class:`matplotlib.figure.Figure` built directly, never through
``pyplot``: nothing is added to pyplot's global list of open figures, so a report that draws hundreds of
figures leaks none, and the functions work in headless processes whatever backend is configured. A notebook
displays a returned figure as the last expression of a cell (``%matplotlib inline``); a script saves it with
``fig.savefig(path)``.

Study figures accept a :class:`~optimizer.tuning.study.TuningResult`, an ``optuna.Study`` created by
optimizer (its definition is stored with it) or a ``(study, definition)`` pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .errors import InvalidParameterError
from .heatmaps import COLORMAP, legend_label
from .tuning.analysis import (
    ImagesArg,
    PresetsArg,
    StudySource,
    importance_table,
    resolve_presets,
    target_sign,
    tier_point,
    tuning_result,
)
from .tuning.crops import CropComparison, hardest_crops, map_title, pair_maps
from .tuning.records import ATTR_BPP, ATTR_QUALITY, trial_number, trial_settings

if TYPE_CHECKING:
    from .evaluator import Evaluator
    from .tuning.study import TuningResult

__all__ = [
    "comparison_crops",
    "metric_maps",
    "param_importances",
    "pareto_front",
    "rate_quality",
]

_FEASIBLE_LABEL = "meets target"
_INFEASIBLE_LABEL = "misses target"
_PRUNED_LABEL = "pruned (part of the corpus)"


# --------------------------------------------------------------------------------------------------
# Resolving studies and presets


def _format_colors(formats: Iterable[str]) -> dict[str, str]:
    """A stable colour per format (its position in the codec registry), equal across figures."""
    from .codecs import codec_names

    known = list(codec_names())
    out: dict[str, str] = {}
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

    Points are every complete measurement: each trial's answer and the other qualities its search measured
    on the whole corpus. Each format's line joins its best points (the highest quality at each rate: its
    rate-quality curve). Filled markers meet the study target, hollow ones miss it, crosses are pruned trials
    (their quality is over the images scored before pruning). ``metric`` plots another recorded aggregate instead of the target's.
    For a distance (lower is better) the quality axis is inverted so that up is always better.
    """
    import pandas as pd

    result = tuning_result(source)
    goal = result.definition.target_obj
    metric = metric or goal.metric
    df = result.trials_dataframe()
    points = result.points_dataframe()
    column = "quality" if metric == goal.metric else f"agg_{metric}"
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"Rate–quality per format: study {result.study_name}")
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(_quality_label(result, metric))
    if df.empty:
        _empty(ax, "no trials yet")
        return fig
    if column not in df.columns or (not points.empty and column not in points.columns):
        recorded = sorted(c.removeprefix("agg_") for c in df.columns if c.startswith("agg_"))
        raise InvalidParameterError(
            f"study {result.study_name!r} did not record {metric!r}; recorded: {', '.join(recorded)}"
        )
    pruned_all = df[(df["state"] == "PRUNED") & df[column].notna() & df["bits_per_pixel"].notna()]
    complete_all = points[points["state"] == "COMPLETE"] if not points.empty else points
    if not complete_all.empty:
        complete_all = complete_all[complete_all[column].notna() & complete_all["bits_per_pixel"].notna()]
        if metric != goal.metric:
            complete_all = complete_all.assign(feasible=complete_all["feasible"])
    finished = pd.concat([complete_all, pruned_all], ignore_index=True)
    if finished.empty:
        _empty(ax, "no finished trials with recorded quality yet")
        return fig
    sign = target_sign(metric)
    formats = _formats(result, finished["format"].unique())
    colors = _format_colors(formats)
    handles: list[Any] = []
    for fmt in formats:
        complete = complete_all[complete_all["format"] == fmt] if not complete_all.empty else complete_all
        pruned = pruned_all[pruned_all["format"] == fmt]
        if complete.empty and pruned.empty:
            continue
        color = colors[fmt]
        feasible = complete[complete["feasible"].astype(bool)] if not complete.empty else complete
        infeasible = complete[~complete["feasible"].astype(bool)] if not complete.empty else complete
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
    fx = np.array([trial_number(t, ATTR_BPP) for t in front])
    fy = np.array([trial_number(t, ATTR_QUALITY) for t in front])
    fmts = [settings.codec if (settings := trial_settings(t)) is not None else None for t in front]
    ax.plot(
        fx, fy, "-", drawstyle="steps-post", color="0.25", linewidth=1.2, label="Pareto front", zorder=2, gid="front"
    )
    colors = _format_colors(_formats(result, fmts))
    for fmt in dict.fromkeys(fmts):
        pick = [i for i, f in enumerate(fmts) if f == fmt]
        ax.scatter(
            fx[pick],
            fy[pick],
            s=40,
            color=colors.get(fmt or "", "0.2"),
            label=f"front: {fmt}",
            zorder=3,
            gid=f"front-{fmt}",
        )
    ax.axhline(goal.value, linestyle="--", color="0.3", linewidth=1, label=f"target {goal}", gid="target")
    if preset is not None:
        points = [(tier, tier_point(result, tier)) for tier in preset.tiers]
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
    if target_sign(goal.metric) < 0:
        ax.invert_yaxis()
        ax.set_ylabel(ax.get_ylabel() + " (lower is better, axis inverted)")
    return fig


# --------------------------------------------------------------------------------------------------
# Parameter importances


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


# --------------------------------------------------------------------------------------------------
# The study corpus, hardest images and crops


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
    drawn without smoothing; the damage map is drawn on its fixed scale (:mod:`optimizer.heatmaps`, the same
    for every image, brighter = worse), stated by a colour bar.
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
        drawn = row[2].imshow(c.damage, cmap=COLORMAP, vmin=0.0, vmax=c.damage_scale, interpolation="nearest")
        row[2].set_title(f"{c.map_title}\n(bright = worse)", fontsize="small")
        _colour_bar(fig, drawn, row[2], c.legend)
        for ax in row:
            ax.set_axis_off()
    return fig


def _colour_bar(fig: Figure, drawn: Any, ax: Any, label: str) -> None:
    """A colour bar beside a damage panel: its fixed scale, ``>=`` at the top (larger damage is drawn there)."""
    bar = fig.colorbar(drawn, ax=ax, shrink=0.8, extend="max")
    bar.set_label(label, fontsize="x-small")
    bar.ax.tick_params(labelsize="x-small")


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
    Maps are drawn as damage (SSIM as ``1 - SSIM``) on each map's fixed scale
    (:func:`~optimizer.heatmaps.fixed_scale`), each with a colour bar that states it.
    """
    maps = pair_maps(reference, distorted, metrics=metrics, evaluator=evaluator)
    ref, dist = maps.reference, maps.distorted
    panels: list[tuple[str, np.ndarray, dict[str, Any], str | None]] = [
        ("reference", ref.for_scoring(), {}, None),
        ("distorted", dist.for_scoring(), {}, None),
    ]
    for name, damage in maps.damage.items():
        score = f"\n{name} = {maps.scores[name]:.4g}" if name in maps.scores else ""
        style = {"cmap": COLORMAP, "vmin": 0.0, "vmax": maps.scales[name]}
        panels.append((f"{map_title(name)}{score}", damage, style, legend_label(name)))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    aspect = ref.height / ref.width
    fig = Figure(figsize=figsize or (4.0 * cols, 4.0 * aspect * rows + 0.9), layout="constrained")
    scores = ", ".join(f"{k} {v:.4g}" for k, v in maps.scores.items())
    fig.suptitle(f"{maps.names[0]} vs {maps.names[1]}: {scores}", fontsize="medium")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, arr, style, legend) in zip(axes, panels):
        drawn = ax.imshow(arr, interpolation="nearest", **style)
        ax.set_title(title, fontsize="small")
        if legend is not None:
            _colour_bar(fig, drawn, ax, legend)
    for ax in axes:
        ax.set_axis_off()
    return fig
