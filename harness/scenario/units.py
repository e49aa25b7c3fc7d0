"""Scalar types of the scenario language: durations and fractions.

Durations use Istio's spelling (``"250ms"``, ``"2s"``, ``"1m"``, ``"1.5s"``) and are held
as seconds (``float``). Fractions accept ``0.01`` or ``"1%"`` and are held in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from harness.units import DURATION_PATTERN, format_duration, parse_duration, parse_fraction

__all__ = [
    "DURATION_PATTERN",
    "Duration",
    "Fraction",
    "format_duration",
    "parse_duration",
    "parse_fraction",
]

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["250ms", "2s"]}),
]


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
