"""One policy for numbers that JSON cannot hold, used by every file, report, response and stored attribute.

JSON has no infinity or NaN, yet scores have them: the PSNR of identical images is ``inf``. Everything this
package writes as JSON (reports, presets, monitor state and alerts, web responses, Optuna trial attributes)
writes a non-finite float as one of the strings ``"inf"``, ``"-inf"`` or ``"nan"``, and nothing else
(never ``Infinity``, ``null`` or a large stand-in number). Every reader in the package turns those strings
back into floats (:func:`number_from_json`), so a value survives a round trip exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["NON_FINITE", "dumps", "json_number", "json_safe", "number_from_json"]

#: The strings that stand for non-finite floats.
NON_FINITE: dict[str, float] = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
#: Stand-ins for infinity written by earlier releases into Optuna attributes; read back as infinities.
_LEGACY_INFINITY = 1e308


def json_number(value: float) -> float | str:
    """``value`` itself when finite, else ``"inf"``, ``"-inf"`` or ``"nan"``."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def json_safe(value: Any) -> Any:
    """``value`` with every float inside (mappings, lists, tuples) written by :func:`json_number`."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def number_from_json(value: Any) -> float:
    """The float a JSON value stands for: a number, or one of the :data:`NON_FINITE` strings.

    Raises :class:`ValueError` (or :class:`TypeError` for a non-number) for anything else, so readers can
    name the bad field.
    """
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        if value in NON_FINITE:
            return NON_FINITE[value]
        raise ValueError(f"expected a number or one of {', '.join(map(repr, NON_FINITE))}, got {value!r}")
    if not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    number = float(value)
    if math.isfinite(number) and abs(number) >= _LEGACY_INFINITY:
        return math.copysign(math.inf, number)
    return number


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` under this policy: non-finite floats become strings, and a stray one is an error."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
