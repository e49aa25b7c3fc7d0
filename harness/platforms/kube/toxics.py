"""``kind: toxic`` faults on Kubernetes: one toxiproxy pod per run, and nft DNAT in the
source pods steering each planned edge through it.

As on the local platform, the toxic proxies exist for the whole run, from before the first
request (a toxic fault then only adds and removes a toxic on them): for every edge a toxic
fault targets (``source`` service → one target instance) the run's toxiproxy pod
(``harness-toxiproxy``, the ``toxiproxy`` image, API on its loopback) gets a proxy
``<source>-><instance>`` listening on its own port and forwarding to the instance's
sidecar inbound (``<pod IP>:9090``); in each pod of the source service, the helper container
adds one nft rule::

    table ip harness_toxic {
        chain out {
            type nat hook output priority -100; policy accept;
            ip daddr <instance pod IP> tcp dport 9090 counter dnat to <toxiproxy pod IP>:<port>
        }
    }

so only the source's sidecars reach the instance through the toxic proxy, and they still see
the instance's own address (the evidence reads their per-endpoint counters for it). Mutual
TLS passes through toxiproxy untouched: it is a TCP proxy. The rules go in before any pod is
Ready, so no pooled connection bypasses them (NAT is decided at a connection's first
packet). They die with the pods at the end of the run.

The API is reached through a port-forward to the toxiproxy pod (it listens on the pod's
loopback only).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, Final

from harness.errors import PlatformError
from harness.mesh.envoy import Addr
from harness.platforms.base import EdgeProxy, InstanceInfo, PlannedToxicEdges, toxic_edges
from harness.platforms.kube.admin import PortForwardHttp
from harness.platforms.kube.processes import CHAOS_CONTAINER, PodPacketFilter
from harness.platforms.local.toxiproxy import Toxiproxy, ToxiproxyError, Transport
from harness.scenario.models import Scenario

__all__ = [
    "TOXIPROXY_POD",
    "KubeToxics",
    "plan_edges",
    "toxic_sources",
    "toxiproxy_pod",
]

TOXIPROXY_POD: Final = "harness-toxiproxy"
API_PORT: Final = 8474
FIRST_PORT: Final = 10000
NAT_TABLE: Final = "ip harness_toxic"
READY_POLL_S: Final = 0.3


def toxic_sources(scenario: Scenario) -> frozenset[str]:
    """The source services of the scenario's toxic edges: their pods' helper container
    writes the DNAT rules (NET_ADMIN)."""
    return frozenset(source for source, _ in toxic_edges(scenario, packet_filter=True))


def toxiproxy_pod(namespace: str, image: str, pull_policy: str) -> dict[str, Any]:
    """The run's toxiproxy server: API on the pod's loopback, proxies on the pod IP."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": TOXIPROXY_POD, "namespace": namespace, "labels": {}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "toxiproxy",
                    "image": image,
                    "imagePullPolicy": pull_policy,
                    "args": ["-host", "127.0.0.1", "-port", str(API_PORT)],
                    "env": [{"name": "LOG_LEVEL", "value": "warn"}],
                }
            ],
        },
    }


def plan_edges(
    scenario: Scenario, instances: Sequence[InstanceInfo]
) -> dict[tuple[str, str], tuple[str, int]]:
    """(source, instance) → (proxy name, toxiproxy port), as the local platform plans them:
    the first N instances of each toxic fault's target service."""
    planned: dict[tuple[str, str], tuple[str, int]] = {}
    for source, target in toxic_edges(scenario, packet_filter=True):
        of_service = [inst for inst in instances if inst.service == target.service]
        for inst in of_service[: target.count(len(of_service))]:
            if (source, inst.name) not in planned:
                planned[(source, inst.name)] = (
                    f"{source}->{inst.name}",
                    FIRST_PORT + len(planned),
                )
    return planned


def port_forward_transport(http: PortForwardHttp) -> Transport:
    """The toxiproxy client's transport over a port-forward (status 0: unreachable)."""

    def call(method: str, url: str, body: str | None) -> tuple[int, str]:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            return http.request(method, path, body, what="toxiproxy API")
        except PlatformError as exc:
            return 0, str(exc)

    return call


