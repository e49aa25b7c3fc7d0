"""A game day's notes and manual actions in the report: a numbered table, and the same
numbers on every time chart (:class:`~harness.report.plots.Moment`)."""

from __future__ import annotations

from dataclasses import dataclass

from harness.journal import Journal, OperatorAction
from harness.report.plots import Moment

__all__ = ["ActionRow", "action_moments", "action_rows"]

_WHAT = {
    "note": "note",
    "inject": "fault injected by hand",
    "revert": "fault reverted by hand",
    "extend": "phase extended",
    "end-phase": "phase ended early",
    "halt": "HALT: every fault reverted, then load and deployment stopped",
}


@dataclass(frozen=True)
class ActionRow:
    number: int
    at: str  # seconds since the load started
    kind: str
    what: str
    phase: str
    detail: str  # the note's text, the fault's name, the extension, the halt's reason
    error: str  # why it was refused ("" when done)


def _detail(action: OperatorAction) -> str:
    if action.kind == "extend" and action.seconds is not None:
        return f"+{action.seconds:g} s"
    return action.fault or action.text


def action_rows(journal: Journal, origin: float) -> list[ActionRow]:
    return [
        ActionRow(
            number=number,
            at=f"{action.at - origin:+.1f} s",
            kind=action.kind,
            what=_WHAT.get(action.kind, action.kind),
            phase=action.phase or "—",
            detail=_detail(action),
            error=action.error or "",
        )
        for number, action in enumerate(journal.actions, 1)
    ]


def action_moments(journal: Journal, origin: float) -> list[Moment]:
    """Every action that was carried out (refused ones change nothing on a chart)."""
    return [
        Moment(str(number), action.at - origin)
        for number, action in enumerate(journal.actions, 1)
        if action.error is None
    ]
