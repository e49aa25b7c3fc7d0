"""Durations and fractions as the scenario language writes them, without any dependency.

``"250ms"`` → ``0.25`` seconds (Istio's spelling: us, ms, s, m, h); ``0.01`` or ``"1%"`` →
``0.01``. The app processes use these too, so this module imports nothing heavy.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

# ASCII digits only: \d would also take Arabic-Indic or full-width digits.
_DURATION = re.compile(r"\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*(us|µs|ms|s|m|h)\s*")
MAX_DURATION_S = 86_400.0  # a day: no scenario step, timeout or window is longer
# Exact decimal scales, so "1001ms" and "1.001s" are the same float.
_UNIT_SECONDS = {
    "us": Decimal("0.000001"),
    "µs": Decimal("0.000001"),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(us|µs|ms|s|m|h)$"


def parse_duration(value: Any) -> float:
    """``"250ms"`` → ``0.25``. Bare numbers are refused: the unit is not guessable."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"a duration is a string with a unit, like '250ms', '2s' or '1m' (got {value!r})"
        )
    match = _DURATION.fullmatch(value)
    if match is None:
        shown = repr(value) if len(value) <= 40 else repr(value[:37] + "...")
        raise ValueError(
            f"{shown} is not a duration: write a number and a unit (us, ms, s, m, h), "
            "like '250ms' or '2s'"
        )
    seconds = float(Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than a day (24h), the longest duration allowed")
    return seconds


def format_duration(seconds: float) -> str:
    """``0.25`` → ``"250ms"``; the exact inverse of :func:`parse_duration`."""
    exact = Decimal(repr(float(seconds)))  # the shortest decimal that is this float
    if exact != 0 and exact < 1:
        millis = exact * 1000
        if millis == millis.to_integral_value():
            return f"{millis.normalize():f}ms"
        return f"{(exact * 1_000_000).normalize():f}us"
    return f"{exact.normalize():f}s"


def parse_fraction(value: Any) -> float:
    """``0.01`` or ``"1%"`` → ``0.01``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a fraction like 0.01 or '1%' (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{value!r}: write a fraction like 0.01 or a percentage like '1%'")
        if not re.fullmatch(r"[0-9]{1,15}(\.[0-9]{1,15})?", text[:-1].strip()):
            raise ValueError(f"{value!r} is not a percentage like '1%'")
        number = float(text[:-1]) / 100.0
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"expected a fraction like 0.01 or '1%' (got {value!r})")
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise ValueError(f"{value!r} is outside [0, 1] (0%..100%)")
    return number