class KubeToxics:
    """The run's toxic edges: wait for the pods, make the proxies, write the DNAT rules."""

    def __init__(self, core: Any, namespace: str, scenario: Scenario) -> None:
        self.core = core
        self.namespace = namespace
        self.scenario = scenario
        self.http = PortForwardHttp(core, namespace, TOXIPROXY_POD, API_PORT, timeout=10.0)
        self.api = Toxiproxy(
            f"http://{TOXIPROXY_POD}:{API_PORT}", port_forward_transport(self.http)
        )

    def set_up(
        self,
        instances: Sequence[InstanceInfo],
        deadline: float,
        hopeless: Callable[[Sequence[Any]], None],
    ) -> PlannedToxicEdges:
        """Once every pod has its IP (and the helpers and toxiproxy run): the proxies, read
        back, then the rules in every source pod, read back."""
        pods = self._wait_scheduled(instances, deadline, hopeless)
        ips = {name: str(pod.status.pod_ip) for name, pod in pods.items()}
        toxiproxy_ip = str(pods[TOXIPROXY_POD].status.pod_ip)
        by_name = {inst.name: inst for inst in instances}
        planned = plan_edges(self.scenario, instances)
        self._wait_api(deadline)
        edges: dict[tuple[str, str], EdgeProxy] = {}
        try:
            for (source, instance), (name, port) in planned.items():
                upstream = Addr(ips[instance], by_name[instance].inbound_port)
                self.api.create_proxy(
                    name, listen=f"0.0.0.0:{port}", upstream=f"{upstream.host}:{upstream.port}"
                )
                # The source's sidecars dial the instance's own address; DNAT takes it on.
                edges[(source, instance)] = EdgeProxy(name, source, instance, upstream, upstream)
            present = self.api.proxies()
        except ToxiproxyError as exc:
            raise PlatformError(f"toxiproxy refused the edge proxies: {exc}") from exc
        missing = sorted(n for n, _ in planned.values() if n not in present)
        if missing:
            raise PlatformError(f"toxiproxy does not show the edge proxies {missing}")
        rules = [
            f"ip daddr {ips[instance]} tcp dport {by_name[instance].inbound_port} counter "
            f'dnat to {toxiproxy_ip}:{port} comment "{name}"'
            for (_, instance), (name, port) in planned.items()
        ]
        for source in sorted({source for source, _ in planned}):
            steered = [r for (s, _), r in zip(planned, rules, strict=True) if s == source]
            for inst in instances:
                if inst.service == source:
                    self._write_rules(inst.name, steered)
        return PlannedToxicEdges(self.api, edges)

    def _wait_scheduled(
        self,
        instances: Sequence[InstanceInfo],
        deadline: float,
        hopeless: Callable[[Sequence[Any]], None],
    ) -> dict[str, Any]:
        """Every instance pod with an IP, the sources' helpers and toxiproxy running."""
        sources = toxic_sources(self.scenario)
        wanted = {inst.name for inst in instances} | {TOXIPROXY_POD}
        helpers = {inst.name for inst in instances if inst.service in sources} | {TOXIPROXY_POD}
        while True:
            pods = self.core.list_namespaced_pod(self.namespace).items
            by_name = {pod.metadata.name: pod for pod in pods if pod.metadata.name in wanted}
            waiting = sorted(
                name
                for name in wanted
                if name not in by_name
                or not by_name[name].status.pod_ip
                or (name in helpers and not _running(by_name[name], name))
            )
            if not waiting:
                return by_name
            hopeless(pods)
            if time.monotonic() > deadline:
                raise PlatformError(
                    f"toxic edges: pods not scheduled with their helpers in {self.namespace}: "
                    + ", ".join(waiting)
                )
            time.sleep(READY_POLL_S)

    def _wait_api(self, deadline: float) -> None:
        while True:
            try:
                self.api.version()
                return
            except ToxiproxyError as exc:
                if time.monotonic() > deadline:
                    raise PlatformError(f"the toxiproxy pod does not answer: {exc}") from exc
                time.sleep(READY_POLL_S)

    def _write_rules(self, pod: str, rules: Sequence[str]) -> None:
        nft = PodPacketFilter(self.core, self.namespace, pod)
        script = "\n".join(
            [
                f"add table {NAT_TABLE}",
                f"add chain {NAT_TABLE} out "
                "{ type nat hook output priority -100; policy accept; }",
                f"flush chain {NAT_TABLE} out",
                *(f"add rule {NAT_TABLE} out {rule}" for rule in rules),
                "",
            ]
        )
        code, _, err = nft.run(["nft", "-f", "-"], input_text=script)
        if code != 0:
            raise PlatformError(f"{pod}: nft refused the toxic edges' DNAT (exit {code}): {err}")
        code, out, err = nft.run(["nft", "list", "chain", *NAT_TABLE.split(), "out"])
        found = out.count(" dnat to ")
        if code != 0 or found != len(rules):
            raise PlatformError(
                f"{pod}: read back {found} DNAT rule(s) of {len(rules)} ({err.strip() or out})"
            )

    def close(self) -> None:
        self.http.close()


def _running(pod: Any, name: str) -> bool:
    """The pod's helper (or, for toxiproxy, its only container) runs."""
    container = "toxiproxy" if name == TOXIPROXY_POD else CHAOS_CONTAINER
    for status in pod.status.container_statuses or []:
        if status.name == container:
            return bool(status.state is not None and status.state.running)
    return False
