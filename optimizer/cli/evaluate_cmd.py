"""``optimizer evaluate``, ``optimizer evaluate-set`` and ``optimizer weights``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ._app import EXIT_INTERRUPTED, app, fail, fail_batch, stop_on_interrupt
from ._grammar import JobsOption, JsonOption, LegacyFormatOption, LegacyWorkersOption, jobs_from, output_style
from ._output import ProgressReporter, console, err_console
from ._parsing import split_list

if TYPE_CHECKING:
    from ..batch import BatchReport
    from ..evaluator import EvaluationResult, Evaluator


def build_evaluator(
    profile: str | None, metrics: str | None, resize_to_reference: bool = False, config: Path | None = None
) -> Evaluator:
    """An evaluator from the ``--profile`` / ``--metrics`` / ``--config`` options shared by several commands.

    The config file gives defaults (custom profiles, levels, metric options); the flags override it.
    """
    from ..config import EvaluatorConfig, load_config

    settings = load_config(config) if config is not None else EvaluatorConfig()
    return settings.evaluator(
        profile=profile, metrics=split_list(metrics) or None, resize_to_reference=resize_to_reference or None
    )


@app.command("evaluate")
def evaluate_command(
    reference: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Original image or folder.")],
    distorted: Annotated[Path, typer.Argument(metavar="DISTORTED", help="Processed image or folder.")],
    profile: Annotated[Optional[str], typer.Option(help="Composite profile (default, seed, perceptual, fast).")] = None,
    metrics: Annotated[
        Optional[str], typer.Option(help="Comma-separated metrics (equal weights unless --profile).")
    ] = None,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the full JSON report here.")] = None,
    csv: Annotated[Optional[Path], typer.Option(help="Write per-pair rows as CSV here.")] = None,
    maps: Annotated[
        Optional[Path],
        typer.Option(help="Write heat maps (PNG, fixed scale per metric) as DIR/<processed stem>.<metric>.png."),
    ] = None,
    jobs: JobsOption = 1,
    legacy_workers: LegacyWorkersOption = None,
    resize_to_reference: Annotated[
        bool, typer.Option("--resize-to-reference", help="Resize processed images to the reference size.")
    ] = False,
    config: Annotated[
        Optional[Path], typer.Option(help="TOML file with custom profiles, levels and evaluator defaults.")
    ] = None,
) -> None:
    """Score processed images against their originals: two files or two folders (paired by relative path
    and stem, so a/b.png pairs with a/b.webp).

    Folders: exit 3 when a pair could not be scored (after scoring the others and writing the reports);
    Ctrl-C stops after the pairs in progress, writes what finished (the JSON report marked interrupted) and
    exits 130.

    \b
    Examples:
      optimizer evaluate photo.png photo.avif
      optimizer evaluate originals/ processed/ --profile fast -j 2 --report report.json --csv report.csv
      optimizer evaluate photo.png photo.jpg --metrics ssimulacra2,lpips --maps maps/ --json
    """
    import threading

    from ..batch import BatchReport, PairResult, evaluate_folders
    from ..heatmaps import write_maps
    from ..imageio import load_image

    output_format = output_style(as_json, legacy_format)
    workers = jobs_from(jobs, legacy_workers)
    evaluator = build_evaluator(profile, metrics, resize_to_reference, config)
    if reference.is_dir() != distorted.is_dir():
        fail(f"REFERENCE and DISTORTED must both be files or both be folders, got {reference} and {distorted}")
    if reference.is_dir():
        stop = threading.Event()
        with stop_on_interrupt(stop, "pairs"), ProgressReporter("evaluating") as bar:
            batch = evaluate_folders(
                reference,
                distorted,
                evaluator=evaluator,
                jobs=workers,
                maps_dir=maps,
                progress=bar.update,
                stop=stop,
            )
    else:
        evaluator.load()
        scorer = evaluator.for_reference(reference)
        processed = load_image(distorted, color="keep")  # decoded once, for the score and the maps (sRGB)
        result = scorer.score(processed)
        if maps is not None:
            write_maps(scorer.maps(processed), maps, distorted.stem)  # the key a folder pair would get
        pair = PairResult(
            distorted.stem, str(reference), str(distorted), result, reference.stat().st_size, distorted.stat().st_size
        )
        batch = BatchReport(pairs=[pair], issues=[], evaluator=evaluator.describe())
    if report is not None:
        batch.to_json(report)
    if csv is not None:
        batch.to_csv(csv)
    if output_format == "json":
        typer.echo(batch.to_json())
    elif len(batch.pairs) == 1 and not batch.issues and not reference.is_dir():
        _print_single(batch.pairs[0].result, batch.pairs[0].distorted_bytes)
    else:
        _print_summary(batch)
    total = len(batch.pairs) + len(batch.failed) + len(batch.not_scored)
    if batch.interrupted:
        written = [f"{report} (marked interrupted)"] if report is not None else []
        written += [str(csv)] if csv is not None else []
        err_console.print(
            f"interrupted: {len(batch.pairs)} of {total} pairs scored"
            + (f"; written to {' and '.join(written)}" if written else ""),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if batch.failed:
        fail_batch([(i.path, i.reason) for i in batch.failed], total, "pairs")


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"


def _print_single(result: EvaluationResult, distorted_bytes: int) -> None:
    from rich.table import Table

    table = Table(title=f"{result.distorted} vs {result.reference}")
    for column in ("metric", "value", "normalised", "weight"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for name, value in result.scores.items():
        table.add_row(name, _fmt(value), f"{result.normalised[name]:.3f}", f"{result.weights.get(name, 0.0):.2f}")
    table.add_row("composite", f"{result.composite:.4f}", "", result.profile)
    console.print(table)
    bpp = distorted_bytes * 8 / (result.width * result.height)
    console.print(f"level: {result.level}   bytes: {distorted_bytes:,}   bits per pixel: {bpp:.3f}", highlight=False)


def _print_summary(batch: BatchReport) -> None:
    from rich.table import Table

    summary = batch.summary()
    table = Table(title=f"{summary['count']} pairs ({summary['unpaired']} unpaired, {summary['failed']} failed)")
    for column in ("metric", "mean", "median", "p10", "p90", "worst", "worst pair"):
        table.add_column(column, justify="left" if column in ("metric", "worst pair") else "right")
    for name, s in summary["metrics"].items():
        table.add_row(
            name, _fmt(s["mean"]), _fmt(s["median"]), _fmt(s["p10"]), _fmt(s["p90"]), _fmt(s["worst"]), s["worst_pair"]
        )
    console.print(table)
    if summary["count"]:
        levels = ", ".join(f"{k} {v}" for k, v in summary["levels"].items() if v)
        b = summary["bytes"]
        console.print(f"levels: {levels}", highlight=False)
        console.print(
            f"bytes: {b['distorted_total']:,} processed / {b['reference_total']:,} original "
            f"({b['ratio']:.1%}), {b['bits_per_pixel']:.3f} bits per pixel",
            highlight=False,
        )
    for issue in batch.issues:
        console.print(f"[yellow]{issue.kind}:[/] {issue.path}: {issue.reason}", highlight=False)


@app.command("evaluate-set")
def evaluate_set_command(
    reference_dir: Annotated[Path, typer.Argument(metavar="REFERENCE", help="Folder of reference images.")],
    distorted_dir: Annotated[Path, typer.Argument(metavar="DISTORTED", help="Folder of processed images.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Images per Inception batch.")] = 16,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
) -> None:
    """Fréchet Inception Distance between two sets of images (a set-to-set distance, not per pair).

    \b
    Examples:
      optimizer evaluate-set originals/ generated/
      optimizer evaluate-set originals/ generated/ --batch-size 8 --json
    """
    from ..metrics.fid import evaluate_set

    result = evaluate_set(reference_dir, distorted_dir, batch_size=batch_size)
    if output_style(as_json, legacy_format) == "json":
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(
            f"FID {result.value:.4f} ({result.n_ref} reference, {result.n_dist} processed images)", highlight=False
        )


weights_app = typer.Typer(no_args_is_help=False)
app.add_typer(weights_app, name="weights")


@weights_app.callback(invoke_without_command=True)
def weights_status_command(
    ctx: typer.Context,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
) -> None:
    """Pretrained network weights: which files are present, where they are expected, which metrics need them.

    \b
    Examples:
      optimizer weights
      optimizer weights --json
      optimizer weights import ~/Downloads/alexnet-owt-7be5be79.pth
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..metrics.weights import cache_dir, weights_status

    statuses = weights_status()
    if output_style(as_json, legacy_format) == "json":
        typer.echo(json.dumps([s.to_dict() for s in statuses], indent=2, default=str))
        return
    console.print(f"weights cache: {cache_dir()} (set TORCH_HOME to move it)", highlight=False, soft_wrap=True)
    for status in statuses:
        mark = "[green]present[/]" if status.present else "[red]missing[/]"
        console.print(
            f"{mark}  {status.file}  (needed by {', '.join(status.needed_by)})", highlight=False, soft_wrap=True
        )
        if not status.present:
            console.print(
                f"         download {status.url} and run: optimizer weights import FILE",
                highlight=False,
                soft_wrap=True,
            )


@weights_app.command("import")
def weights_import_command(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Weight files you downloaded elsewhere.")],
) -> None:
    """Verify weight files and copy them into the standard cache (honours TORCH_HOME).

    \b
    Examples:
      optimizer weights import alexnet-owt-7be5be79.pth vgg16-397923af.pth
    """
    from ..metrics.weights import import_weights

    for file in files:
        target = import_weights(file)
        console.print(f"imported {file} -> {target}", highlight=False)
