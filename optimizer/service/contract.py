"""What the work endpoints accept, defined once: the server checks requests with it and the OpenAPI schema
publishes it, so that every request the schema calls valid is served and every one it calls invalid is
refused (``tests/test_service_schema.py`` holds the two to that with schemathesis).

:class:`RequestRules` derives from the config: the enabled profiles (an ``enum``), the metrics they compute
and the formats the server can search (comma-separated lists, as regular expressions that use only what
Python's ``re`` and JSON Schema's ECMA-262 dialect read alike), quality targets ``METRIC:VALUE`` whose value
is always a finite number (and within [0, 1] for ``composite``), and the multipart bodies: exactly the file
fields each endpoint takes, a batch as pairs *or* one archive, never both.

The options may also be sent as form fields (``curl -F target=ssimulacra2:80``); they are checked by the
same rules, and the schema lists them as query parameters only, so that no request can carry two of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..codecs import available_codecs
from ..errors import UnknownNameError
from ..evaluator import get_profile
from .config import ServiceConfig
from .errors import ServiceError

__all__ = ["MAX_FORMATS", "METRIC_MIN_SIDE", "RequestRules"]

#: Formats one ``/compress`` request may name.
MAX_FORMATS = 8

#: Smallest width and height each metric scores (SSIM's 11x11 window; LPIPS' AlexNet pooling...). Images
#: below the largest of a profile's metrics are refused with 422 ``invalid_image`` when scored.
METRIC_MIN_SIDE: dict[str, int] = {
    "psnr": 1,
    "ssim": 11,
    "ms_ssim": 11,
    "ssimulacra2": 8,
    "lpips": 31,
    "dists": 1,
    "stlpips": 21,
}

_NUMBER = r"[+-]?([0-9]{1,15}(\.[0-9]{0,15})?|\.[0-9]{1,15})([eE][+-]?[0-9]{1,2})?"
_UNIT_NUMBER = r"(0?\.[0-9]{1,15}|0(\.[0-9]{0,15})?|1(\.0{0,15})?)"
_BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def _caseless(name: str) -> str:
    """A regular expression matching ``name`` in any case, the same way in Python and ECMA-262."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


def _alternatives(names: Sequence[str]) -> str:
    # Longest first, so that no name is cut short by a prefix of it.
    return "(" + "|".join(_caseless(n) for n in sorted(names, key=len, reverse=True)) + ")"


def _list_pattern(names: Sequence[str], most: int | None = None) -> str:
    """Comma-separated ``names`` (any case, spaces around them), or nothing at all."""
    item = f" *{_alternatives(names)} *"
    repeat = "*" if most is None else f"{{0,{most - 1}}}"
    return f"^( *|{item}(,{item}){repeat})$"


#: What ``metadata`` accepts: ``all``, ``none``, ``web`` or a comma list of ``exif``, ``icc``, ``xmp``
#: (:class:`~optimizer.imageio.MetadataPolicy`; case-insensitive there, lower case in the schema).
METADATA_PATTERN = "^(all|none|web|(exif|icc|xmp)(,(exif|icc|xmp)){0,2})$"


