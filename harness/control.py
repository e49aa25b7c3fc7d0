"""The seam between a running scenario and its operator (``harness gameday``).

An operator's console puts :data:`Command` values on :class:`OperatorControls`; the runner's
phase loop drains them each tick (about ten times a second) and carries them out on its
own thread, so every fault is injected and reverted by the one thread that owns the
signal guard and the undo journal. The runner publishes what it is doing as an immutable
:class:`RunView`, which the console and the metrics endpoint read from theirs::

    controls = OperatorControls(max_extension_s=600.0)
    controls.submit(InjectFault("catalog-aborts"))     # any thread
    ...
    for command in controls.drain():                   # the run loop
        ...
    view = controls.view                               # any thread: the latest snapshot
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "Command",
    "EndPhase",
    "ExtendPhase",
    "FaultState",
    "FaultView",
    "Halt",
    "InjectFault",
    "Note",
    "OperatorControls",
    "RevertFault",
    "RunView",
    "Stage",
]


@dataclass(frozen=True)
class InjectFault:
    """Inject one of the scenario's faults now, whatever its phase (until reverted or until
    the current phase ends)."""

    fault: str


@dataclass(frozen=True)
class RevertFault:
    """Revert an active fault now (scheduled or manual)."""

    fault: str


@dataclass(frozen=True)
class ExtendPhase:
    """Make the current phase longer by ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class EndPhase:
    """End the current phase now; the next one starts."""


@dataclass(frozen=True)
class Note:
    """A timestamped note for the journal and the report's timelines."""

    text: str


@dataclass(frozen=True)
class Halt:
    """Revert every active fault, then stop the load and the deployment."""

    reason: str = "halted by the operator"


Command = InjectFault | RevertFault | ExtendPhase | EndPhase | Note | Halt

FaultState = Literal["pending", "active", "reverted", "failed"]
Stage = Literal["deploying", "running", "stopping", "done"]


@dataclass(frozen=True)
class FaultView:
    """One fault of the scenario as the run sees it now."""

    name: str
    kind: str
    phase: str  # the phase its timeline puts it in
    state: FaultState
    trigger: Literal["timeline", "operator"] | None = None  # who injected it, once injected


@dataclass(frozen=True)
class RunView:
    """What the runner is doing, replaced as a whole at each change (never mutated)."""

    run_id: str = ""
    run_dir: Path | None = None
    stage: Stage = "deploying"
    load_started_at: float | None = None  # epoch seconds
    phase: str | None = None
    phase_start: float | None = None
    phase_end: float | None = None  # as extended or ended by the operator
    phases_done: tuple[tuple[str, float, float], ...] = ()  # (name, start, end)
    faults: tuple[FaultView, ...] = ()
    extension_left_s: float = 0.0
    # Where Locust writes while it runs: samples.jsonl, or one file per Locust worker.
    live_samples: tuple[Path, ...] = ()


@dataclass
class OperatorControls:
    """A queue of operator commands and the runner's latest :class:`RunView`.

    ``max_extension_s`` bounds the total time the operator may add to phases: the load
    generator is started with that much spare run time, so every load loop stays bounded.
    """

    max_extension_s: float = 600.0
    _commands: queue.SimpleQueue[Command] = field(default_factory=queue.SimpleQueue)
    _view: RunView = field(default_factory=RunView)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, command: Command) -> None:
        self._commands.put(command)

    def drain(self) -> list[Command]:
        """Every command submitted since the last call, in order."""
        commands = []
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def publish(self, view: RunView) -> None:
        with self._lock:
            self._view = view

    @property
    def view(self) -> RunView:
        with self._lock:
            return self._view
