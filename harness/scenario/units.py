"""Scalar types of the scenario language: durations and fractions.

Durations use Istio's spelling (``"250ms"``, ``"2s"``, ``"1m"``, ``"1.5s"``) and are held
as seconds (``float``). Fractions accept ``0.01`` or ``"1%"`` and are held in ``[0, 1]``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h)\s*$")
_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^\d+(\.\d+)?(us|µs|ms|s|m|h)$"


def parse_duration(value: Any) -> float:
    """``"250ms"`` → ``0.25``. Bare numbers are refused: the unit is not guessable."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration is a string with a unit, like '250ms', '2s' or '1m' (got {value!r})"
        )
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: write a number and a unit (us, ms, s, m, h), "
            "like '250ms' or '2s'"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """``0.25`` → ``"250ms"``; the inverse of :func:`parse_duration` for round trips."""
    if seconds != 0 and seconds < 1:
        millis = seconds * 1000
        return f"{millis:g}ms" if abs(millis - round(millis)) < 1e-9 else f"{seconds * 1e6:g}us"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["250ms", "2s"]}),
]


def parse_fraction(value: Any) -> float:
    """``0.01`` or ``"1%"`` → ``0.01``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a fraction like 0.01 or '1%' (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{value!r}: write a fraction like 0.01 or a percentage like '1%'")
        try:
            number = float(text[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage like '1%'") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"expected a fraction like 0.01 or '1%' (got {value!r})")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{value!r} is outside [0, 1] (0%..100%)")
    return number


Fraction = Annotated[
    float,
    BeforeValidator(parse_fraction),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^\d+(\.\d+)?%$"},
            ]
        }
    ),
]
