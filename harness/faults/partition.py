"""Partitions: packet filters between instances, nftables inside the run's network namespace.

Every instance owns an address there (``127.10.<service>.<n>``), and the mesh's traffic
between instances carries those addresses on the wire: a caller's sidecar binds its instance
IP as the source of its upstream connections, a callee's sidecar listens on its instance IP.
A request frontend-0 → catalog-1 is thus ``127.10.1.1:<ephemeral> → 127.10.2.2:15006`` (and
the replies the other way). An app and its own sidecar talk from ``127.0.0.1``, so a partition
never cuts an instance off from itself.

One table per run, created on first use; one base chain per fault::

    table inet harness {
        chain fault_frontend_cut_3f2a1c {
            type filter hook input priority filter; policy accept;
            ip saddr { 127.10.1.1 } ip daddr { 127.10.2.1 } counter drop comment "forward"
            ip saddr { 127.10.2.1 } ip daddr { 127.10.1.1 } counter drop comment "reverse"
        }
    }

``mode: reject`` writes ``… tcp flags & rst == 0 counter reject with tcp reset`` (callers see
a refused connection at once, or a reset on a pooled one) and ``… meta l4proto udp counter
reject`` (ICMP port unreachable); RSTs themselves pass, or the reverse rule would swallow the
resets the forward rule sends (and turn the reject into a drop); other protocols pass.
``direction: oneway`` keeps only the ``forward`` rules. TCP needs packets both ways, so a
one-way cut still stops connections opened from either side; it differs for datagrams and in
which side's packets vanish.

Why the ``input`` hook: loopback packets traverse ``output`` and then ``input``. Dropped at
``input`` they vanish the way a blackholed network loses them: the sender's kernel sent them and
its TCP retransmits until the caller's connect timeout (Envoy: ``upstream_cx_connect_timeout``,
response flag ``UF``). Dropped at ``output``, the sending socket gets ``EPERM`` instead, which no
real network does. Connections that were open before a ``drop`` partition hang (their requests
end in the caller's per-try or route timeout, flag ``UT``), as they would across a real cut.

An edge that also has a toxic proxy (a ``kind: toxic`` fault planned on it) carries its
traffic through toxiproxy: the caller's sidecar connects to the proxy's listen address, and
the proxy connects onward from its own. The rules then also match the packets to the proxy
(``ip saddr <from> ip daddr <proxy ip> tcp dport <proxy port>``) and its answers, so the cut
holds on such an edge too (``detail.toxic_proxies`` lists them).

The counter of every rule is the fault's evidence; the revert deletes the chain (and the table
once it is empty) and reads the ruleset back. In host mode there is no namespace of the run's
own: the partition is then emulated with toxiproxy on the edge, and the journal says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from harness.errors import FaultError, HarnessError
from harness.faults.base import (
    CounterDeltas,
    Injector,
    no_effect,
    select_instances,
    took_effect,
)
from harness.journal import FaultEntry
from harness.mesh.admin import AdminApi
from harness.mesh.envoy import outbound_cluster_name
from harness.mesh.stats import (
    CONNECT_FAILURES,
    CONNECT_TIMEOUTS,
    PER_TRY_TIMEOUTS,
    ROUTE_TIMEOUTS,
    sum_cluster_counters,
)
from harness.platforms.base import (
    Deployment,
    EdgeProxy,
    InstanceInfo,
    PacketFilter,
    toxic_edge_of,
)
from harness.scenario.models import PartitionFault, ToxicFault, ToxicKind

TABLE_FAMILY = "inet"
TABLE_NAME = "harness"
TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"
NFT_TIMEOUT_S = 10.0
# Caller-side Envoy counters that show what a cut does to the edge (from → to).
CALLER_COUNTERS = (CONNECT_TIMEOUTS, CONNECT_FAILURES, PER_TRY_TIMEOUTS, ROUTE_TIMEOUTS)

T = TypeVar("T")


def find_nft() -> str:
    """The ``nft`` binary (often in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise FaultError(
            "partitions need nftables, and 'nft' is not installed: apt-get install nftables"
        )
    return found


def chain_name(fault: str) -> str:
    """An nft identifier unique to a fault name: ``fault_<letters>_<hash>``."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", fault)[:40]
    digest = hashlib.sha256(fault.encode()).hexdigest()[:6]
    return f"fault_{readable}_{digest}"


def _ips(instances: tuple[InstanceInfo, ...]) -> str:
    return "{ " + ", ".join(sorted({inst.ip for inst in instances})) + " }"


def _matches(
    src: tuple[InstanceInfo, ...],
    dst: tuple[InstanceInfo, ...],
    toward_dst: Sequence[EdgeProxy],
    toward_src: Sequence[EdgeProxy],
) -> list[str]:
    """nft matches for the packets from ``src``'s side to ``dst``'s side: direct, to a toxic
    proxy in front of a ``dst`` instance, and from a toxic proxy that answers for a ``src``
    instance (a proxy speaks for the instance behind it)."""
    matches = [f"ip saddr {_ips(src)} ip daddr {_ips(dst)}"]
    matches += [
        f"ip saddr {_ips(src)} ip daddr {edge.listen.host} tcp dport {edge.listen.port}"
        for edge in toward_dst
    ]
    matches += [
        f"ip saddr {edge.listen.host} tcp sport {edge.listen.port} ip daddr {_ips(dst)}"
        for edge in toward_src
    ]
    return matches


def _describe(instances: tuple[InstanceInfo, ...]) -> str:
    return ", ".join(inst.name for inst in instances)


class PartitionInjector:
    """Cut ``sources`` off from ``destinations`` with one nft chain in each network namespace
    of ``packet_filters`` (the run's one namespace locally; each pod's own on kube, where
    the same chain in every involved pod matches the packets that pod receives)."""

    def __init__(
        self,
        fault: PartitionFault,
        name: str,
        packet_filters: Mapping[str, PacketFilter],
        nft: str,
        sources: tuple[InstanceInfo, ...],
        destinations: tuple[InstanceInfo, ...],
        callers: dict[str, AdminApi] | None = None,
        detours: Sequence[EdgeProxy] = (),
        detours_back: Sequence[EdgeProxy] = (),
    ) -> None:
        self.fault = fault
        self.packet_filters = dict(packet_filters)
        # Toxic proxies on the cut's edges: the sources reach a destination through
        # ``detours`` (and the destinations a source through ``detours_back``), so the rules
        # match the traffic to and from their listen addresses too.
        self.detours = tuple(detours)
        self.detours_back = tuple(detours_back)
        self.nft = nft
        self.sources = sources
        self.destinations = destinations
        self.chain = chain_name(name)
        # Sidecars of the source instances, when ``from`` calls ``to``: their counters for the
        # destination's cluster show the cut from the caller's side.
        self.callers = callers or {}
        cluster = outbound_cluster_name(destinations[0].service)
        self.counters = CounterDeltas(
            lambda: sum_cluster_counters(self.callers.values(), cluster, CALLER_COUNTERS)
        )
        self.rules = self._rules()
        self.record = FaultEntry(
            name=name,
            kind="partition",
            phase=fault.phase,
            targets=sorted({inst.name for inst in (*sources, *destinations)}),
            detail={
                "mode": fault.mode,
                "direction": fault.direction,
                "from": {inst.name: inst.ip for inst in sources},
                "to": {inst.name: inst.ip for inst in destinations},
                "table": TABLE,
                "namespaces": sorted(self.packet_filters),
                "chain": self.chain,
                "hook": "input",
                "rules": list(self.rules),
                "toxic_proxies": {
                    edge.name: f"{edge.listen.host}:{edge.listen.port}"
                    for edge in (*self.detours, *self.detours_back)
                },
            },
        )

    # ------------------------------------------------------------------ nft

    def _rules(self) -> list[str]:
        forward = _matches(self.sources, self.destinations, self.detours, self.detours_back)
        pairs = [("forward", forward)]
        if self.fault.direction == "both":
            reverse = _matches(self.destinations, self.sources, self.detours_back, self.detours)
            pairs.append(("reverse", reverse))
        rules = []
        for label, matches in pairs:
            for match in matches:
                if self.fault.mode == "drop":
                    rules.append(f'{match} counter drop comment "{label}"')
                    continue
                # A reset (or ICMP error) the kernel sends for the other direction's rule
                # crosses the cut the other way: RSTs must pass, or "reject" becomes "drop".
                rules.append(
                    f'{match} tcp flags & rst == 0 counter reject with tcp reset comment "{label}"'
                )
                if " tcp " not in match:  # toxic proxies carry TCP only
                    rules.append(f'{match} meta l4proto udp counter reject comment "{label}"')
        return rules

    def _nft(self, where: str, *args: str, script: str | None = None) -> tuple[int, str, str]:
        argv = [self.nft, *args] if script is None else [self.nft, "-f", "-"]
        try:
            return self.packet_filters[where].run(argv, timeout=NFT_TIMEOUT_S, input_text=script)
        except HarnessError as exc:
            raise FaultError(f"fault {self.record.name}: nft in {where} failed: {exc}") from exc

    def _apply(self, where: str, script: str) -> None:
        code, _, err = self._nft(where, script=script)
        if code != 0:
            raise FaultError(
                f"fault {self.record.name}: nft in {where} refused the change (exit {code}): "
                f"{err.strip()}\nscript:\n{script}"
            )

    def ruleset(self, where: str) -> list[dict[str, Any]]:
        """A namespace's whole ruleset as nft's JSON objects (``nft -j list ruleset``)."""
        code, out, err = self._nft(where, "-j", "list", "ruleset")
        if code != 0:
            raise FaultError(f"fault {self.record.name}: nft list ruleset in {where}: {err}")
        objects: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return objects

    def installed(self, where: str) -> list[tuple[str, int]]:
        """The chain's rules in one namespace as (comment, packets matched); empty when the
        chain is absent there."""
        rules = []
        for item in self.ruleset(where):
            rule = item.get("rule")
            if not rule or rule.get("table") != TABLE_NAME or rule.get("chain") != self.chain:
                continue
            packets = sum(
                int(expr["counter"]["packets"])
                for expr in rule.get("expr", [])
                if isinstance(expr, dict) and "counter" in expr
            )
            rules.append((str(rule.get("comment", "")), packets))
        return rules

    def _chain_present(self, ruleset: list[dict[str, Any]]) -> bool:
        return any(
            (item.get("chain") or {}).get("table") == TABLE_NAME
            and item["chain"].get("name") == self.chain
            for item in ruleset
        )

    def _each(self, work: Callable[[str], T]) -> dict[str, T]:
        """``work`` in every namespace, at once where there are several (kube: each is an
        ``exec`` into a pod, and a cut waiting on them one after the other would start
        late and end late); the first failure is raised once all are done."""
        names = list(self.packet_filters)
        if len(names) <= 1:
            return {name: work(name) for name in names}
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = {name: pool.submit(work, name) for name in names}
        return {name: future.result() for name, future in futures.items()}

    # ------------------------------------------------------------------ lifecycle

    def inject(self) -> None:
        self.counters.start()
        script = "\n".join(
            [
                f"add table {TABLE}",
                f"add chain {TABLE} {self.chain} "
                "{ type filter hook input priority filter; policy accept; }",
                f"flush chain {TABLE} {self.chain}",  # idempotent: a second inject rewrites
                *(f"add rule {TABLE} {self.chain} {rule}" for rule in self.rules),
                "",
            ]
        )
        expected = [rule.rsplit('comment "', 1)[1].rstrip('"') for rule in self.rules]

        def write_and_read(where: str) -> None:
            self._apply(where, script)
            found = [comment for comment, _ in self.installed(where)]
            if found != expected:
                raise FaultError(
                    f"fault {self.record.name}: read back {len(found)} rule(s) {found} in "
                    f"chain {self.chain} in {where}, expected {expected}"
                )

        self._each(write_and_read)

    def revert(self) -> bool:
        """Delete the chain everywhere (the table too where it is left empty); True when
        every namespace reads back without it."""
        return all(self._each(self._revert_in).values())

    def _revert_in(self, where: str) -> bool:
        try:
            ruleset = self.ruleset(where)
            if self._chain_present(ruleset):
                self._apply(
                    where,
                    f"flush chain {TABLE} {self.chain}\ndelete chain {TABLE} {self.chain}\n",
                )
                ruleset = self.ruleset(where)
            chains_left = [
                item for item in ruleset if (item.get("chain") or {}).get("table") == TABLE_NAME
            ]
            table_left = any(
                (item.get("table") or {}).get("name") == TABLE_NAME for item in ruleset
            )
            if table_left and not chains_left:
                self._apply(where, f"delete table {TABLE}\n")
                ruleset = self.ruleset(where)
        except HarnessError:
            return False  # the namespace is gone (its rules with it), but nothing proves it
        return not self._chain_present(ruleset)

    # ------------------------------------------------------------------ effect

    def evidence(self) -> dict[str, int]:
        try:
            rules = [rule for found in self._each(self.installed).values() for rule in found]
        except HarnessError:
            return {}
        evidence = {"packets_forward": sum(p for c, p in rules if c == "forward")}
        if self.fault.direction == "both":
            evidence["packets_reverse"] = sum(p for c, p in rules if c == "reverse")
        if self.callers:
            evidence.update(self.counters.deltas("callers_"))
        return evidence

    def judge_effect(self, evidence: dict[str, int]) -> tuple[bool, str]:
        packets = evidence.get("packets_forward", 0) + evidence.get("packets_reverse", 0)
        edge = f"{_describe(self.sources)} → {_describe(self.destinations)}"
        verb = "dropped" if self.fault.mode == "drop" else "rejected"
        if packets <= 0:
            return no_effect(
                self.record.name,
                f": no packet crossed the cut {edge} ({self.fault.direction}); "
                "is there traffic between them?",
            )
        return took_effect(self.record.name, f": {packets} packets {verb} {edge}", evidence)


def from_scenario(fault: PartitionFault, name: str, deployment: Deployment) -> Injector:
    """nft rules where the platform filters packets; else a toxic on the edge, said aloud."""
    sources = select_instances(deployment, fault.from_, name)
    destinations = select_instances(deployment, fault.to, name)
    packet_filters = deployment.packet_filters((*sources, *destinations))
    emulated = toxic_edge_of(fault, packet_filter=bool(packet_filters)) is not None
    if emulated or not packet_filters:
        return _toxiproxy_fallback(fault, name, deployment)
    both = sorted({i.name for i in sources} & {i.name for i in destinations})
    if both:
        raise FaultError(
            f"fault {name}: 'from' and 'to' both select {', '.join(both)}; an instance cannot "
            "be partitioned from itself"
        )
    topology = deployment.scenario.app.topology
    calls = fault.to.service in topology.service(fault.from_.service).calls
    callers = {inst.name: deployment.admin(inst.name) for inst in sources} if calls else {}
    return PartitionInjector(
        fault,
        name,
        packet_filters,
        # This host's nft runs in the run's own namespace; a pod's filter runs its image's.
        find_nft() if deployment.packet_filter is not None else "nft",
        sources,
        destinations,
        callers,
        detours=_toxic_proxies(deployment, sources, destinations),
        detours_back=_toxic_proxies(deployment, destinations, sources),
    )


def _toxic_proxies(
    deployment: Deployment, callers: tuple[InstanceInfo, ...], callees: tuple[InstanceInfo, ...]
) -> list[EdgeProxy]:
    """The toxic proxies through which ``callers``' services reach ``callees``."""
    toxics = deployment.toxics
    if toxics is None:
        return []
    services = sorted({inst.service for inst in callers})
    found = (toxics.edge(service, callee.name) for service in services for callee in callees)
    return [edge for edge in found if edge is not None]


def _toxiproxy_fallback(fault: PartitionFault, name: str, deployment: Deployment) -> Injector:
    """Without a network namespace, cut the edge with toxiproxy, and say so.

    ``drop`` becomes a ``timeout`` toxic with no timeout (data vanishes, the connection stays
    open: callers see request timeouts rather than connect timeouts); ``reject`` becomes
    ``reset_peer`` (callers see resets). The cut is per service edge: toxiproxy sits between
    the calling service's sidecars and the callee's instances.
    """
    from harness.faults import toxic  # the toxic injector, for this stand-in only

    note = (
        f"fault {name}: no network namespace on this run ({deployment.isolation_note}); the "
        "partition is emulated with toxiproxy"
    )
    topology = deployment.scenario.app.topology
    caller, callee = fault.from_.service, fault.to.service
    if callee not in topology.service(caller).calls:
        raise FaultError(
            f"{note}, which can only cut an edge the app uses, and {caller!r} does not call "
            f"{callee!r}. Use --isolation namespace for packet-level partitions."
        )
    if fault.from_.instances is not None:
        raise FaultError(
            f"{note}, which cuts whole services' edges: omit from.instances (all of {caller!r})"
        )
    stand_in = ToxicFault.model_validate(
        {
            "kind": "toxic",
            "name": fault.name,
            "phase": fault.phase,
            "toxic": (ToxicKind.TIMEOUT if fault.mode == "drop" else ToxicKind.RESET_PEER).value,
            "source": caller,
            "target": fault.to.model_dump(by_alias=True, exclude_none=True),
            "stream": "upstream",
            "timeout": "0s",  # timeout: hold the data forever; reset_peer: reset at once
        }
    )
    injector = toxic.from_scenario(stand_in, name, deployment)
    injector.record.kind = "partition"
    injector.record.detail["emulation"] = (
        f"toxiproxy {stand_in.toxic.value} toxic on {caller} → {callee} (host mode: no network "
        "namespace, so no packet-level partition)"
    )
    return injector
