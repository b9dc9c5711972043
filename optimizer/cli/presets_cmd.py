"""``optimizer presets show|export|build`` and ``optimizer apply``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ._app import EXIT_CHECK_FAILED, app, fail, fail_batch
from ._grammar import (
    JobsOption,
    JsonOption,
    LegacyFormatOption,
    LegacyWorkersOption,
    expand_paths,
    jobs_from,
    output_style,
    split_out_dir,
)
from ._output import ProgressReporter, console
from ._parsing import ColorOption, MetadataOption, PreserveTimesOption, parse_color

if TYPE_CHECKING:
    from ..tuning.apply import ApplyReport
    from ..tuning.presets import Preset

presets_app = typer.Typer(
    help="Show, export and build encoder presets.\n\n\b\nExamples:\n  optimizer presets show studies/demo-presets.json\n"
    "  optimizer presets export studies/demo-presets.json --to cwebp --input photo.png -o photo.webp\n"
    "  optimizer presets build --study demo -o presets.json",
    no_args_is_help=True,
)
app.add_typer(presets_app, name="presets")


@presets_app.command("show")
def presets_show_command(
    presets: Annotated[Path, typer.Argument(metavar="PRESETS", help="Preset file (JSON).")],
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
) -> None:
    """List a preset's tiers: target, codec and settings, expected bits per pixel and quality.

    \b
    Examples:
      optimizer presets show presets.json
      optimizer presets show presets.json --json
    """
    from ..tuning.presets import Preset

    output_format = output_style(as_json, legacy_format)
    preset = Preset.load(presets)
    if output_format == "json":
        typer.echo(preset.to_json())
        return
    _print_preset(preset, presets)


def _print_preset(preset: Preset, path: Path) -> None:
    from rich.table import Table

    study = preset.study or {}
    table = Table(title=f"{path}: {len(preset.tiers)} tier(s), {preset.mode} study {study.get('name')!r}")
    for column in ("tier", "target", "settings", "bits/px", "bytes", "quality", "trial"):
        table.add_column(column, justify="right" if column in ("bits/px", "bytes", "quality", "trial") else "left")
    for row in preset.summary_rows():
        name = row["tier"] + (" *" if row["default"] else "")
        table.add_row(
            name,
            row["target"],
            row["settings"],
            _num(row["bits_per_pixel"], 3),
            f"{row['total_bytes']:,}",
            _num(row["quality"], 4),
            "" if row["trial"] is None else str(row["trial"]),
        )
    console.print(table)
    evaluator = preset.evaluator or {}
    corpus = preset.corpus or {}
    console.print(
        f"* default tier. target {preset.target} ({preset.aggregate}); evaluator {evaluator.get('profile')} "
        f"({', '.join(evaluator.get('metrics') or [])}); corpus {corpus.get('images')} images, fingerprint "
        f"{corpus.get('fingerprint')}; storage {study.get('storage')}; created {preset.created} with optimizer "
        f"{preset.optimizer_version}",
        highlight=False,
    )


def _num(value: float | None, digits: int) -> str:
    import math

    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@presets_app.command("export")
def presets_export_command(
    presets: Annotated[Path, typer.Argument(metavar="PRESETS", help="Preset file (JSON).")],
    to: Annotated[
        Literal["pillow", "cjpeg", "cwebp", "avifenc", "cjxl", "imagemagick", "sharp"],
        typer.Option("--to", help="The tool to print the tier for."),
    ],
    tier: Annotated[Optional[str], typer.Option(help="Tier name (default: the preset's default tier).")] = None,
    input_name: Annotated[
        str, typer.Option("--input", help="Input file name written in the printed command.")
    ] = "input.png",
    output_name: Annotated[
        Optional[str], typer.Option("--output", "-o", help="Output file name written in the printed command.")
    ] = None,
    program: Annotated[
        Optional[str],
        typer.Option(
            help="ImageMagick program: magick (7) or convert (6); default: the one installed here (magick first)."
        ),
    ] = None,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
    notes: Annotated[bool, typer.Option("--notes/--no-notes", help="Print where the tool differs.")] = True,
) -> None:
    """Print a tier as Pillow arguments, a command line or a sharp options object.

    \b
    Examples:
      optimizer presets export presets.json --to cwebp --input photo.png -o photo.webp
      optimizer presets export presets.json --to sharp --tier high
      optimizer presets export presets.json --to imagemagick --program convert --json
    """
    from ..tuning.export import export_tier
    from ..tuning.presets import Preset

    output_format = output_style(as_json, legacy_format)
    preset = Preset.load(presets)
    chosen = preset.tier(tier)
    exports = export_tier(chosen, to, input=input_name, output=output_name, program=program)
    if output_format == "json":
        typer.echo(json.dumps({"tier": chosen.name, "exports": [e.to_dict() for e in exports]}, indent=2))
        return
    for i, export in enumerate(exports):
        if len(exports) > 1:
            typer.echo(f"{export.comment_prefix} width {export.width}")
        typer.echo(export.render(notes=notes))
        if i < len(exports) - 1:
            typer.echo("")


@presets_app.command("build")
def presets_build_command(
    study: Annotated[str, typer.Option("--study", help="Study name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Preset file to write.")],
    storage: Annotated[Optional[str], typer.Option(help="Optuna storage URL (default: studies/NAME.db).")] = None,
    tier: Annotated[
        Optional[list[str]],
        typer.Option("--tier", help="Extra tier NAME=METRIC:VALUE (repeatable; constrained studies)."),
    ] = None,
    point: Annotated[
        Optional[list[int]], typer.Option("--point", help="Trial number to export as a tier (repeatable).")
    ] = None,
) -> None:
    """Build a preset file from an existing study (the same study always gives the same tiers).

    \b
    Examples:
      optimizer presets build --study demo -o presets.json
      optimizer presets build --study web --storage postgresql://USER:PASS@db/optimizer --tier high=ssimulacra2:90 -o web.json
    """
    from ..tuning.storage import redact_storage
    from ..tuning.study import open_stored_study
    from ..tuning.tiers import build_preset

    tiers: dict[str, str] = {}
    for item in tier or []:
        name, sep, target = item.partition("=")
        if not sep or not name.strip() or not target.strip():
            fail(f"tiers are written NAME=METRIC:VALUE (e.g. high=ssimulacra2:90), got {item!r}")
        tiers[name.strip()] = target.strip()
    loaded, _ = open_stored_study(study, storage)
    preset = build_preset(
        loaded, tiers=tiers or None, pareto_points=point or None, storage=redact_storage(storage) if storage else None
    )
    preset.save(output)
    console.print(f"wrote {output}: {len(preset.tiers)} tier(s) ({', '.join(preset.tier_names)})", highlight=False)


@app.command("apply")
def apply_command(
    presets: Annotated[Path, typer.Argument(metavar="PRESETS", help="Preset file (JSON).")],
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUTS...", help="Images, folders (recursive) or quoted globs to encode.")
    ],
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out-dir", "-d", metavar="DIR", help="Folder to write into (subfolders mirrored)."),
    ] = None,
    tier: Annotated[Optional[str], typer.Option(help="Tier name (default: the preset's default tier).")] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Score every output and report the misses.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave existing outputs alone (re-running a batch).")
    ] = False,
    jobs: JobsOption = 1,
    legacy_workers: LegacyWorkersOption = None,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the JSON report here.")] = None,
    metadata: MetadataOption = "web",
    color: ColorOption = "srgb",
    preserve_times: PreserveTimesOption = False,
) -> None:
    """Encode a folder with a preset tier; exit 1 when --verify finds outputs below the tier's target.

    Exit 3 when an input could not be read, encoded or written (existing outputs without --overwrite or
    --skip-existing), after encoding the others; it comes before exit 1.

    \b
    Examples:
      optimizer apply presets.json photos/ -d out/ --verify
      optimizer apply presets.json 'new/*.jpg' -d out/ --tier high -j 2 --skip-existing
      optimizer apply presets.json photos/ -d out/ --metadata all --preserve-times --json
    """
    from ..tuning.apply import apply_preset
    from ..tuning.outputs import existing_policy
    from ..tuning.presets import Preset

    output_format = output_style(as_json, legacy_format)
    sources, out_folder = split_out_dir(expand_paths(inputs), out_dir, legacy_last=True)
    existing = existing_policy(overwrite=overwrite, skip_existing=skip_existing)
    preset = Preset.load(presets)
    options: dict[str, Any] = {
        "tier": tier,
        "verify": verify,
        "jobs": jobs_from(jobs, legacy_workers),
        "existing": existing,
        "metadata": metadata,
        "color": parse_color(color),
        "preserve_times": preserve_times,
    }
    if output_format == "table":
        with ProgressReporter("encoding") as bar:
            result = apply_preset(preset, sources, out_folder, progress=bar.update, **options)
    else:
        result = apply_preset(preset, sources, out_folder, **options)
    if report is not None:
        result.to_json(report)
    if output_format == "json":
        typer.echo(result.to_json())
    else:
        _print_apply(result)
    if result.problems:  # before the misses: a verification of an incomplete batch is no verdict
        attempted = len({i.source for i in result.items} | {i.path for i in result.problems})
        fail_batch([(i.path, i.reason) for i in result.problems], attempted, "inputs")
    if result.misses:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _print_apply(result: ApplyReport) -> None:
    from rich.table import Table

    totals = result.totals()
    table = Table(title=f"tier {result.tier} ({result.codec}, target {result.target})")
    columns = ["output", "size", "bytes in", "bytes out", "bits/px"]
    if result.verified:
        columns += ["quality", "met"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("output", "met") else "right")
    for item in result.items:
        row = [
            _escape(_relative(item.output, result.out_dir)),
            f"{item.width}x{item.height}",
            f"{item.bytes_in:,}",
            f"{item.bytes_out:,}",
            f"{item.bits_per_pixel:.3f}",
        ]
        if result.verified:
            row += [_num(item.quality, 4), "yes" if item.met else "[red]no[/]"]
        table.add_row(*row)
    console.print(table)
    ratio = totals["byte_ratio"]
    line = (
        f"{totals['outputs']} output(s) from {totals['inputs']} input(s): {totals['bytes_out']:,} bytes "
        f"({'-' if ratio is None else f'{ratio:.1%}'} of {totals['bytes_in']:,})"
    )
    if totals["bits_per_pixel"] is not None:
        line += f", {totals['bits_per_pixel']:.3f} bits per pixel"
    console.print(line, highlight=False)
    if result.verified:
        agg = totals["quality"]
        console.print(
            f"verified: {totals['met']} met, {totals['missed']} missed the target {result.target}; "
            f"{totals['aggregate']} {'-' if agg is None else f'{agg:.4f}'} "
            f"({'meets' if totals['aggregate_met'] else 'misses'} the target)",
            highlight=False,
        )
        for item in result.misses:
            console.print(f"[red]miss:[/] {_escape(item.output)}: {_num(item.quality, 4)}", highlight=False)
    for issue in result.issues:
        colour = "yellow" if issue.kind == "skipped" else "red"
        console.print(f"[{colour}]{issue.kind}:[/] {_escape(issue.path)}: {_escape(issue.reason)}", highlight=False)


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
