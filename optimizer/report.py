"""The HTML study report: one self-contained file to choose a preset by looking rather than reading.

:func:`build_report` draws the figures of :mod:`optimizer.plots` (the notebooks draw the same ones) and
writes them into one HTML page: the rate-quality curve per format, the Pareto front with the preset tiers
marked, parameter importances, the trade-off table of the tiers and, when the study's images are given,
crops of the hardest images at each tier (original, candidate, damage map).

The page needs no network to be viewed: plots are SVG and crops PNG, embedded as ``data:`` URIs; the CSS is
inline; the one inline script is pinned by its hash in the page's Content-Security-Policy, which also
forbids loading anything from elsewhere. The script checks that every embedded image decoded and records
any page error on the ``<html>`` element (``data-report-status``, ``data-images``,
``data-images-decoded``, ``data-errors``), where a headless browser or a person with the developer tools
open can read it; a visible banner says when an image failed to decode.

Crops need pixels, which studies do not store: pass ``images`` (files or folders holding the study's
corpus). They are verified against the corpus fingerprint the study recorded; when none are given, or
they are not the study's images, the report says so and leaves the crops out rather than show wrong ones.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from ._files import write_atomic
from .errors import InvalidImageError, OptimizerError, ResourceLimitError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from .tuning.analysis import Baseline, ImagesArg, PresetsArg, StudySource
    from .tuning.corpus import Corpus
    from .tuning.crops import CropComparison
    from .tuning.presets import Preset
    from .tuning.study import TuningResult

__all__ = ["StudyReport", "array_data_uri", "build_report", "figure_data_uri"]

#: Records page errors and image decoding on <html>; pinned by hash in the Content-Security-Policy.
_SCRIPT = """(function () {
  var root = document.documentElement, errors = [];
  function record(message) {
    errors.push(String(message));
    root.setAttribute("data-errors", errors.join(" | "));
  }
  window.addEventListener("error", function (event) {
    var t = event.target;
    if (t && t !== window && t.tagName) { record("failed to load " + t.tagName.toLowerCase() + " " + (t.id || t.alt || "")); }
    else { record(event.message || "error"); }
  }, true);
  window.addEventListener("unhandledrejection", function (event) { record("unhandled rejection: " + event.reason); });
  document.addEventListener("securitypolicyviolation", function (event) { record("blocked by the page policy: " + event.blockedURI); });
  var consoleError = console.error;
  console.error = function () { record(Array.prototype.join.call(arguments, " ")); return consoleError.apply(console, arguments); };
  function check() {
    var images = document.images, decoded = 0, failed = [];
    for (var i = 0; i < images.length; i++) {
      if (images[i].complete && images[i].naturalWidth > 0) { decoded++; } else { failed.push(images[i].alt || images[i].id); }
    }
    root.setAttribute("data-images", String(images.length));
    root.setAttribute("data-images-decoded", String(decoded));
    if (failed.length) {
      var banner = document.getElementById("render-problems");
      banner.textContent = failed.length + " embedded image(s) could not be shown: " + failed.join(", ");
      banner.hidden = false;
    }
    root.setAttribute("data-report-status", "ready");
  }
  if (document.readyState === "complete") { check(); } else { window.addEventListener("load", check); }
})();"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

_CSS = """
:root { --ink: #1d232a; --muted: #5b6570; --line: #d8dde3; --accent: #2b6cb0; --warn: #9c4221; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 1.5rem 1.25rem 3rem; color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p.lead, .muted { color: var(--muted); }
nav { margin: .8rem 0 0; font-size: .92rem; }
nav a { color: var(--accent); margin-right: .9rem; text-decoration: none; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .88em;
       background: #f3f5f7; padding: .05em .3em; border-radius: 3px; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.default td { font-weight: 600; }
tr.baseline td { color: var(--muted); font-style: italic; }
.warning { color: #b00020; font-weight: 700; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
figure.plot { margin: .5rem 0 1rem; }
figure.plot img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .88rem; }
.notes { border-left: 4px solid var(--warn); background: #fdf6f0; padding: .5rem .9rem; margin: 1rem 0; }
.notes li { margin: .2rem 0; }
.banner { background: #fde8e8; border: 1px solid #e53e3e; padding: .5rem .8rem; margin: .5rem 0; }
.crop-row { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; margin: .4rem 0 1rem; }
.crop-row figure { margin: 0; display: table; }
.crop-row img { image-rendering: pixelated; border: 1px solid var(--line); display: block; }
.crop-row figcaption { display: table-caption; caption-side: bottom; padding-top: .2rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }
"""