@dataclass(frozen=True)
class RequestRules:
    """The accepted values of the work endpoints' parameters, for one config.

    Args:
        profiles: the enabled profiles, the default first.
        metrics: the metrics the enabled profiles compute.
        formats: the formats ``/compress`` can search here (names and aliases of installed codecs with a
            quality axis).
        codecs: every codec name and alias, for messages about the others.
        max_batch_pairs: pairs per batch.
        min_side: the smallest width and height the enabled profiles score.
    """

    profiles: tuple[str, ...]
    metrics: tuple[str, ...]
    formats: tuple[str, ...]
    codecs: tuple[str, ...]
    max_batch_pairs: int
    min_side: int

    @classmethod
    def for_config(cls, config: ServiceConfig) -> RequestRules:
        """The rules of a server started with ``config`` (nothing is loaded to build them).

        Args:
            config: the service's settings.

        Returns:
            The rules.
        """
        from ..tuning.quality_axis import QualityAxis

        metrics = tuple(dict.fromkeys(m for p in config.profiles for m in get_profile(p).weights))
        searchable = [c for c in available_codecs() if QualityAxis.for_codec(c, None) is not None]
        from ..codecs import codec_names, get_codec

        every = [n for name in codec_names() for n in (name, *get_codec(name, require_available=False).aliases)]
        return cls(
            profiles=tuple(config.profiles),
            metrics=metrics,
            formats=tuple(n for c in searchable for n in (c.name, *c.aliases)),
            codecs=tuple(every),
            max_batch_pairs=config.max_batch_pairs,
            min_side=max(METRIC_MIN_SIDE.get(m, 1) for m in metrics),
        )

    # -- patterns ------------------------------------------------------------------------------------

    @property
    def metrics_pattern(self) -> str:
        """Comma-separated metric names of this server."""
        return _list_pattern(self.metrics)

    @property
    def formats_pattern(self) -> str:
        """At most :data:`MAX_FORMATS` comma-separated format names of this server."""
        return _list_pattern(self.formats, MAX_FORMATS)

    @property
    def target_pattern(self) -> str:
        """``METRIC:VALUE`` with a finite value (``composite:`` a value in [0, 1])."""
        metric = f"{_alternatives(self.metrics)} *: *{_NUMBER}"
        composite = f"{_caseless('composite')} *: *{_UNIT_NUMBER}"
        return f"^ *({metric}|{composite}) *$"

    # -- checks (each value as given, ``None`` when absent) ------------------------------------------

    def profile(self, value: str | None) -> str | None:
        """The profile named, exactly one of :attr:`profiles`.

        Args:
            value: the parameter.

        Returns:
            The name, or ``None`` when not given.
        """
        if value is None or value in self.profiles:
            return value
        try:
            get_profile(value)
            problem = "is not enabled on this server"
        except UnknownNameError:
            problem = "does not exist"
        raise ServiceError(
            422,
            "unknown_name",
            f"profile {value!r} {problem}; enabled: {', '.join(self.profiles)}",
            kind="profile",
            name=value,
            known=list(self.profiles),
        )

    def metric_list(self, value: str | None) -> list[str] | None:
        """The metrics named (lower case, in order, without repeats; ``None`` when none).

        Args:
            value: the comma-separated parameter.

        Returns:
            The names.
        """
        if value is None:
            return None
        if re.fullmatch(self.metrics_pattern, value) is None:
            self._refuse_list("metrics", "metric", value, self.metrics, {})
        return _names(value)

    def format_list(self, value: str | None) -> list[str] | None:
        """The formats named (lower case, without repeats; ``None`` when none).

        Args:
            value: the comma-separated parameter.

        Returns:
            The names.
        """
        if value is None:
            return None
        if re.fullmatch(self.formats_pattern, value) is None:
            others = {n: "has no quality to search or is not installed here" for n in self.codecs}
            self._refuse_list("formats", "format", value, self.formats, others)
        return _names(value)

    def target(self, value: str | None) -> str | None:
        """The quality target ``METRIC:VALUE`` (``None`` when not given).

        Args:
            value: the parameter.

        Returns:
            The target, normalised (``ssim:0.9``).
        """
        if value is None:
            return None
        if re.fullmatch(self.target_pattern, value) is None:
            metric, sep, number = value.partition(":")
            name = metric.strip().lower()
            if sep and name and name != "composite" and name not in self.metrics:
                raise ServiceError(
                    422,
                    "unknown_name",
                    f"target metric {name!r} is not computed by this server; available: "
                    f"{', '.join(self.metrics)}, composite",
                    kind="metric",
                    name=name,
                    known=[*self.metrics, "composite"],
                    field="target",
                )
            raise ServiceError(
                422,
                "invalid_parameter",
                f"target must be METRIC:VALUE with a finite number (composite: within [0, 1]), e.g. "
                f"ssimulacra2:80, got {value!r}",
                field="target",
            )
        metric, _, number = value.partition(":")
        return f"{metric.strip().lower()}:{number.strip()}"

    def _refuse_list(self, field: str, kind: str, value: str, known: Sequence[str], others: dict[str, str]) -> None:
        lowered = {n.lower() for n in known}
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name.lower() in others and name.lower() not in lowered:
                raise ServiceError(
                    422, "invalid_parameter", f"{kind} {name!r} {others[name.lower()]}", field=field, name=name
                )
            if name.lower() not in lowered:
                raise ServiceError(
                    422,
                    "unknown_name",
                    f"{kind} {name!r} is not available on this server; available: {', '.join(known)}",
                    kind=kind,
                    name=name,
                    known=list(known),
                    field=field,
                )
        count = len([part for part in value.split(",") if part.strip()])
        raise ServiceError(
            422,
            "invalid_parameter",
            f"{field} must be comma-separated names"
            + (f" (at most {MAX_FORMATS})" if field == "formats" else "")
            + f", got {value!r} ({count} names)",
            field=field,
        )

    # -- the OpenAPI schema --------------------------------------------------------------------------

    def apply(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Write the rules into an OpenAPI document generated by FastAPI (parameters and request bodies).

        Args:
            schema: the document; changed in place.

        Returns:
            The same document.
        """
        parameters: dict[str, dict[str, Any]] = {
            "profile": {"type": "string", "enum": list(self.profiles)},
            "metrics": {"type": "string", "pattern": self.metrics_pattern},
            "formats": {"type": "string", "pattern": self.formats_pattern},
            "target": {"type": "string", "pattern": self.target_pattern},
            "max_probes": {"type": "integer", "minimum": 1},
            "metadata": {"type": "string", "pattern": METADATA_PATTERN},
        }
        bodies = {
            "/evaluate/single": self._single_body(),
            "/evaluate/batch": self._batch_body(),
            "/compress": self._compress_body(),
        }
        for path, body in bodies.items():
            operation = schema["paths"][path]["post"]
            operation["requestBody"] = body
            for parameter in operation.get("parameters", []):
                rule = parameters.get(parameter["name"])
                if rule is not None:
                    described = parameter["schema"].get("description")
                    parameter["schema"] = {**rule, **({"description": described} if described else {})}
                if parameter["name"] == "target":
                    parameter["required"] = True  # the schema lists it here only (see the module doc)
        return schema

    def _image(self, description: str) -> dict[str, Any]:
        return {
            **_BINARY,
            "description": f"{description} At least {self.min_side}x{self.min_side} pixels (the metrics of "
            "this server's profiles need it); smaller images are refused with 422 invalid_image.",
            "x-min-side": self.min_side,
        }

    def _single_body(self) -> dict[str, Any]:
        return _multipart(
            {
                "type": "object",
                "properties": {
                    "original": self._image("The reference image (PNG, JPEG, WebP, AVIF, JPEG XL, ...)."),
                    "processed": self._image("The processed image, with the original's width and height."),
                },
                "required": ["original", "processed"],
                "additionalProperties": False,
            },
            "Two images. Example: curl -F original=@a.png -F processed=@a.avif http://HOST/evaluate/single "
            "(profile and metrics go in the query string, or as form fields).",
        )

    def _batch_body(self) -> dict[str, Any]:
        schema = {
            "type": "object",
            "description": "Either pairs, original_N with processed_N (N = 0, 1, ...; a field without its partner "
            "is listed as unpaired; each pair's images have equal sizes), or one zip archive alone.",
            "properties": {
                "archive": {
                    **_BINARY,
                    "description": "One zip with folders original/ and processed/, paired by relative path "
                    "and stem; sent alone.",
                }
            },
            "patternProperties": {"^(original|processed)_[0-9]{1,6}$": self._image("One side of pair N.")},
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 2 * self.max_batch_pairs,
            "oneOf": [
                {"title": "Archive", "required": ["archive"], "maxProperties": 1},
                {"title": "Pairs", "not": {"required": ["archive"]}},
            ],
        }
        body = _multipart(
            schema,
            "Pairs as original_N/processed_N fields, or one zip archive in the field 'archive' (not both). "
            "Example: curl -F original_0=@a.png -F processed_0=@a.webp http://HOST/evaluate/batch",
        )
        body["content"]["multipart/form-data"]["encoding"] = {"archive": {"contentType": "application/zip"}}
        return body

    def _compress_body(self) -> dict[str, Any]:
        return _multipart(
            {
                "type": "object",
                "properties": {"image": self._image("The image to compress.")},
                "required": ["image"],
                "additionalProperties": False,
            },
            "One image; the target and the other options go in the query string (or as form fields). Example: "
            "curl -F image=@a.png 'http://HOST/compress?target=ssimulacra2:80'",
        )


def _names(value: str) -> list[str] | None:
    names = list(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    return names or None


def _multipart(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": {"multipart/form-data": {"schema": schema}}}
