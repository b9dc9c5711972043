"""``optimizer compress``: per image, the smallest encoding that meets a quality target."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import InvalidParameterError
from ._app import EXIT_CHECK_FAILED, EXIT_INPUT, app, fail
from ._output import ProgressReporter, console
from ._parsing import parse_scalar, split_list

if TYPE_CHECKING:
    from ..tuning.adaptive import CompressReport

#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_INTERVAL = 2.0

_RANGE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:-|\.\.)\s*(\d+(?:\.\d*)?|\.\d+)\s*$")


def parse_quality_range(text: str | None) -> tuple[float, float] | dict[str, tuple[float, float]] | None:
    """``"40-95"`` (every format) or ``"jpeg=40-95,jxl=0.5-3"`` (per format, in each axis's units)."""
    if not text:
        return None
    if "=" not in text:
        return _range(text, text)
    out: dict[str, tuple[float, float]] = {}
    for item in split_list(text):
        name, sep, span = item.partition("=")
        if not sep or not name.strip():
            raise InvalidParameterError(f"per-format quality ranges are written FORMAT=LOW-HIGH, got {item!r}")
        out[name.strip().lower()] = _range(span, text)
    return out


def _range(span: str, whole: str) -> tuple[float, float]:
    match = _RANGE.match(span)
    if match is None:
        raise InvalidParameterError(
            f"quality ranges are written LOW-HIGH (e.g. 40-95) or FORMAT=LOW-HIGH, got {whole!r}"
        )
    return float(match.group(1)), float(match.group(2))


def parse_format_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["avif.speed=8", "jpeg.progressive=true"]`` -> ``{"avif": {"speed": 8}, "jpeg": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        fmt, dot, name = key.strip().partition(".")
        if not sep or not dot or not fmt or not name:
            raise InvalidParameterError(
                f"fixed settings are written FORMAT.NAME=VALUE (e.g. avif.speed=8), got {item!r}"
            )
        out.setdefault(fmt.lower(), {})[name] = parse_scalar(value)
    return out


@app.command("compress")
def compress_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUTS", help="Image files or folders (recursive).")],
    target: Annotated[
        str, typer.Option("--target", "-t", help="Quality bar METRIC:VALUE, e.g. ssimulacra2:80 or composite:0.8.")
    ],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Folder for the compressed files.")],
    formats: Annotated[
        Optional[str], typer.Option(help="Comma-separated formats to try (default: avif,webp,jpeg).")
    ] = None,
    profile: Annotated[Optional[str], typer.Option(help="Composite profile for composite targets.")] = None,
    param: Annotated[
        Optional[list[str]],
        typer.Option("--param", help="Fixed setting FORMAT.NAME=VALUE (repeatable), e.g. avif.speed=8."),
    ] = None,
    quality_range: Annotated[
        Optional[str],
        typer.Option("--quality-range", help="LOW-HIGH on every format's quality axis, or FORMAT=LOW-HIGH,..."),
    ] = None,
    max_probes: Annotated[Optional[int], typer.Option(min=1, help="Encodes per image and format at most.")] = None,
    keep_original: Annotated[
        bool,
        typer.Option(
            "--keep-original/--no-keep-original", help="Copy the original when it is smaller than every encoding."
        ),
    ] = True,
    fallback: Annotated[
        str, typer.Option(help="When nothing meets the target: keep the 'best' candidate or the 'original'.")
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
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    report: Annotated[Optional[Path], typer.Option(help="Also write the full JSON report here.")] = None,
) -> None:
    """Per image, the smallest file over the formats that still meets the target (checked after writing).

    PNG (and WebP with webp.lossless=true) is tried as a lossless candidate. Large images are searched on a
    small proxy and confirmed at full size; every written file is re-scored from disk. Progress goes to
    stderr, per probe: a live bar on a terminal, plain log lines otherwise.

    Exit code 1 when an image could not meet the target (its best candidate or original is kept), 3 when
    an input could not be read.
    """
    from ..tuning.outputs import existing_policy

    if output_format not in ("table", "json"):
        fail(f"--format must be table or json, got {output_format!r}")
    names = split_list(formats) or None
    compress_report = _run(
        inputs,
        target=target,
        formats=names,
        out_dir=out_dir,
        profile=profile,
        params=parse_format_params(param) or None,
        quality_range=parse_quality_range(quality_range),
        max_probes=max_probes,
        keep_original_if_smaller=keep_original,
        fallback=fallback,
        existing=existing_policy(overwrite=overwrite, skip_existing=skip_existing),
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
    if compress_report.failures:
        raise typer.Exit(EXIT_INPUT)
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
