"""``optimizer codecs`` and ``optimizer encode``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._app import app
from ._grammar import JsonOption, LegacyFormatOption, output_style
from ._output import console
from ._parsing import (
    ColorOption,
    MetadataOption,
    PreserveTimesOption,
    ResizeFilter,
    parse_color,
    parse_format_params,
)


@app.command("codecs")
def codecs_command(as_json: JsonOption = False, legacy_format: LegacyFormatOption = None) -> None:
    """List the codecs, their parameters and the library versions behind them.

    \b
    Examples:
      optimizer codecs
      optimizer codecs --json | jq '.[] | select(.available) | .name'
    """
    from ..codecs import codec_names, get_codec

    described = [get_codec(name, require_available=False).describe() for name in codec_names()]
    if output_style(as_json, legacy_format) == "json":
        typer.echo(json.dumps(described, indent=2))
        return
    from rich.table import Table

    table = Table(title="Codecs")
    for column in ("codec", "available", "parameters", "libraries"):
        table.add_column(column)
    for info in described:
        params = "\n".join(_describe_param(p) for p in info["params"])
        libs = "\n".join(f"{k} {v}" for k, v in info.get("library_versions", {}).items())
        table.add_row(info["name"], "yes" if info["available"] else "no", params, libs)
    console.print(table)


def _describe_param(p: dict[str, Any]) -> str:
    if p.get("choices") is not None:
        values = "|".join(str(c) for c in p["choices"])
    elif p.get("low") is not None:
        values = f"{p['low']}..{p['high']}"
    else:
        values = p["kind"]
    return f"{p['name']}={p['default']} ({values})"


@app.command("encode")
def encode_command(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Image to encode.")],
    codec: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="Image format to write (see `optimizer codecs`).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="File to write.")],
    param: Annotated[
        Optional[list[str]],
        typer.Option(
            "--param",
            "-p",
            metavar="[FORMAT.]NAME=VALUE",
            help="Encoder setting [FORMAT.]NAME=VALUE (repeatable), e.g. quality=60.",
        ),
    ] = None,
    width: Annotated[Optional[int], typer.Option(help="Resize to this width (aspect kept).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Resize to this height (aspect kept).")] = None,
    resize_filter: Annotated[ResizeFilter, typer.Option("--filter", help="Resize filter.")] = "lanczos",
    sharpen: Annotated[float, typer.Option(help="Unsharp-mask amount after resizing (0 = none).")] = 0.0,
    metadata: MetadataOption = "web",
    color: ColorOption = "srgb",
    preserve_times: PreserveTimesOption = False,
) -> None:
    """Encode one image and print its size in bytes and bits per pixel.

    \b
    Examples:
      optimizer encode photo.png -f avif -p quality=60 -p speed=6 -o photo.avif
      optimizer encode photo.jpg -f webp --width 1280 --sharpen 0.3 -o photo-1280.webp
    """
    from .._files import source_times, write_atomic
    from ..codecs import get_codec
    from ..imageio import MetadataPolicy, load_image
    from ..transforms import Transform

    encoder = get_codec(codec)
    params = encoder.validate_params(parse_format_params(param or [], [encoder.name]).get(encoder.name, {}))
    policy = MetadataPolicy.parse(metadata)
    transform = Transform(width=width, height=height, filter=resize_filter, sharpen_amount=sharpen)
    image = transform.apply(load_image(input_path, color=parse_color(color)))
    data = encoder.encode(image, params, metadata=policy)
    write_atomic(output, data, times_ns=source_times(input_path) if preserve_times else None)
    bpp = len(data) * 8 / image.pixels
    console.print(
        f"{output}: {len(data):,} bytes, {bpp:.3f} bits per pixel ({image.width}x{image.height}, "
        f"{encoder.name} {', '.join(f'{k}={v}' for k, v in params.items())})",
        highlight=False,
    )
