"""Parsing helpers shared by commands: NAME=VALUE parameters, comma lists, and the options every command
that writes images takes (metadata, colour, file times)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from ..imageio import ColorMode

MetadataOption = Annotated[
    str,
    typer.Option(
        "--metadata",
        help="Metadata outputs keep: all, none, web (Artist/Copyright EXIF, ICC only when not sRGB) "
        "or a comma list of exif,icc,xmp. See docs/metadata.md.",
    ),
]
ColorOption = Annotated[
    str,
    typer.Option(
        "--color",
        help="srgb: convert an embedded colour profile to sRGB (warns when colours are clipped); keep: encode "
        "in the source's profile and embed it.",
    ),
]
PreserveTimesOption = Annotated[
    bool, typer.Option("--preserve-times", help="Give each output its source's modification time.")
]


def parse_scalar(text: str) -> object:
    """Turn a command-line value into bool, int, float or str (codecs validate and coerce further)."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_params(items: list[str]) -> dict[str, object]:
    """``["quality=60", "speed=6"]`` -> ``{"quality": 60, "speed": 6}``."""
    params: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InvalidParameterError(f"parameters are written NAME=VALUE, got {item!r}")
        params[name.strip()] = parse_scalar(value)
    return params


def parse_color(text: str) -> ColorMode:
    """The ``--color`` value: ``srgb`` or ``keep`` (any case)."""
    value = text.strip().lower()
    if value == "srgb":
        return "srgb"
    if value == "keep":
        return "keep"
    raise InvalidParameterError(f"--color must be srgb or keep, got {text!r}")


def split_list(text: str | None) -> list[str]:
    """``"avif, webp"`` -> ``["avif", "webp"]``; empty or None -> ``[]``."""
    if not text:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]
