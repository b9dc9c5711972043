"""Parsing helpers shared by commands: NAME=VALUE parameters, comma lists, and the options every command
that writes images takes (metadata, colour, file times)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ..errors import InvalidParameterError

if TYPE_CHECKING:
    from ..imageio import ColorMode

MetadataOption = Annotated[
    str,
    typer.Option(
        "--metadata",
        metavar="POLICY",
        help="Metadata outputs keep: all, none, web (Artist/Copyright EXIF, ICC only when not sRGB) "
        "or a comma list of exif,icc,xmp. See docs/metadata.md.",
    ),
]
ColorOption = Annotated[
    str,
    typer.Option(
        "--color",
        metavar="<srgb|keep>",
        help="srgb: convert an embedded colour profile to sRGB (warns when colours are clipped); keep: encode "
        "in the source's profile and embed it.",
    ),
]
#: The resize filters (``optimizer.transforms.RESIZE_FILTERS``), spelled out so ``--help`` lists them.
ResizeFilter = Literal["lanczos", "bicubic", "bilinear", "box", "hamming", "nearest"]

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


def parse_format_params(items: list[str], formats: list[str] | None = None) -> dict[str, dict[str, object]]:
    """``--param [FORMAT.]NAME=VALUE`` items per format: ``["avif.speed=8", "quality=80"]`` with formats
    ``["avif", "webp"]`` -> ``{"avif": {"speed": 8, "quality": 80}, "webp": {"quality": 80}}``.

    A setting without ``FORMAT.`` applies to every format in ``formats`` that has the parameter (and is an
    error when none has it); with ``FORMAT.`` only to that format (aliases such as ``jpg`` accepted), which
    must be one of ``formats`` when they are given.
    """
    from ..codecs import get_codec

    out: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidParameterError(f"settings are written [FORMAT.]NAME=VALUE (e.g. avif.speed=8), got {item!r}")
        fmt, dot, name = key.strip().partition(".")
        if dot:
            if not fmt or not name:
                raise InvalidParameterError(f"settings are written [FORMAT.]NAME=VALUE, got {item!r}")
            owner = get_codec(fmt, require_available=False).name
            if formats is not None and owner not in formats:
                raise InvalidParameterError(
                    f"{item!r} sets a {owner} setting, but only {', '.join(formats)} is written here"
                )
            out.setdefault(owner, {})[name] = parse_scalar(value)
            continue
        name = fmt
        owners = [f for f in formats or [] if name in {p.name for p in get_codec(f, require_available=False).params}]
        if not owners:
            known = ", ".join(formats or []) or "no format"
            raise InvalidParameterError(
                f"no format searched here has a setting {name!r} ({known}); write FORMAT.{name}=VALUE"
            )
        for fmt in owners:
            out.setdefault(get_codec(fmt, require_available=False).name, {})[name] = parse_scalar(value)
    return out


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
