"""Instance faults: kill (SIGKILL, optionally restarted like a pod) and pause (SIGSTOP, a hang).

The supervisor started every process, so the harness knows them by their PIDs in the run's
PID namespace. Their state is read back from ``/proc`` by the supervisor, which finds a PID of
its namespace among the host's processes by their ``NSpid`` line (there is no mount namespace,
so ``/proc/<pid>`` itself would name another process): ``T`` while paused, gone once killed.

Restart semantics of ``kind: kill``:

* with ``restartAfter``, the instance's process is started again (same argv, same config)
  that long after the kill, in the background while the run goes on, and the harness waits
  until it serves again (the app answers ``/healthz``, a sidecar reports ``LIVE``);
* when the fault's window ends first, or without ``restartAfter``, the revert restarts it:
  a killed instance is never left dead after its fault's window.

Evidence: the process state (killed and gone, restarted and running, stopped) and the Envoy
counters that show what callers saw: for a killed or paused app, its own sidecar's connection
failures and the callers' timeouts; for a sidecar, the callers' connection failures.
"""

from __future__ import annotations

import threading
import time

from harness.errors import FaultError, HarnessError
from harness.faults.base import CounterDeltas, no_effect, select_instances, took_effect
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.mesh.envoy import SERVICE_PORT, outbound_cluster_name
from harness.mesh.stats import (
    CONNECT_FAILURES,
    PER_TRY_TIMEOUTS,
    REMOTE_CLOSES,
    RETRIES,
    ROUTE_TIMEOUTS,
    sum_cluster_counters,
)
from harness.platforms.base import Deployment, InstanceInfo
from harness.scenario.models import KillFault, PauseFault

STOPPED = ("T", "t")
CALLER_COUNTERS = (CONNECT_FAILURES, PER_TRY_TIMEOUTS, ROUTE_TIMEOUTS, RETRIES)
INBOUND_COUNTERS = (CONNECT_FAILURES, REMOTE_CLOSES)


def _cluster_deltas(
    admins: dict[str, AdminApi], cluster: str, stats: tuple[str, ...]
) -> CounterDeltas:
    return CounterDeltas(lambda: sum_cluster_counters(admins.values(), cluster, stats))


