"""Control-plane faults (``kind: controlPlane``, ``--mesh istio``): istiod or the API server
killed or paused, or the sidecars cut from istiod's xDS port.

* ``kill``: SIGKILL by PID; the revert starts the same command line again and waits until
  it is ready (a control plane is never left dead after its fault's window).
* ``pause``: SIGSTOP for the window (a hung process; its TCP connections stay open), SIGCONT.
* ``partition``: one nft chain in the run's network namespace (table ``inet harness``, as
  partitions between instances) dropping every packet to or from istiod's xDS port
  (15012: xDS and certificate signing over mTLS), which is where each pilot-agent proxies
  its Envoy's xDS stream to. Envoy talks to its agent over a Unix socket, which no rule
  cuts: an agent keeps serving its Envoy what it last got.

Every revert then waits until istiod shows every proxy SYNCED again and journals how long
that took from the revert's start (``resynced_s``).

Evidence, read before the revert: the process state (gone / stopped) or the rules' packet
counters; how many Envoys still had their xDS stream up (``control_plane.connected_state``);
how many proxies istiod did not show SYNCED (or that it did not answer); and the shortest
time left on any proxy's workload certificate (Envoy's ``/certs``): the data plane keeps
serving with its last configuration and certificates, which the load's SLOs judge.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from harness.errors import FaultError, HarnessError
from harness.faults.base import no_effect, took_effect
from harness.faults.partition import NFT_TIMEOUT_S, TABLE, TABLE_NAME, chain_name, find_nft
from harness.journal import FaultEntry
from harness.platforms.base import ControlPlaneFaults, Deployment, PacketFilter
from harness.scenario.models import ControlPlaneFault

__all__ = ["ControlPlaneFaultInjector", "from_scenario"]

RESYNC_TIMEOUT_S: Final = 60.0
STOPPED: Final = ("T", "t")


class XdsCut:
    """The nft chain that drops packets to and from istiod's xDS port."""

    def __init__(self, packet_filter: PacketFilter, nft: str, chain: str, port: int) -> None:
        self.packet_filter = packet_filter
        self.nft = nft
        self.chain = chain
        self.rules = [
            f'tcp dport {port} counter drop comment "to-istiod"',
            f'tcp sport {port} counter drop comment "from-istiod"',
        ]

    def _run(self, *args: str, script: str | None = None) -> str:
        argv = [self.nft, *args] if script is None else [self.nft, "-f", "-"]
        code, out, err = self.packet_filter.run(argv, timeout=NFT_TIMEOUT_S, input_text=script)
        if code != 0:
            raise FaultError(f"nft {' '.join(args) or script}: exit {code}: {err.strip()}")
        return out

    def ruleset(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = json.loads(self._run("-j", "list", "ruleset")).get(
            "nftables", []
        )
        return objects

    def packets(self) -> dict[str, int]:
        """Packets each rule dropped (by comment); empty when the chain is absent."""
        counts: dict[str, int] = {}
        for item in self.ruleset():
            rule = item.get("rule")
            if rule and rule.get("table") == TABLE_NAME and rule.get("chain") == self.chain:
                counts[str(rule.get("comment", ""))] = sum(
                    int(expr["counter"]["packets"])
                    for expr in rule.get("expr", [])
                    if isinstance(expr, dict) and "counter" in expr
                )
        return counts

    def add(self) -> None:
        self._run(
            script="\n".join(
                [
                    f"add table {TABLE}",
                    f"add chain {TABLE} {self.chain} "
                    "{ type filter hook input priority filter; policy accept; }",
                    f"flush chain {TABLE} {self.chain}",
                    *(f"add rule {TABLE} {self.chain} {rule}" for rule in self.rules),
                    "",
                ]
            )
        )
        if sorted(self.packets()) != ["from-istiod", "to-istiod"]:
            raise FaultError(f"read back: the rules of chain {self.chain} are not in place")

    def remove(self) -> bool:
        """Delete the chain (and the table when it is the last); True when it is gone."""
        ruleset = self.ruleset()
        chains = [i["chain"] for i in ruleset if (i.get("chain") or {}).get("table") == TABLE_NAME]
        if any(chain.get("name") == self.chain for chain in chains):
            self._run(
                script=f"flush chain {TABLE} {self.chain}\ndelete chain {TABLE} {self.chain}\n"
            )
            if len(chains) == 1:
                self._run(script=f"delete table {TABLE}\n")
        return not self.packets() and not any(
            (i.get("chain") or {}).get("name") == self.chain for i in self.ruleset()
        )


class ControlPlaneFaultInjector:
    """Kill, pause or cut off one control-plane component for the fault's window."""

    def __init__(
        self,
        fault: ControlPlaneFault,
        name: str,
        control: ControlPlaneFaults,
        cut: XdsCut | None,
    ) -> None:
        self.fault = fault
        self.control = control
        self.cut = cut
        self.component = fault.component
        self.acted = False
        self.record = FaultEntry(
            name=name,
            kind="controlPlane",
            phase=fault.phase,
            targets=[fault.component],
            detail={"component": fault.component, "action": fault.action},
        )
        if cut is not None:
            self.record.detail.update(
                table=TABLE, chain=cut.chain, hook="input", rules=list(cut.rules)
            )

    # ------------------------------------------------------------------ lifecycle

    def inject(self) -> None:
        if self.acted:
            return
        detail = self.record.detail
        detail["certificate_seconds_left_at_inject"] = _shortest(
            self.control.certificate_seconds_left()
        )
        try:
            if self.fault.action == "partition":
                assert self.cut is not None
                self.cut.add()
            elif self.fault.action == "kill":
                detail["pid"] = self.control.kill(self.component)
            else:
                detail["pid"] = self.control.pause(self.component)
        except HarnessError as exc:
            raise FaultError(f"fault {self.record.name}: {exc}") from exc
        self.acted = True
        if self.fault.action != "partition":
            detail["state_after_inject"] = self.control.state(self.component) or "gone"

    def revert(self) -> bool:
        if not self.acted:
            return True
        detail = self.record.detail
        begun = time.time()
        detail["revert_started_at"] = begun
        try:
            if self.fault.action == "partition":
                assert self.cut is not None
                if not self.cut.remove():
                    return False
            elif self.fault.action == "kill":
                if self.control.state(self.component) is None:
                    detail["restarted_pid"] = self.control.restart(self.component)
            else:
                self.control.resume(self.component)
            if self.control.state(self.component) in (None, *STOPPED):
                return False
            self.control.wait_synced(RESYNC_TIMEOUT_S)
        except HarnessError as exc:
            detail["revert_error"] = str(exc)
            return False
        detail["resynced_s"] = round(time.time() - begun, 3)
        self.acted = False
        return True

    # ------------------------------------------------------------------ effect

    def evidence(self) -> dict[str, int]:
        evidence: dict[str, int] = {}
        try:
            if self.cut is not None:
                packets = self.cut.packets()
                evidence["packets_to_istiod"] = packets.get("to-istiod", 0)
                evidence["packets_from_istiod"] = packets.get("from-istiod", 0)
            else:
                state = self.control.state(self.component)
                key = "gone" if self.fault.action == "kill" else "stopped"
                done = state is None if key == "gone" else state in STOPPED
                evidence[key] = int(done)
            connected = self.control.connected()
            evidence["envoys_xds_connected"] = sum(1 for v in connected.values() if v == 1)
            evidence["envoys_xds_disconnected"] = sum(1 for v in connected.values() if v != 1)
            not_synced = self.control.not_synced()
            evidence["istiod_unreachable"] = int(not_synced is None)
            evidence["proxies_not_synced"] = len(not_synced or ())
            left = self.control.certificate_seconds_left()
            evidence["certificates_valid"] = sum(1 for v in left.values() if v > 0)
            evidence["certificate_seconds_left_min"] = _shortest(left)
        except (HarnessError, ValueError, OSError):
            return evidence  # what was read so far: the revert must still run
        return evidence

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        name, what = self.record.name, f"{self.component}"
        certs = (
            f"; {evidence.get('certificates_valid', 0)} proxies' certificates still valid "
            f"(shortest {evidence.get('certificate_seconds_left_min', 0) / 3600:.1f} h left)"
        )
        down = evidence.get("envoys_xds_disconnected", 0)
        envoys = evidence.get("envoys_xds_connected", 0) + down
        xds = f"; {down} of {envoys} Envoys' xDS streams down"
        if self.fault.action == "partition":
            packets = evidence.get("packets_to_istiod", 0) + evidence.get("packets_from_istiod", 0)
            if packets <= 0:
                return no_effect(
                    name,
                    ": no packet to or from istiod's xDS port was dropped (nothing was pushed "
                    "or asked for during the cut: make a change, e.g. a configPropagation SLO)",
                )
            return took_effect(
                name,
                f": {packets} xDS packets dropped between the sidecars and istiod{xds}" + certs,
                evidence,
            )
        key = "gone" if self.fault.action == "kill" else "stopped"
        if not evidence.get(key):
            return no_effect(name, f": {what} was not {key} when the window ended")
        verb = "killed" if key == "gone" else "paused"
        return took_effect(name, f": {verb} {what}{xds}{certs}", evidence)


def _shortest(left: dict[str, int]) -> int:
    return min(left.values()) if left else 0


def from_scenario(
    fault: ControlPlaneFault, name: str, deployment: Deployment
) -> ControlPlaneFaultInjector:
    control = deployment.control_plane_faults
    if control is None:
        raise FaultError(
            f"fault {name}: a controlPlane fault needs a real control plane (--mesh istio); "
            "this deployment has none"
        )
    cut = None
    if fault.action == "partition":
        if deployment.packet_filter is None:
            raise FaultError(f"fault {name}: a partition needs the run's network namespace")
        cut = XdsCut(deployment.packet_filter, find_nft(), chain_name(name), control.xds_port)
    return ControlPlaneFaultInjector(fault, name, control, cut)