# --------------------------------------------------------------------------------------------------
# Embedding


def figure_data_uri(fig: Figure, fmt: str = "svg", *, dpi: int = 110) -> str:
    """A ``data:`` URI of a figure: SVG (text as paths, no fonts needed) or PNG."""
    import matplotlib

    buf = io.BytesIO()
    if fmt == "svg":
        with matplotlib.rc_context({"svg.hashsalt": "optimizer-report", "svg.fonttype": "path"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        mime = "image/svg+xml"
    elif fmt == "png":
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        mime = "image/png"
    else:
        raise ValueError(f"figure format must be svg or png, got {fmt!r}")
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def array_data_uri(pixels: np.ndarray | Any) -> str:
    """A PNG ``data:`` URI of an ``H x W x 3`` float array in [0, 1], a uint8 array or a PIL image."""
    import numpy as np
    from PIL import Image as PILImage

    if isinstance(pixels, PILImage.Image):
        pil = pixels
    else:
        arr = np.asarray(pixels)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        pil = PILImage.fromarray(arr)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


# --------------------------------------------------------------------------------------------------
# The report


@dataclass
class StudyReport:
    """The rendered page, and what it had to leave out (``notes``) so callers can tell the user."""

    html: str
    study: str
    notes: list[str] = field(default_factory=list)
    tiers: list[str] = field(default_factory=list)
    crops: bool = False

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the page (atomically); returns the path."""
        return write_atomic(path, self.html)


def build_report(
    source: StudySource,
    *,
    presets: PresetsArg = "auto",
    images: ImagesArg | None = None,
    count: int = 3,
    crop: int = 160,
    damage_map: str = "ssim",
    baseline: bool = True,
    importance: str = "fanova",
    storage: str | None = None,
) -> StudyReport:
    """Render the report of a study (see the module docs).

    ``presets``: a :class:`~optimizer.tuning.presets.Preset`, a preset file, or ``"auto"`` to build the
    tiers from the study. ``images``: the study's corpus (files or folders) for the crops; with them and
    ``baseline`` the tiers' savings are stated against JPEG quality 85 on the same images. ``count``
    hardest images per tier, ``crop`` pixels square, ``damage_map`` ``ssim`` or ``difference``. ``storage`` is
    the URL shown for ``optuna-dashboard`` (password redacted).
    """
    from . import plots
    from .tuning.analysis import measure_baseline, tuning_result
    from .tuning.storage import redact_storage

    result = tuning_result(source)
    notes: list[str] = []
    preset = _preset(result, presets, notes)
    url = redact_storage(storage or result.storage or "") or None
    corpus = _corpus(result, images, notes)
    base: Baseline | None = None
    if baseline and preset is not None:
        try:  # the study's own measurement when it has one, else measured on the images given
            base = measure_baseline(result, corpus, label="JPEG quality 85")
        except OptimizerError as exc:
            if corpus is not None:
                notes.append(f"The baseline could not be measured: {exc}")
    sections = [
        _summary(result, preset, url),
        _figure_section(
            "rate-quality",
            "Rate–quality per format",
            plots.rate_quality(result),
            "Each format's line joins its best trials: the highest quality reached at each bit rate. Filled "
            "markers meet the study target, hollow ones miss it, crosses were pruned early.",
        ),
        _figure_section(
            "pareto",
            "Pareto front and preset tiers",
            plots.pareto_front(result, preset),
            "Trials no other trial beats on both size and quality; the stars are the exported preset tiers.",
        ),
        _figure_section(
            "importances",
            "Parameter importances",
            plots.param_importances(result, evaluator=importance),
            "How much of the variation in bytes and in quality each searched parameter explains, over all "
            "formats and within each format (encoder parameters exist only in their format's trials).",
        ),
        _tiers_section(result, preset, base),
        _crops_section(result, preset, corpus, count, crop, damage_map, notes),
    ]
    notes.extend(_attribute_notes(result))
    page = _page(result, sections, notes)
    return StudyReport(
        html=page,
        study=result.study_name,
        notes=notes,
        tiers=[t.name for t in preset.tiers] if preset is not None else [],
        crops=corpus is not None and preset is not None,
    )


def _preset(result: TuningResult, presets: PresetsArg, notes: list[str]) -> Preset | None:
    from .tuning.analysis import resolve_presets
    from .tuning.tiers import build_preset

    if isinstance(presets, str) and presets == "auto":
        if result.presets is not None:
            return result.presets
        try:
            return build_preset(result.study, storage=result.storage or None)
        except OptimizerError as exc:
            notes.append(f"No preset tiers: {exc}")
            return None
    preset = resolve_presets(result, presets)
    if preset is not None:
        name = (preset.study or {}).get("name")
        if name and name != result.study_name:
            notes.append(
                f"The presets file was built from study {name!r}, not {result.study_name!r}: its tiers are "
                "shown at the values it recorded."
            )
        fingerprint = (preset.corpus or {}).get("fingerprint")
        if fingerprint and fingerprint != result.definition.corpus.get("fingerprint"):
            notes.append(
                f"The presets file was tuned on another corpus (fingerprint {fingerprint}, this study's is "
                f"{result.definition.corpus.get('fingerprint')})."
            )
    return preset


def _corpus(result: TuningResult, images: ImagesArg | None, notes: list[str]) -> Corpus | None:
    from .tuning.analysis import study_corpus

    if images is None or (isinstance(images, Sequence) and not isinstance(images, str) and not images):
        notes.append(
            "Crops omitted: no images given. Studies store corpus names and a fingerprint, not pixels; pass "
            "the study's images (optimizer report --images DIR) to see the hardest images at each tier."
        )
        return None
    try:
        return study_corpus(result, images)
    except (InvalidImageError, ResourceLimitError):
        raise  # images the caller gave that cannot be read are bad input, not a note
    except OptimizerError as exc:  # readable images, but not the study's: the report says so
        notes.append(f"Crops omitted: {exc}.")
        return None


# --------------------------------------------------------------------------------------------------
# Sections


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _summary(result: TuningResult, preset: Preset | None, url: str | None) -> str:
    from collections import Counter

    from .tuning.records import feasible_trials

    definition = result.definition
    states = Counter(t.state.name for t in result.study.get_trials(deepcopy=False))
    corpus = definition.corpus
    evaluator = definition.evaluator
    space = definition.space
    widths = ", ".join(f"{w}w" for w in space.get("widths") or []) or "original sizes"
    facts = [
        ("mode", definition.mode),
        ("target", f"{definition.target} ({definition.aggregate} over the corpus)"),
        ("evaluator", f"{evaluator.get('profile')}: {', '.join(evaluator.get('metrics') or [])}"),
        ("formats", f"{', '.join(space.get('formats') or [])} at {widths}"),
        (
            "corpus",
            f"{corpus.get('images')} images, {corpus.get('items')} items, {corpus.get('pixels'):,} pixels, "
            f"fingerprint {corpus.get('fingerprint')}"
            if isinstance(corpus.get("pixels"), int)
            else str(corpus.get("fingerprint")),
        ),
        (
            "trials",
            f"{states.get('COMPLETE', 0)} complete ({len(feasible_trials(result.study))} meet the target), "
            f"{states.get('PRUNED', 0)} pruned, {states.get('FAIL', 0)} failed, {states.get('RUNNING', 0)} running",
        ),
        ("created", f"{definition.created} with optimizer {definition.optimizer_version}"),
    ]
    if preset is not None:
        facts.append(("default tier", f"{preset.default}: {preset.default_tier.label()}"))
    if url:
        facts.append(("storage", url))
    headline = result.headline() if preset is not None and preset is result.presets else None
    if headline:
        facts.append(("savings", headline))
    rows = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts)
    saving = result.savings_at_equal_quality() if headline else None
    if saving is not None and saving < 0:
        rows += (
            f'<dt class="warning">warning</dt><dd class="warning" id="larger-than-jpeg">the default tier is '
            f"{-saving:.0%} larger than JPEG at the same quality: JPEG serves these images better at this target</dd>"
        )
    dashboard = ""
    if url and (url.startswith(("sqlite:", "postgresql", "mysql")) or url.startswith("journal:")):
        target = url.removeprefix("journal:")
        dashboard = (
            '<p class="muted">Explore every trial interactively: <code>pip install optuna-dashboard</code>, then '
            f"<code>optuna-dashboard {_esc(target)}</code>.</p>"
        )
    return f'<section id="summary"><h2>Study</h2><dl class="facts">{rows}</dl>{dashboard}</section>'


def _figure_section(key: str, title: str, fig: Figure, caption: str) -> str:
    uri = figure_data_uri(fig, "svg")
    return (
        f'<section id="{key}"><h2>{_esc(title)}</h2><figure class="plot">'
        f'<img id="plot-{key}" class="plot" alt="{_esc(title)}" src="{uri}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure></section>"
    )


def _fmt(value: Any, kind: str) -> str:
    """A table cell's text: thousands separators for bytes, 3 decimals for bits per pixel, percentages."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "bpp":
        return f"{float(value):.3f}"
    if kind == "quality":
        return f"{float(value):.4g}"
    if kind == "percent":
        return f"{100.0 * float(value):.1f} %"
    return str(value)


def _tiers_section(result: TuningResult, preset: Preset | None, base: Baseline | None) -> str:
    from .tuning.analysis import tradeoff_table

    title = '<section id="tiers"><h2>Preset tiers: the trade-off</h2>'
    if preset is None:
        return title + '<p class="muted">No tiers: no trial met the target yet.</p></section>'
    table: pd.DataFrame = tradeoff_table(result, preset, baseline=base)
    columns = [
        ("tier", "tier", "text"),
        ("target", "target", "text"),
        ("format", "format", "text"),
        ("settings", "settings", "text"),
        ("bits_per_pixel", "bits/pixel", "bpp"),
        ("quality", "quality", "quality"),
        ("total_bytes", "bytes", "int"),
        ("trial", "trial", "int"),
    ]
    if base is not None:
        columns.append(("savings", "savings vs baseline", "percent"))
    head = "".join(f'<th class="{"num" if kind != "text" else ""}">{_esc(label)}</th>' for _, label, kind in columns)
    body = []
    for index, (_, row) in enumerate(table.iterrows()):
        is_baseline = base is not None and index == len(table) - 1
        css = "baseline" if is_baseline else ("default" if row["default"] else "")
        cells = []
        for key, _, kind in columns:
            text = _fmt(row[key], kind)
            if key == "tier" and row["default"]:
                text += " (default)"
            cells.append(f'<td class="{"num" if kind != "text" else ""}">{_esc(text)}</td>')
        body.append(f'<tr class="{css}">{"".join(cells)}</tr>')
    note = (
        f'<p class="muted">Quality is the {_esc(preset.aggregate)} of each tier\'s target metric over the corpus. '
        + (
            f"The baseline encodes the same corpus with {_esc(base.label)} and is scored the same way.</p>"
            if base is not None
            else "Savings against a baseline need the study's images (<code>--images</code>).</p>"
        )
    )
    return f'{title}<table id="tier-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>{note}</section>'


def _crops_section(
    result: TuningResult,
    preset: Preset | None,
    corpus: Corpus | None,
    count: int,
    crop: int,
    map_kind: str,
    notes: list[str],
) -> str:
    from .heatmaps import heatmap
    from .tuning.crops import hardest_crops

    head = '<section id="crops"><h2>Hardest images at each tier</h2>'
    if preset is None:
        return head + '<p class="muted">No tiers, so no crops.</p></section>'
    if corpus is None:
        omitted = next((n for n in notes if n.startswith("Crops omitted")), "Crops omitted.")
        return head + f'<p class="omitted">{_esc(omitted)}</p></section>'
    parts = [
        head,
        f'<p class="muted">For each tier, the {count} images its trial scored worst, re-encoded with the tier\'s '
        f"settings; each crop ({crop} px) sits where the damage is worst. Pixels are shown at twice their size "
        "without smoothing; the map is brighter where the damage is worse.</p>",
    ]
    for tier in preset.tiers:
        parts.append(f'<h3 id="crops-{_esc(tier.name)}">{_esc(tier.name)}: {_esc(tier.label())}</h3>')
        try:
            crops: list[CropComparison] = hardest_crops(
                result, corpus, presets=preset, tier=tier.name, count=count, crop=crop, damage_map=map_kind
            )
        except OptimizerError as exc:
            notes.append(f"Crops of tier {tier.name!r} omitted: {exc}")
            parts.append(f'<p class="omitted">{_esc(exc)}</p>')
            continue
        for c in crops:
            x, y, w, h = c.box
            size = f'width="{2 * w}" height="{2 * h}"'
            damage = heatmap(c.damage, c.damage_scale, legend=c.legend)
            map_size = f'width="{2 * damage.width}" height="{2 * damage.height}"'
            slug = f"{tier.name}-{c.name}"
            parts.append(
                '<div class="crop-row">'
                f'<figure><img class="crop" alt="{_esc(c.name)} original" id="crop-{_esc(slug)}-original" {size} src="{array_data_uri(c.original)}">'
                f"<figcaption>{_esc(c.name)} original, pixels {x}–{x + w} × {y}–{y + h}</figcaption></figure>"
                f'<figure><img class="crop" alt="{_esc(c.name)} at {_esc(tier.name)}" id="crop-{_esc(slug)}-candidate" {size} src="{array_data_uri(c.candidate)}">'
                f"<figcaption>{_esc(tier.name)}: {c.bits_per_pixel:.3f} bpp, {_esc(c.metric)} {c.quality:.4g}</figcaption></figure>"
                f'<figure><img class="crop" alt="{_esc(c.name)} {_esc(c.map_title)}" id="crop-{_esc(slug)}-map" {map_size} src="{array_data_uri(damage)}">'
                f"<figcaption>{_esc(c.map_title)} (bright = worse; fixed scale, the same for every image)</figcaption></figure>"
                "</div>"
            )
    parts.append("</section>")
    return "".join(parts)


def _attribute_notes(result: TuningResult) -> list[str]:
    """Complete trials missing what the report and the Optuna dashboard read (older or foreign trials)."""
    from .tuning.records import ATTR_AGGREGATES, ATTR_BPP, ATTR_IMAGES, ATTR_QUALITY, ATTR_SETTINGS, ATTR_TOTAL_BYTES

    needed = (ATTR_SETTINGS, ATTR_TOTAL_BYTES, ATTR_BPP, ATTR_QUALITY, ATTR_AGGREGATES, ATTR_IMAGES)
    from optuna.trial import TrialState

    lacking = {
        t.number: [k for k in needed if k not in t.user_attrs]
        for t in result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    lacking = {n: keys for n, keys in lacking.items() if keys}
    if not lacking:
        return []
    numbers = ", ".join(str(n) for n in sorted(lacking)[:10]) + (" ..." if len(lacking) > 10 else "")
    keys = sorted({k for v in lacking.values() for k in v})
    return [
        f"{len(lacking)} complete trial(s) ({numbers}) lack the user attributes {', '.join(keys)}; they are left out of the figures."
    ]


def _page(result: TuningResult, sections: list[str], notes: list[str]) -> str:
    title = f"Study {result.study_name}: optimizer report"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    notes_html = ""
    if notes:
        items = "".join(f"<li>{_esc(n)}</li>" for n in notes)
        notes_html = f'<section id="notes" class="notes"><strong>Notes</strong><ul>{items}</ul></section>'
    nav = "".join(
        f'<a href="#{key}">{label}</a>'
        for key, label in (
            ("summary", "Study"),
            ("rate-quality", "Rate–quality"),
            ("pareto", "Pareto front"),
            ("importances", "Importances"),
            ("tiers", "Tiers"),
            ("crops", "Crops"),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" data-report-status="loading"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="optimizer {_esc(__version__)}">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>\n<body>"
        f"<header><h1>Study {_esc(result.study_name)}</h1>"
        f'<p class="lead">Target {_esc(result.definition.target)} ({_esc(result.definition.aggregate)}), '
        f"{_esc(result.definition.mode)} mode.</p><nav>{nav}</nav></header>"
        '<div id="render-problems" class="banner" hidden></div>'
        f"{notes_html}{''.join(sections)}"
        f"<footer>Generated {created} by optimizer {_esc(__version__)}. Self-contained: it loads nothing from "
        "the network.</footer>\n</body></html>\n"
    )
