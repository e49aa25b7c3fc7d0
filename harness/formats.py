"""How the harness writes numbers for people: the one set of formatters.

Two styles, each for its place:

* **sentences** (SLO messages, fault effects): short, three significant digits, units
  glued on — :func:`percent_short` ``8.25%``, :func:`seconds` ``250ms``, :func:`bounds_sentence`;
* **tables** (the CLI summary, the HTML report): fixed decimals with a space before the
  unit so columns line up — :func:`percent` ``8.25%``, :func:`duration` ``250 ms``,
  :func:`count` ``1,234``, :func:`factor` ``1.35×``, :func:`slo_value`, :func:`bounds`.

A missing value (``None``) is :data:`MISSING` in a table. No dependencies: everything may
import this module.

>>> percent_short(0.0825), seconds(0.25), duration(0.25), factor(1.349), count(1234)
('8.25%', '250ms', '250 ms', '1.35×', '1,234')
"""

from __future__ import annotations

__all__ = [
    "MISSING",
    "bounds",
    "bounds_sentence",
    "count",
    "duration",
    "elapsed",
    "factor",
    "milliseconds",
    "percent",
    "percent_short",
    "seconds",
    "slo_value",
]

MISSING = "—"


# --------------------------------------------------------------------------- sentences


def percent_short(value: float) -> str:
    """A share as a percentage with three significant digits, trailing zeros kept:
    ``1.00%``, ``8.25%``, ``10.0%``, ``0.0513%``."""
    return f"{value * 100:#.3g}".rstrip(".") + "%"


def seconds(value: float) -> str:
    """A duration in the largest fitting unit, three significant digits: ``1.5s``,
    ``250ms``, ``30µs``."""
    if value >= 1.0 or value == 0.0:
        return f"{value:.3g}s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g}ms"
    return f"{value * 1e6:.3g}µs"


def bounds_sentence(lower: str | None, upper: str | None, confidence: float, n: int) -> str:
    """The interval part of an SLO message, e.g. ``one-sided 95% bounds 1.00%–2.10%, n=400``
    (bounds already formatted; ``None`` where there were too few samples for one)."""
    level = f"one-sided {confidence * 100:g}%"
    if lower is not None and upper is not None:
        return f"{level} bounds {lower}\u2013{upper}, n={n}"
    if lower is not None:
        return f"{level} lower bound {lower}, too few samples for an upper bound, n={n}"
    if upper is not None:
        return f"{level} upper bound {upper}, too few samples for a lower bound, n={n}"
    return f"too few samples for {level} bounds, n={n}"


# --------------------------------------------------------------------------- tables


def percent(value: float | None, digits: int = 2) -> str:
    """A share as a percentage with fixed decimals: ``1.00%``."""
    return MISSING if value is None else f"{value * 100:.{digits}f}%"


def milliseconds(value: float | None) -> str:
    """Milliseconds: ``15.3 ms`` below 100, ``250 ms`` above."""
    if value is None:
        return MISSING
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def duration(value: float | None) -> str:
    """Seconds as ``250 ms`` below one second, ``1.25 s`` above; negative values keep their
    sign (a latency shift)."""
    if value is None:
        return MISSING
    sign = "-" if value < 0 else ""
    size = abs(value)
    return sign + (milliseconds(size * 1000.0) if size < 1.0 else f"{size:.2f} s")


def elapsed(value: float | None) -> str:
    """A span of run time: ``12.5 s``, or ``2 min 5 s`` from two minutes on."""
    if value is None:
        return MISSING
    return f"{value:.1f} s" if value < 120 else f"{int(value // 60)} min {value % 60:.0f} s"


def count(value: float | None) -> str:
    """A count with thousands separators: ``1,234``."""
    return MISSING if value is None else f"{value:,.0f}"


def factor(value: float | None) -> str:
    """A multiple: ``1.35×``."""
    return MISSING if value is None else f"{value:.2f}×"


def slo_value(value: float | None, unit: str) -> str:
    """A value in an SLO's unit, as a table shows it."""
    if value is None:
        return MISSING
    if unit == "factor":
        return factor(value)
    if unit == "ratio":
        return percent(value)
    if unit == "s":
        return duration(value)
    if unit == "count":
        return count(value)
    return f"{value:g}"


def bounds(lower: float | None, upper: float | None, unit: str) -> str:
    """An interval in an SLO's unit: ``1.00%–2.10%`` (``?`` for a missing end)."""

    def end(value: float | None) -> str:
        return "?" if value is None else slo_value(value, unit)

    return f"{end(lower)}\u2013{end(upper)}"
