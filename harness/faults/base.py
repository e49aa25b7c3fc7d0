"""The fault lifecycle shared by every injector, and the undo journal.

Every injector follows the same contract::

    journal.intent(record)      # written (and fsynced) before anything changes
    injector.inject()           # idempotent; read back to confirm
    ...                         # traffic
    injector.evidence()         # counters proving the fault took effect
    injector.revert()           # idempotent, from the same record; read back to confirm
    journal.reverted(record)

``with applied(injector, journal): ...`` does all of this and cannot forget the revert.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.errors import FaultError, HarnessError
from harness.files import append_line, read_bytes_limited
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.platforms.base import Deployment, InstanceInfo
from harness.scenario.models import Step, Target
from harness.signals import signals_deferred


class Injector(Protocol):
    record: FaultEntry

    def inject(self) -> None:
        """Apply the fault (idempotent) and confirm it by reading back."""
        ...

    def revert(self) -> bool:
        """Undo the fault (idempotent); True when the read-back shows nothing remains."""
        ...

    def evidence(self) -> dict[str, int]:
        """Counters showing the fault acted on traffic since it was injected."""
        ...

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        """Whether the evidence shows the fault took effect, and a sentence saying so."""
        ...


@runtime_checkable
class Adjustable(Protocol):
    """An injector whose intensity can change while it is applied (``steps`` ramps)."""

    def adjust(self, percentage: float) -> None:
        """Set the share of requests (or connections) hit, 0–100, effective immediately."""
        ...


def ramp_start(steps: Sequence[Step]) -> float | None:
    """The starting intensity (percent) of a ramp whose first step is at 0 s, else None.

    Injectors start at it; the runner schedules only the later steps.
    """
    return steps[0].percentage if steps and steps[0].at == 0 else None


def select_instances(
    deployment: Deployment, target: Target, fault: str
) -> tuple[InstanceInfo, ...]:
    """The instances a fault hits: the first N (or N%) of the service, never none."""
    instances = deployment.instances_of(target.service)
    if target.version is not None:
        instances = tuple(inst for inst in instances if inst.version == target.version)
    chosen = instances[: target.count(len(instances))]
    if not chosen:
        raise FaultError(
            f"fault {fault}: selects no instance of {target.service!r} "
            f"({len(instances)} running); check target.instances"
        )
    return chosen


class CounterDeltas:
    """Increases of some counters since :meth:`start`: every injector's evidence that its
    fault acted on traffic. ``read`` returns the counters now (it may raise
    :class:`~harness.errors.HarnessError` when a proxy cannot answer)."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self.read = read
        self.baseline: dict[str, int] = {}

    def start(self) -> None:
        """Take the baseline (none when the counters cannot be read: everything counts)."""
        try:
            self.baseline = self.read()
        except HarnessError:
            self.baseline = {}

    def deltas(self, prefix: str = "") -> dict[str, int]:
        """``prefix + name`` → increase since :meth:`start`; raises what ``read`` raises."""
        return {f"{prefix}{k}": v - self.baseline.get(k, 0) for k, v in self.read().items()}


def clear_runtime(admins: Iterable[AdminApi], keys: Iterable[str]) -> bool:
    """Remove the runtime overrides ``keys`` from every sidecar and read them back: True
    when none is left anywhere. A sidecar that cannot be reached is not verified (it is
    gone, and its overrides died with it), and the others are still cleared."""
    clear: dict[str, int | str] = dict.fromkeys(keys, "")
    verified = True
    for admin in admins:
        try:
            admin.runtime_modify(clear)
            left = set(admin.runtime()) & set(clear)
        except HarnessError:
            verified = False
            continue
        verified = verified and not left
    return verified


def shown(evidence: Mapping[str, int]) -> str:
    """The non-zero counters of some evidence: ``aborts_injected=12, retries=3``."""
    return ", ".join(f"{key}={value}" for key, value in evidence.items() if value)


def no_effect(fault: str, detail: str) -> tuple[bool, str]:
    """The verdict of an injector whose evidence does not show its fault: ``detail`` says
    where and why, starting with " on …" or ": …"."""
    return False, f"fault {fault} showed no effect{detail}"


def took_effect(fault: str, detail: str, evidence: Mapping[str, int]) -> tuple[bool, str]:
    """The verdict of an injector whose evidence shows its fault, with the counters."""
    return True, f"fault {fault} took effect{detail} ({shown(evidence)})"


class UndoJournal:
    """Append-only JSON lines: one ``intent`` before each action, one ``reverted`` after undo."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, entry: dict[str, Any]) -> None:
        append_line(self.path, json.dumps(entry))  # no symlink followed, fsynced

    def intent(self, record: FaultEntry) -> None:
        self._append({"event": "intent", "at": time.time(), **record.model_dump(mode="json")})

    def reverted(self, record: FaultEntry) -> None:
        self.record_revert(record.name, verified=record.revert_verified, how="revert")

    def record_revert(self, name: str, *, verified: bool, how: str) -> None:
        self._append(
            {"event": "reverted", "at": time.time(), "name": name, "verified": verified, "how": how}
        )

    def outstanding(self) -> list[dict[str, Any]]:
        """Intents without a matching verified revert (what a killed run left behind)."""
        return self.read()[0]

    def read(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Outstanding intents, and one line per malformed entry that was skipped.

        A torn last line (a crash mid-write) or a hand-edited entry never stops the reader.
        """
        if not self.path.exists():
            return [], []
        open_intents: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        raw = read_bytes_limited(self.path, MAX_UNDO_BYTES, "undo journal")
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                entry = None
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(name, str):
                problems.append(f"{self.path}:{number}: not an undo entry; skipped")
                continue
            if entry.get("event") == "intent":
                open_intents[name] = entry
            elif entry.get("event") == "reverted" and entry.get("verified") is True:
                open_intents.pop(name, None)
        return list(open_intents.values()), problems


MAX_UNDO_BYTES = 64 * 1024 * 1024


@contextmanager
def applied(injector: Injector, journal: UndoJournal) -> Iterator[FaultEntry]:
    """Inject for the duration of the block; always revert, even on exceptions."""
    record = injector.record
    journal.intent(record)
    try:
        injector.inject()
        record.injected_at = time.time()
        yield record
    finally:
        with signals_deferred():
            if record.injected_at is not None:
                record.evidence = injector.evidence()
                record.took_effect, record.effect_message = injector.judge_effect(record.evidence)
            record.revert_verified = injector.revert()
            record.reverted_at = time.time()
            journal.reverted(record)
