"""``optimizer compress``: per image, the smallest encoding that meets a quality target."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from ._app import EXIT_CHECK_FAILED, app, fail, fail_batch
from ._grammar import JsonOption, LegacyFormatOption, deprecated, expand_paths, output_style, split_out_dir
from ._output import ProgressReporter, console
from ._parsing import (
    ColorOption,
    MetadataOption,
    PreserveTimesOption,
    parse_color,
    parse_format_params,
    parse_quality_range,
    split_list,
)

if TYPE_CHECKING:
    from ..tuning.adaptive import CompressReport

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_INTERVAL = 2.0


@app.command("compress")
def compress_command(
    inputs: Annotated[
        list[Path], typer.Argument(metavar="INPUTS...", help="Image files, folders (recursive) or quoted globs.")
    ],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            "-t",
            metavar="METRIC:VALUE",
            help="Quality bar METRIC:VALUE, e.g. ssimulacra2:80 or composite:0.8.",
        ),
    ],
    out_dir: Annotated[
        Optional[Path], typer.Option("--out-dir", "-d", metavar="DIR", help="Folder for the compressed files.")
    ] = None,
    legacy_out: Annotated[Optional[Path], typer.Option("-o", hidden=True, help="Deprecated: use -d/--out-dir.")] = None,
    formats: Annotated[
        Optional[str], typer.Option(metavar="A,B", help="Comma-separated formats to try (default: avif,webp,jpeg).")
    ] = None,
    profile: Annotated[Optional[str], typer.Option(help="Composite profile for composite targets.")] = None,
    param: Annotated[
        Optional[list[str]],
        typer.Option(
            "--param",
            "-p",
            metavar="[FORMAT.]NAME=VALUE",
            help="Fixed setting [FORMAT.]NAME=VALUE (repeatable), e.g. avif.speed=8 or speed=8.",
        ),
    ] = None,
    quality: Annotated[
        Optional[str],
        typer.Option(
            "--quality", metavar="LOW-HIGH", help="LOW-HIGH on every format's quality axis, or FORMAT=LOW-HIGH,..."
        ),
    ] = None,
    legacy_quality: Annotated[
        Optional[str], typer.Option("--quality-range", hidden=True, help="Deprecated: use --quality.")
    ] = None,
    max_probes: Annotated[Optional[int], typer.Option(min=1, help="Encodes per image and format at most.")] = None,
    keep_original: Annotated[
        bool,
        typer.Option(
            "--keep-original/--no-keep-original", help="Copy the original when it is smaller than every encoding."
        ),
    ] = True,
    fallback: Annotated[
        Literal["best", "original"],
        typer.Option(help="When nothing meets the target: keep the best candidate or the original."),
    ] = "best",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave inputs whose output exists alone (re-running a batch).")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Images compressed at once (threads).")] = 1,
    max_width: Annotated[
        Optional[int], typer.Option("--max-width", min=1, help="Shrink wider images to this width first.")
    ] = None,
    max_height: Annotated[
        Optional[int], typer.Option("--max-height", min=1, help="Shrink taller images to this height first.")
    ] = None,
    as_json: JsonOption = False,
    legacy_format: LegacyFormatOption = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the full JSON report here.")] = None,
    metadata: MetadataOption = "web",
    color: ColorOption = "srgb",
    preserve_times: PreserveTimesOption = False,
) -> None:
    """Per image, the smallest file over the formats that still meets the target (checked after writing).

    PNG (and WebP with webp.lossless=true) is tried as a lossless candidate. Large images are searched on a
    small proxy and confirmed at full size; every written file is re-scored from disk. Progress goes to
    stderr, per probe: a live bar on a terminal, plain log lines otherwise.

    Exit code 1 when an image could not meet the target (its best candidate or original is kept), 3 when
    an input could not be read.

    \b
    Examples:
      optimizer compress photos/ -t ssimulacra2:80 -d out/
      optimizer compress 'shots/*.png' -t ssimulacra2:85 --formats avif,webp -p avif.speed=4 -d out/
      optimizer compress photo.jpg -t composite:0.85 --quality jpeg=60-95 --json -d out/
    """
    from ..codecs import get_codec
    from ..tuning.adaptive import DEFAULT_FORMATS
    from ..tuning.outputs import existing_policy

    output_format = output_style(as_json, legacy_format)
    if legacy_quality is not None:
        deprecated("--quality-range", "--quality")
        if quality is not None:
            fail("give --quality (or the deprecated --quality-range), not both")
        quality = legacy_quality
    sources, out_dir = split_out_dir(expand_paths(inputs), out_dir, legacy_out)
    names = split_list(formats) or None
    searched = [get_codec(n, require_available=False).name for n in (names or DEFAULT_FORMATS)]
    compress_report = _run(
        sources,
        target=target,
        formats=names,
        out_dir=out_dir,
        profile=profile,
        params=parse_format_params(param or [], searched) or None,
        quality_range=parse_quality_range(quality),
        max_probes=max_probes,
        keep_original_if_smaller=keep_original,
        fallback=fallback,
        existing=existing_policy(overwrite=overwrite, skip_existing=skip_existing),
        metadata=metadata,
        color=parse_color(color),
        preserve_times=preserve_times,
        jobs=jobs,
        max_width=max_width,
        max_height=max_height,
        show_progress=True,
    )
    if report is not None:
        compress_report.to_json(report)
    if output_format == "json":
        typer.echo(compress_report.to_json())
    else:
        _print_table(compress_report)
    if compress_report.failures:  # before the misses, as every batch does
        attempted = len(compress_report.results) + len(compress_report.failures)
        fail_batch([(f.input, f.reason) for f in compress_report.failures], attempted, "images")
    if compress_report.unmet:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _run(inputs: list[Path], *, show_progress: bool, **options: Any) -> CompressReport:
    from ..tuning.adaptive import compress

    if not show_progress:
        return compress(inputs, **options)
    with ProgressReporter("compressing", interval=PROGRESS_INTERVAL) as bar:

        def progress(done: int, total: int, label: str) -> None:
            bar.update(done, total, Path(label).name)

        return compress(inputs, progress=progress, **options)


def _print_table(report: CompressReport) -> None:
    from rich.table import Table

    totals = report.totals()
    table = Table(title=f"compress to {report.target} ({', '.join(report.formats)})")
    for column in ("image", "output", "bytes", "saved", "bpp", "quality", "met", "probes"):
        table.add_column(column, justify="left" if column in ("image", "output", "probes") else "right")
    for r in report.results:
        saved = f"{r.saved:.1%}" if r.saved is not None else "-"
        probes = ", ".join(_probes(o) if r.proxy else f"{o.format} {o.probes}" for o in r.formats)
        probes += f" = {r.total_probes}"
        met = "yes" if r.met else "[bold red]NO[/]"
        table.add_row(
            Path(r.input).name,
            r.setting_label,
            f"{r.bytes:,}",
            saved,
            f"{r.bits_per_pixel:.3f}",
            _quality(r.quality),
            met,
            probes,
        )
    console.print(table)
    line = (
        f"{totals['met']} of {totals['images']} met the target; {totals['bytes']:,} bytes"
        + (f" ({totals['saved']:.1%} smaller than the originals)" if totals["saved"] is not None else "")
        + (
            f"; {totals['probes']} probes, {totals['probes_per_image']:.1f} per image"
            if totals["probes_per_image"] is not None
            else ""
        )
        + f"; {totals['seconds']:.1f} s"
    )
    console.print(line, highlight=False)
    for r in report.results:
        if r.reason:
            colour = "yellow" if r.met else "red"
            console.print(f"[{colour}]{Path(r.input).name}:[/] {_escape(r.reason)}", highlight=False)
    for failure in report.failures:
        console.print(f"[red]failed:[/] {_escape(failure.input)}: {_escape(failure.reason)}", highlight=False)


def _probes(outcome: Any) -> str:
    """``avif 7 (1 full size)``: probes on the proxy and at full size."""
    return f"{outcome.format} {outcome.probes} ({outcome.full_size_encodes} full size)"


def _quality(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