class ProcessFaultInjector:
    """Kill or pause the app (or sidecar) of ``instances``."""

    def __init__(
        self,
        fault: KillFault | PauseFault,
        name: str,
        deployment: Deployment,
        instances: tuple[InstanceInfo, ...],
    ) -> None:
        self.fault = fault
        self.deployment = deployment
        self.instances = instances
        self.process = fault.process
        self.restart_after = fault.restart_after if isinstance(fault, KillFault) else None
        service = instances[0].service
        topology = deployment.scenario.app.topology
        callers = [
            inst.name
            for caller in topology.callers_of(service)
            for inst in deployment.instances_of(caller)
            if inst.name not in {i.name for i in instances}
        ]
        if service == topology.entry:
            callers.append("ingress")
        self.callers = _cluster_deltas(
            {n: deployment.admin(n) for n in callers},
            outbound_cluster_name(service),
            CALLER_COUNTERS,
        )
        # An app's own sidecar sees the app die or hang on its inbound cluster.
        self.own_sidecars = (
            {i.name: deployment.admin(i.name) for i in instances} if self.process == "app" else {}
        )
        self.inbound = _cluster_deltas(
            self.own_sidecars,
            f"inbound|{SERVICE_PORT}||",
            INBOUND_COUNTERS,
        )
        self.record = FaultEntry(
            name=name,
            kind=fault.kind,
            phase=fault.phase,
            targets=[inst.name for inst in instances],
            detail={
                "process": self.process,
                "signal": "SIGKILL" if fault.kind == "kill" else "SIGSTOP",
            },
        )
        if self.restart_after is not None:
            self.record.detail["restart_after_s"] = self.restart_after
        if fault.kind == "kill":
            self.record.detail["restarts"] = {}
        self.acted: dict[str, int] = {}  # instance → PID killed or paused
        self.restarted: dict[str, int] = {}  # instance → PID of the restarted process
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._restart_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def inject(self) -> None:
        if self.acted:
            return  # idempotent: already killed / paused
        self.callers.start()
        self.inbound.start()
        verb = "killed" if self.fault.kind == "kill" else "paused"
        states: dict[str, str] = {}
        for inst in self.instances:
            try:
                if self.fault.kind == "kill":
                    pid = self.deployment.kill_process(inst.name, self.process)
                else:
                    pid = self.deployment.pause_process(inst.name, self.process)
            except HarnessError as exc:
                raise FaultError(f"fault {self.record.name}: {inst.name}: {exc}") from exc
            self.acted[inst.name] = pid
            self.record.detail.setdefault(f"{verb}_at", {})[inst.name] = time.time()
            states[inst.name] = self.deployment.process_state(pid) or "gone"
        self.record.detail["pids"] = dict(self.acted)
        self.record.detail["state_after_inject"] = states
        if self.restart_after is not None:
            self._timer = threading.Timer(self.restart_after, self._restart_all, ("restartAfter",))
            self._timer.daemon = True
            self._timer.start()

    def _restart_all(self, why: str) -> None:
        with self._lock:
            for name in self.acted:
                if name in self.restarted:
                    continue
                try:
                    pid = self.deployment.restart_process(name, self.process)
                except HarnessError as exc:
                    self._restart_error = f"{name}: {exc}"
                    return
                self.restarted[name] = pid
                # Replaced whole, never resized in place: the runner may be writing the
                # journal (this record included) from its own thread right now.
                restarts = dict(self.record.detail.get("restarts", {}))
                restarts[name] = {"pid": pid, "at": time.time(), "by": why}
                self.record.detail["restarts"] = restarts

    def revert(self) -> bool:
        if self.fault.kind == "pause":
            verified = self._resume()
        else:
            if self._timer is not None:
                self._timer.cancel()
                self._timer.join()  # a restart under way finishes first
                self._timer = None
            self._restart_error = None
            self._restart_all("revert")
            if self._restart_error is not None:
                self.record.detail["restart_error"] = self._restart_error
            verified = all(self._serving(name) for name in self.acted)
        if verified:
            self.acted.clear()
            self.restarted.clear()
        return verified

    def _resume(self) -> bool:
        verified = True
        for name in self.acted:
            try:
                self.deployment.resume_process(name, self.process)
            except HarnessError as exc:
                self.record.detail.setdefault("resume_errors", {})[name] = str(exc)
                verified = False
            verified = verified and self._serving(name)
        return verified

    def _serving(self, name: str) -> bool:
        try:
            pid = self.deployment.process_pid(name, self.process)
            state = self.deployment.process_state(pid)
        except HarnessError:
            return False
        return state is not None and state not in STOPPED

    # ------------------------------------------------------------------ effect

    def evidence(self) -> dict[str, int]:
        evidence: dict[str, int] = {}
        try:
            if self.fault.kind == "kill":
                evidence["killed"] = sum(
                    1 for pid in self.acted.values() if self.deployment.process_state(pid) is None
                )
                with self._lock:
                    evidence["restarted"] = sum(1 for name in self.restarted if self._serving(name))
            else:
                evidence["stopped"] = sum(
                    1
                    for pid in self.acted.values()
                    if self.deployment.process_state(pid) in STOPPED
                )
        except HarnessError:
            return evidence
        evidence.update(self.callers.deltas("callers_"))
        if self.own_sidecars:
            evidence.update(self.inbound.deltas("sidecar_"))
        return evidence

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        what = f"{self.process} of {', '.join(self.record.targets)}"
        wanted = len(self.instances)
        if self.fault.kind == "kill":
            if evidence.get("killed", 0) < wanted:
                return no_effect(
                    self.record.name,
                    f": the {what} was not killed ({evidence.get('killed', 0)} of {wanted} gone)",
                )
            killed_at = self.record.detail.get("killed_at", {})
            back = [
                f"{name} back as pid {restart['pid']} after "
                f"{restart['at'] - killed_at.get(name, restart['at']):.1f}s"
                for name, restart in self.record.detail.get("restarts", {}).items()
            ]
            restarted = f"; {', '.join(back)}" if back else ""
            return took_effect(self.record.name, f": killed the {what}{restarted}", evidence)
        if evidence.get("stopped", 0) < wanted:
            stopped = evidence.get("stopped", 0)
            return no_effect(
                self.record.name,
                f": the {what} was not stopped ({stopped} of {wanted} in state T)",
            )
        return took_effect(self.record.name, f": paused the {what}", evidence)


def from_scenario(
    fault: KillFault | PauseFault, name: str, deployment: Deployment
) -> ProcessFaultInjector:
    return ProcessFaultInjector(
        fault, name, deployment, select_instances(deployment, fault.target, name)
    )
