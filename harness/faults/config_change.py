"""The policy change of a ``configPropagation`` SLO: written at its time, then watched until
every affected proxy holds it.

The change is a response header (``x-harness-change: <slo name>``) added to the routes of
one service's VirtualService: harmless to traffic, applied by its callers' sidecars, and
visible in each one's route configuration. On its own thread so that a control plane that
is down cannot stall the run loop: the write is retried every half second while the API
server does not answer (as a client would), then istiod's ``/debug/syncz`` and each
proxy's config dump are polled (every 0.1 s plus the reads: about 0.2 s of resolution)
until every proxy acknowledged a newer configuration holding the header. The run's end
stops the watch; :mod:`harness.slo.propagation` judges the record.

>>> changes = ConfigChanges.for_run(scenario, deployment)
>>> changes.phase_started("outage", time.time())   # each phase: schedules its changes
>>> journal.config_changes = changes.stop()         # after the last phase
"""

from __future__ import annotations

import threading
import time
from typing import Final

from harness.errors import HarnessError
from harness.journal import ConfigChangeRecord
from harness.platforms.base import ControlPlaneFaults, Deployment
from harness.scenario.models import ConfigPropagationSlo, Scenario

__all__ = ["HEADER", "ConfigChangeWatch", "ConfigChanges"]

HEADER: Final = "x-harness-change"
WRITE_RETRY_S: Final = 0.5
POLL_S: Final = 0.1
STOP_WAIT_S: Final = 10.0


class ConfigChangeWatch:
    """One SLO's change: :meth:`start` at its phase's start, :meth:`stop` at the run's end."""

    def __init__(self, slo: ConfigPropagationSlo, control: ControlPlaneFaults) -> None:
        self.slo = slo
        self.control = control
        change = slo.change
        self.record = ConfigChangeRecord(
            slo=slo.name,
            service=change.service,
            phase=change.phase,
            header=HEADER,
            value=slo.name,
            proxies=list(control.affected_by(change.service)),
            due_at=0.0,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, phase_start: float) -> None:
        self.record.due_at = phase_start + self.slo.change.at
        self._thread = threading.Thread(
            target=self._run, name=f"change-{self.slo.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        record = self.record
        if self._stop.wait(max(0.0, record.due_at - time.time())):
            return
        before = None
        while before is None and not self._stop.is_set():
            try:
                before = self.control.write_route_header(record.service, HEADER, record.value)
            except HarnessError as exc:
                record.write_errors += 1
                record.error = str(exc)
                self._stop.wait(WRITE_RETRY_S)
        if before is None:
            return
        record.written_at, record.error = time.time(), None
        while not self._stop.is_set():
            try:
                pending = self.control.route_pending(record.service, HEADER, record.value, before)
            except (HarnessError, ValueError, OSError):  # a half-written answer: ask again
                pending = list(record.proxies)
            record.pending = pending
            if not pending:
                record.synced_at = time.time()
                return
            self._stop.wait(POLL_S)

    def stop(self) -> ConfigChangeRecord:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)
        return self.record


class ConfigChanges:
    """Every ``configPropagation`` SLO's change in a run (none: nothing happens)."""

    def __init__(self, watches: list[ConfigChangeWatch]) -> None:
        self.watches = watches

    @classmethod
    def for_run(cls, scenario: Scenario, deployment: Deployment) -> ConfigChanges:
        slos = [slo for slo in scenario.slos if isinstance(slo, ConfigPropagationSlo)]
        control = deployment.control_plane_faults
        if not slos or control is None:
            return cls([])  # (the platform refused such a scenario without a control plane)
        return cls([ConfigChangeWatch(slo, control) for slo in slos])

    def phase_started(self, phase: str, start: float) -> None:
        for watch in self.watches:
            if watch.slo.change.phase == phase:
                watch.start(start)

    def stop(self) -> list[ConfigChangeRecord]:
        """Stop every watch; the records of the changes whose time came."""
        records = [watch.stop() for watch in self.watches]
        return [record for record in records if record.due_at]
