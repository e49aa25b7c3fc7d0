"""What the operator's keys and typed commands mean (pure logic, no terminal).

Keys (the console's footer lists them):

====== ===========================================================================
1–9    toggle fault N of the scenario: inject it now, or revert it if it is active
n      type a note (Enter adds it to the journal, Esc cancels)
e      extend the running phase by the extension step (``--extend-step``, 30 s)
x      end the running phase now
h      halt: revert every fault, then stop the load and the deployment
:      type a command: ``note TEXT``, ``inject FAULT``, ``revert FAULT``,
       ``extend 30s``, ``end``, ``halt [REASON]`` (FAULT: its name or number)
====== ===========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.control import (
    Command,
    EndPhase,
    ExtendPhase,
    FaultView,
    Halt,
    InjectFault,
    Note,
    RevertFault,
)
from harness.units import parse_duration

__all__ = ["KEY_HELP", "KeyReader", "parse_command"]

KEY_HELP = "1-9 fault on/off · n note · e extend · x end phase · h HALT · : command"
ESCAPE, BACKSPACES, ENTERS = "\x1b", ("\x7f", "\x08"), ("\r", "\n")
MAX_NOTE = 2000


def _fault(word: str, faults: Sequence[FaultView]) -> str | None:
    """A fault's name from its name or its number (1-based)."""
    if word.isdigit() and 1 <= int(word) <= len(faults):
        return faults[int(word) - 1].name
    names = [fault.name for fault in faults]
    return word if word in names else None


def parse_command(text: str, faults: Sequence[FaultView]) -> Command | str:
    """The command typed after ``:``, or one line saying why it is not one."""
    verb, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    match verb:
        case "note":
            if not rest:
                return "note: nothing to note; type `note TEXT`"
            return Note(rest[:MAX_NOTE])
        case "inject" | "revert":
            name = _fault(rest, faults)
            if name is None:
                known = ", ".join(f.name for f in faults) or "none"
                return f"{verb}: no fault {rest!r}; faults: {known}"
            return InjectFault(name) if verb == "inject" else RevertFault(name)
        case "extend":
            try:
                seconds = parse_duration(rest or "30s")
            except ValueError as exc:
                return f"extend: {exc}"
            return ExtendPhase(seconds) if seconds > 0 else "extend: give a positive duration"
        case "end":
            return EndPhase()
        case "halt":
            return Halt(rest or "halted by the operator")
        case "":
            return "type a command: note, inject, revert, extend, end, halt"
        case _:
            return f"unknown command {verb!r}: note, inject, revert, extend, end, halt"


@dataclass
class KeyReader:
    """Turns keystrokes into commands; ``line`` is not None while a command is typed."""

    extend_step_s: float = 30.0
    line: str | None = None
    message: str = ""

    def feed(self, key: str, faults: Sequence[FaultView]) -> Command | None:
        """One character typed; the command it completes, if any (``message`` says more)."""
        if self.line is not None:
            return self._typing(key, faults)
        match key:
            case "n":
                self.line = "note "
            case ":":
                self.line = ""
            case "e":
                return ExtendPhase(self.extend_step_s)
            case "x":
                return EndPhase()
            case "h":
                return Halt("halted by the operator")
            case _ if key.isdigit() and key != "0":
                index = int(key) - 1
                if index >= len(faults):
                    self.message = f"no fault {key}: the scenario has {len(faults)}"
                    return None
                fault = faults[index]
                return (
                    RevertFault(fault.name) if fault.state == "active" else InjectFault(fault.name)
                )
        return None

    def _typing(self, key: str, faults: Sequence[FaultView]) -> Command | None:
        assert self.line is not None
        if key == ESCAPE:
            self.line = None
            self.message = "cancelled"
        elif key in BACKSPACES:
            self.line = self.line[:-1]
        elif key in ENTERS:
            text, self.line = self.line, None
            parsed = parse_command(text, faults)
            if isinstance(parsed, str):
                self.message = parsed
                return None
            return parsed
        elif key.isprintable() and len(self.line) < MAX_NOTE + 16:
            self.line += key
        return None
