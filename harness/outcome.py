"""What a finished run means to a test runner: its outcome, a plain-text verdict table, and
one property per SLO × phase for JUnit XML.

The pytest items (:mod:`harness.pytest_plugin`) use it; any CI shell can too::

    journal = Journal.read(Path("reports/shop/20260101T000000Z-abc123/journal.json"))
    outcome_of(journal)          # Outcome.SLO_FAILED
    print(verdict_table(journal))
    slo_properties(journal)      # [("slo.e2e-error-rate.fault.verdict", "FAIL"), ...]
"""

from __future__ import annotations

from enum import StrEnum

from harness.journal import Journal

__all__ = ["PROPERTY_FIELDS", "Outcome", "format_value", "outcome_of", "slo_properties"]

# The JUnit properties of one SLO × phase, in this order: slo.<name>.<phase>.<field>.
PROPERTY_FIELDS = ("verdict", "measured", "lower", "upper", "objective", "n", "unit", "confidence")


class Outcome(StrEnum):
    """How a run ended, finer than its verdict: why a FAIL failed matters to a negative
    control, which must fail on its SLOs and not because a fault showed no effect."""

    PASSED = "passed"
    SLO_FAILED = "slo-failed"  # an SLO failed; every fault took effect and was reverted
    PROBLEMS = "problems"  # the run has problems (a fault without effect, an unverified revert)
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"  # the harness could not complete the run
    INTERRUPTED = "interrupted"


def outcome_of(journal: Journal) -> Outcome:
    """The outcome of a run, from its journal alone (consistent with its ``verdict``)."""
    if journal.status == "interrupted":
        return Outcome.INTERRUPTED
    if journal.status != "completed":
        return Outcome.ERROR
    if journal.problems:
        return Outcome.PROBLEMS
    verdicts = {str(entry.verdict) for entry in journal.slos}
    if "FAIL" in verdicts:
        return Outcome.SLO_FAILED
    if "INCONCLUSIVE" in verdicts:
        return Outcome.INCONCLUSIVE
    return Outcome.PASSED


def format_value(value: float | None, unit: str) -> str:
    """A measured value or bound for people: ratios in %, seconds in ms, counts, factors."""
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value:.2%}"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "factor":
        return f"{value:.2f}×"
    return f"{value * 1000:.0f}ms"


def verdict_table(journal: Journal) -> str:
    """The SLO × phase verdicts as an aligned plain-text table, then every non-PASS message,
    problem and error (no colours: it lands in test logs and JUnit XML)."""
    header = ("SLO", "phase", "verdict", "measured", "bounds", "objective", "n")
    rows = [header]
    for entry in journal.slos:
        bounds = (
            f"{format_value(entry.lower, entry.unit)} – {format_value(entry.upper, entry.unit)}"
        )
        rows.append(
            (
                entry.slo,
                entry.phase,
                str(entry.verdict),
                format_value(entry.measured, entry.unit),
                bounds,
                format_value(entry.objective, entry.unit),
                str(entry.n),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"{journal.scenario_name} — run {journal.run_id}: {journal.verdict}"]
    if journal.slos:
        lines += [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
    lines += [
        f"{entry.verdict}: {entry.message}" for entry in journal.slos if entry.verdict != "PASS"
    ]
    lines += [f"problem: {problem}" for problem in journal.problems]
    lines += [
        f"fault {fault.name}: {fault.effect_message}"
        for fault in journal.faults
        if fault.took_effect is False
    ]
    if journal.error:
        lines.append(f"{journal.status}: {journal.error}")
    return "\n".join(lines)


def slo_properties(journal: Journal) -> list[tuple[str, str]]:
    """One ``(name, value)`` per SLO × phase × :data:`PROPERTY_FIELDS`, for JUnit XML.

    Names are ``slo.<slo>.<phase>.<field>``; values are plain numbers in the SLO's unit
    (ratio, s, count, factor) so CI can compare them; a bound that could not be computed
    (too few samples) is the empty string.
    """
    properties: list[tuple[str, str]] = []
    for entry in journal.slos:
        prefix = f"slo.{entry.slo}.{entry.phase}"
        values = {
            "verdict": str(entry.verdict),
            "measured": entry.measured,
            "lower": entry.lower,
            "upper": entry.upper,
            "objective": entry.objective,
            "n": entry.n,
            "unit": entry.unit,
            "confidence": entry.confidence,
        }
        for field in PROPERTY_FIELDS:
            value = values[field]
            properties.append((f"{prefix}.{field}", "" if value is None else str(value)))
    return properties
