"""A scenario's app and mesh policy as the Kubernetes + Istio objects a real cluster would hold.

This is the single source of truth for the mesh policy outside ``--mesh envoy``: the local
``--mesh istio`` mode and the Kubernetes platform apply these objects unchanged, and
``harness manifests`` prints them for ``kubectl apply -f -``.

Objects, in apply order::

    Namespace            one per run, labelled with the run id (sidecar injection on)
    ServiceAccount       one per service (the workload identity istiod's CA signs)
    Service              one per service, port 8080 named ``http`` (Istio reads the protocol
                         from the port name)
    Deployment           one per service: the sample app, its replicas, labels app/version
    Gateway              ``ingress``: port 80, any host, on the ingress gateway workload
    VirtualService       ``ingress``, bound to that Gateway: every request → the entry service
    VirtualService       one per destination that sets ``timeout``, ``retries`` or ``http``
                         routes (mesh only; routes: :mod:`harness.kube.traffic`)
    DestinationRule      one per destination that sets ``connectionPool``,
                         ``outlierDetection``, ``loadBalancer`` or ``subsets``
    PeerAuthentication   ``default`` (namespace-wide ``mtls.mode``), one per service with a
                         mode of its own (selector ``app: <service>``)
    AuthorizationPolicy  one per ``mesh.authorizationPolicies`` entry (harness.kube.security)

Semantics (Istio's, read in the pinned istio module):

* A VirtualService without ``gateways:`` binds to sidecars only (``mesh``), not to the
  ingress gateway. The gateway's route comes from the ``ingress`` VirtualService, which
  carries the entry service's ``timeout`` and ``retries``: the scenario's policy for calls
  *to* the entry service covers its only caller, the gateway. With no ``retries`` the
  field is left out and Istio's default retry policy applies (``--mesh envoy`` does the
  same, see :func:`harness.mesh.envoy.ingress_bootstrap`).
* Omitted fields stay omitted, so Istio's defaults apply. A ``0s`` timeout, per-try
  timeout or connect timeout is left out too: Istio refuses durations under 1 ms, and the
  default it then uses (none / none / the mesh's 10 s) is what ``0s`` means to Envoy.
* What Istio's validation would refuse is refused here, every problem at once
  (:class:`RenderError`): durations under 1 ms or not in whole milliseconds, a retry policy
  with ``attempts: 0`` and other fields, a ``retryOn`` condition istiod does not know.

>>> from harness.scenario import load_scenario
>>> objects = render(load_scenario("scenarios/retries-mask-transient-errors.yaml"))
>>> print(to_yaml(objects))  # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

import yaml

from harness.app.topology import DEFAULT_VERSION, ServiceSpec
from harness.errors import HarnessError
from harness.kube import traffic as routing_objects
from harness.kube.security import SECURITY, security_objects
from harness.kube.traffic import JsonObject as JsonObject
from harness.kube.traffic import JsonValue as JsonValue
from harness.scenario.models import (
    ConnectionPool,
    DestinationPolicy,
    LoadBalancer,
    OutlierDetection,
    Retries,
    Scenario,
)
from harness.units import format_duration

SERVICE_PORT: Final = 8080
PORT_NAME: Final = "http"  # Istio selects the HTTP protocol by the port name
GATEWAY_PORT: Final = 80
INGRESS: Final = "ingress"  # name of the Gateway and of its VirtualService
APP_VERSION: Final = DEFAULT_VERSION  # the version label of a service without versions
DEFAULT_IMAGE: Final = "harness-app:local"
DEFAULT_GATEWAY_SELECTOR: Final[Mapping[str, str]] = {"istio": "ingressgateway"}
MANAGED_BY: Final = "harness"
RUN_ID_LABEL: Final = "harness/run-id"
SCENARIO_LABEL: Final = "harness/scenario"
NETWORKING: Final = "networking.istio.io/v1"

# istiod's validation (pkg/config/validation/validation.go, supportedRetryOnPolicies) accepts
# these retryOn conditions besides HTTP status codes Go's http.StatusText knows.
ISTIO_RETRY_ON: Final = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
_KNOWN_STATUS_CODES = frozenset(int(status) for status in HTTPStatus)
_ATOI = re.compile(r"[+-]?[0-9]+")
# A Kubernetes label value: at most 63 characters, alphanumerics with -_. inside.
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class RenderError(HarnessError):
    """The scenario cannot be written as objects Istio and Kubernetes would accept.

    ``problems`` holds one line per problem, each starting with the scenario field path.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"{len(self.problems)} {noun} rendering the scenario for Istio:\n"
            + "\n".join(self.problems)
        )


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object: a typed envelope around its JSON body.

    ``body`` holds every top-level field besides ``apiVersion``, ``kind`` and ``metadata``
    (``spec`` for most kinds); :meth:`to_dict` gives what ``kubectl apply`` reads.
    """

    api_version: str
    kind: str
    name: str
    namespace: str | None
    labels: Mapping[str, str]
    body: Mapping[str, JsonValue] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``Kind/namespace/name``, for messages."""
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"

    def to_dict(self) -> JsonObject:
        metadata: JsonObject = {"name": self.name}
        if self.namespace is not None:
            metadata["namespace"] = self.namespace
        metadata["labels"] = dict(self.labels)
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            **self.body,
        }


@dataclass(frozen=True)
class RenderOptions:
    """Where and how the objects are rendered.

    ``namespace`` defaults to ``harness-<scenario name>``; ``run_id`` labels every object
    (``harness cleanup`` and the Kubernetes platform find a run's objects by it).
    """

    namespace: str | None = None
    run_id: str = "manual"
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    gateway_selector: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_GATEWAY_SELECTOR)
    )

    @classmethod
    def for_run(cls, run_id: str, *, image: str = DEFAULT_IMAGE) -> RenderOptions:
        """The options of one run: its own namespace (:func:`run_namespace`) and run id label.

        >>> RenderOptions.for_run("20261201T153253Z-abc123").namespace
        'harness-20261201t153253z-abc123'
        """
        return cls(namespace=run_namespace(run_id), run_id=run_id, image=image)

    def namespace_for(self, scenario: Scenario) -> str:
        return self.namespace or f"harness-{scenario.metadata.name}"[:63].rstrip("-")


def run_namespace(run_id: str) -> str:
    """The namespace of one run: ``harness-<run id>``, lowercased (namespaces are DNS labels)."""
    return f"harness-{run_id.lower()}"[:63].rstrip("-")


def render(scenario: Scenario, options: RenderOptions | None = None) -> list[Manifest]:
    """Every object of ``scenario`` in apply order; :class:`RenderError` lists what Istio
    would refuse."""
    options = options or RenderOptions()
    namespace = options.namespace_for(scenario)
    problems = [
        f"{'.'.join(map(str, path))}: {message}" for path, message in istio_problems(scenario)
    ]
    problems += _option_problems(options, namespace)
    if problems:
        raise RenderError(problems)
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        RUN_ID_LABEL: options.run_id,
        SCENARIO_LABEL: scenario.metadata.name,
    }
    context = _Context(scenario, options, namespace, labels)
    return [
        _namespace(context),
        *_workloads(context),
        *_ingress(context),
        *_traffic(context),
        *_security_objects(context),
    ]


def to_yaml(manifests: Sequence[Manifest]) -> str:
    """Multi-document YAML that ``kubectl apply -f -`` reads."""
    return yaml.safe_dump_all(
        [manifest.to_dict() for manifest in manifests], sort_keys=False, default_flow_style=False
    )


# --------------------------------------------------------------------------- checks


def istio_problems(scenario: Scenario) -> list[tuple[tuple[str | int, ...], str]]:
    """What Istio's validation would refuse in the mesh policy, as (field path, message).

    Mirrors pkg/config/validation in the pinned istio module: ``ValidateDuration`` (at
    least 1 ms, whole milliseconds) on timeouts and outlier-detection times,
    ``validateHTTPRetry`` (``attempts: 0`` with other fields, unknown ``retryOn``).
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for service, policy in scenario.mesh.destinations.items():
        where: tuple[str | int, ...] = ("mesh", "destinations", service)
        durations: list[tuple[tuple[str | int, ...], float | None, bool]] = [
            ((*where, "timeout"), policy.timeout, True),
        ]
        if policy.retries is not None:
            retries = policy.retries
            durations.append(((*where, "retries", "perTryTimeout"), retries.per_try_timeout, True))
            if retries.attempts == 0 and (retries.per_try_timeout or retries.retry_on):
                problems.append(
                    (
                        (*where, "retries"),
                        "Istio refuses perTryTimeout or retryOn with attempts: 0 (retries "
                        "disabled); remove them or set attempts",
                    )
                )
            for part in (retries.retry_on or "").split(","):
                if part and not _retry_condition_known(part):
                    problems.append(
                        (
                            (*where, "retries", "retryOn"),
                            f"{part!r} is not a retryOn condition Istio accepts; valid: "
                            f"{', '.join(sorted(ISTIO_RETRY_ON))} or an HTTP status code",
                        )
                    )
        if policy.connection_pool is not None:
            durations.append(
                (
                    (*where, "connectionPool", "tcp", "connectTimeout"),
                    policy.connection_pool.tcp.connect_timeout,
                    True,
                )
            )
        if policy.outlier_detection is not None:
            outlier = policy.outlier_detection
            durations.append(((*where, "outlierDetection", "interval"), outlier.interval, False))
            durations.append(
                (
                    (*where, "outlierDetection", "baseEjectionTime"),
                    outlier.base_ejection_time,
                    False,
                )
            )
        for path, value, zero_means_default in durations:
            message = _duration_problem(value, zero_means_default)
            if message:
                problems.append((path, message))
    return problems


def _retry_condition_known(part: str) -> bool:
    # Istio splits on "," without trimming: " 5xx" is refused by istiod's validation.
    if _ATOI.fullmatch(part) is not None and int(part) in _KNOWN_STATUS_CODES:
        return True
    return part in ISTIO_RETRY_ON


def _duration_problem(value: float | None, zero_means_default: bool) -> str | None:
    if value is None or (value == 0 and zero_means_default):
        return None
    micros = round(value * 1_000_000)
    if micros < 1000:
        return f"{format_duration(value)}: Istio refuses durations under 1ms"
    if micros % 1000:
        return f"{format_duration(value)}: Istio accepts durations in whole milliseconds only"
    return None


def _option_problems(options: RenderOptions, namespace: str) -> list[str]:
    problems = []
    if not _NAMESPACE.match(namespace):
        problems.append(
            f"namespace {namespace!r}: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    if not _LABEL_VALUE.match(options.run_id):
        problems.append(
            f"run id {options.run_id!r} is not a Kubernetes label value (at most 63 "
            "letters, digits, '-', '_', '.')"
        )
    if not options.image.strip() or any(ch.isspace() for ch in options.image):
        problems.append(f"image {options.image!r}: give an image reference like harness-app:local")
    return problems


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class _Context:
    scenario: Scenario
    options: RenderOptions
    namespace: str
    labels: Mapping[str, str]

    def manifest(
        self,
        api_version: str,
        kind: str,
        name: str,
        body: Mapping[str, JsonValue],
        extra_labels: Mapping[str, str] | None = None,
    ) -> Manifest:
        return Manifest(
            api_version, kind, name, self.namespace, {**self.labels, **(extra_labels or {})}, body
        )


def _namespace(context: _Context) -> Manifest:
    # istio-injection: enabled makes a real cluster inject the sidecar into every pod.
    labels = {**context.labels, "istio-injection": "enabled"}
    return Manifest("v1", "Namespace", context.namespace, None, labels)


def _workloads(context: _Context) -> Iterator[Manifest]:
    topology = context.scenario.app.topology
    services = topology.service_names
    for service in services:
        yield context.manifest("v1", "ServiceAccount", service, {}, {"app": service})
    for service in services:
        yield context.manifest(
            "v1",
            "Service",
            service,
            {
                "spec": {
                    "selector": {"app": service},
                    "ports": [
                        {
                            "name": PORT_NAME,
                            "port": SERVICE_PORT,
                            "targetPort": PORT_NAME,
                            "protocol": "TCP",
                        }
                    ],
                }
            },
            {"app": service},
        )
    for service in services:
        yield from _deployments(context, service)


def _deployments(context: _Context, service: str) -> Iterator[Manifest]:
    """One Deployment per version of ``service``: named after the service alone when it
    declares no versions (label ``version: v1``), ``<service>-<version>`` otherwise, as
    Istio's samples do; DestinationRule subsets select them by their ``version`` label."""
    spec = context.scenario.app.topology.service(service)
    first = 0
    for variant in spec.variants:
        name = f"{service}-{variant.version}" if spec.versioned else service
        yield _deployment(context, spec, name, variant.pod_labels, first)
        first += variant.replicas


def _deployment(
    context: _Context, spec: ServiceSpec, name: str, version_labels: dict[str, str], first: int
) -> Manifest:
    """``first``: the service-wide number of this version's first instance."""
    service = spec.name
    variant = spec.variant_of(first)
    pod_labels = {**context.labels, **version_labels, "app": service}
    args: list[JsonValue] = [
        "--service",
        service,
        "--instance",
        "$(POD_NAME)",  # Kubernetes expands $(VAR) from the container's env
        "--listen",
        f"0.0.0.0:{SERVICE_PORT}",
    ]
    if spec.calls:
        # In a pod the sidecar captures every outbound connection, and Istio serves all
        # HTTP services on port 8080 from one route table chosen by the Host header (which
        # the app sets to the dependency's name). So any dependency's Service address
        # reaches the sidecar's outbound routes for all of them.
        args += ["--sidecar", f"{spec.calls[0]}:{SERVICE_PORT}"]
    args += spec.app_arguments(first)
    container: JsonObject = {
        "name": "app",
        "image": context.options.image,
        "imagePullPolicy": context.options.image_pull_policy,
        "command": ["python3", "-m", "harness.app.service"],
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": PORT_NAME, "containerPort": SERVICE_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT_NAME},
            "periodSeconds": 1,
        },
    }
    body: JsonObject = {
        "spec": {
            "replicas": variant.replicas,
            "selector": {"matchLabels": {"app": service, "version": variant.version}},
            "template": {
                "metadata": {"labels": dict(pod_labels)},
                "spec": {
                    "serviceAccountName": service,
                    "terminationGracePeriodSeconds": 2,
                    "containers": [container],
                },
            },
        }
    }
    extra = {"app": service, "version": variant.version} if spec.versioned else {"app": service}
    return context.manifest("apps/v1", "Deployment", name, body, extra)


def _ingress(context: _Context) -> Iterator[Manifest]:
    entry = context.scenario.app.topology.entry
    yield context.manifest(
        NETWORKING,
        "Gateway",
        INGRESS,
        {
            "spec": {
                "selector": dict(context.options.gateway_selector),
                "servers": [
                    {
                        "port": {"number": GATEWAY_PORT, "name": "http", "protocol": "HTTP"},
                        "hosts": ["*"],
                    }
                ],
            }
        },
    )
    # The gateway gets the entry service's route policy (see the module docstring).
    policy = context.scenario.mesh.destinations.get(entry) or DestinationPolicy()
    route = _http_route(INGRESS, entry, policy)
    yield context.manifest(
        NETWORKING,
        "VirtualService",
        INGRESS,
        {"spec": {"hosts": ["*"], "gateways": [INGRESS], "http": [route]}},
    )


def _traffic(context: _Context) -> Iterator[Manifest]:
    destinations = context.scenario.mesh.destinations
    services = [s for s in context.scenario.app.topology.service_names if s in destinations]
    for service in services:
        policy = destinations[service]
        if policy.timeout is not None or policy.retries is not None or policy.http:
            # No ``gateways:``: bound to the sidecars only, as the scenario means.
            http: list[JsonValue] = [_http_route(service, service, policy)]
            if policy.http:
                http = routing_objects.http_routes(service, policy, _http_route)
            yield context.manifest(
                NETWORKING,
                "VirtualService",
                service,
                {"spec": {"hosts": [service], "http": http}},
                {"app": service},
            )
    for service in services:
        spec: JsonObject = {"host": service}
        traffic_policy = _traffic_policy(destinations[service])
        if traffic_policy:
            spec["trafficPolicy"] = traffic_policy
        if destinations[service].subsets:
            spec["subsets"] = routing_objects.subsets(destinations[service])
        if len(spec) > 1:
            yield context.manifest(
                NETWORKING, "DestinationRule", service, {"spec": spec}, {"app": service}
            )


def _security_objects(context: _Context) -> Iterator[Manifest]:
    """PeerAuthentication and AuthorizationPolicy objects (:mod:`harness.kube.security`)."""
    mesh = context.scenario.mesh
    for obj in security_objects(
        mesh.peer_authentication, mesh.authorization_policies, context.namespace
    ):
        labels = {"app": obj.service} if obj.service is not None else None
        yield context.manifest(SECURITY, obj.kind, obj.name, {"spec": obj.spec}, labels)


def _http_route(name: str, destination: str, policy: DestinationPolicy) -> JsonObject:
    route: JsonObject = {
        "name": name,
        "route": [{"destination": {"host": destination, "port": {"number": SERVICE_PORT}}}],
    }
    if policy.timeout:  # 0s: Istio's default (no timeout), which its validation wants unset
        route["timeout"] = format_duration(policy.timeout)
    if policy.retries is not None:
        route["retries"] = _retries(policy.retries)
    return route


def _retries(retries: Retries) -> JsonObject:
    out: JsonObject = {"attempts": retries.attempts}
    if retries.per_try_timeout:
        out["perTryTimeout"] = format_duration(retries.per_try_timeout)
    if retries.retry_on is not None:
        out["retryOn"] = retries.retry_on
    if retries.retry_ignore_previous_hosts is not None:
        out["retryIgnorePreviousHosts"] = retries.retry_ignore_previous_hosts
    return out


def _traffic_policy(policy: DestinationPolicy) -> JsonObject:
    out: JsonObject = {}
    if policy.connection_pool is not None:
        pool = _connection_pool(policy.connection_pool)
        if pool:  # Istio refuses an empty connection pool; an empty one changes nothing
            out["connectionPool"] = pool
    if policy.outlier_detection is not None:
        out["outlierDetection"] = _outlier_detection(policy.outlier_detection)
    if policy.load_balancer is not None:
        out["loadBalancer"] = _load_balancer(policy.load_balancer)
    return out


def _connection_pool(pool: ConnectionPool) -> JsonObject:
    tcp: JsonObject = {}
    if pool.tcp.max_connections is not None:
        tcp["maxConnections"] = pool.tcp.max_connections
    if pool.tcp.connect_timeout:  # 0s: the mesh default, as under --mesh envoy
        tcp["connectTimeout"] = format_duration(pool.tcp.connect_timeout)
    http: JsonObject = {}
    for key, value in (
        ("http1MaxPendingRequests", pool.http.http1_max_pending_requests),
        ("http2MaxRequests", pool.http.http2_max_requests),
        ("maxRequestsPerConnection", pool.http.max_requests_per_connection),
        ("maxRetries", pool.http.max_retries),
    ):
        if value is not None:
            http[key] = value
    out: JsonObject = {}
    if tcp:
        out["tcp"] = tcp
    if http:
        out["http"] = http
    return out


def _outlier_detection(outlier: OutlierDetection) -> JsonObject:
    out: JsonObject = {}
    for key, count in (
        ("consecutive5xxErrors", outlier.consecutive_5xx_errors),
        ("consecutiveGatewayErrors", outlier.consecutive_gateway_errors),
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ):
        if count is not None:
            out[key] = count
    for key, duration in (
        ("interval", outlier.interval),
        ("baseEjectionTime", outlier.base_ejection_time),
    ):
        if duration is not None:
            out[key] = format_duration(duration)
    return out


def _load_balancer(balancer: LoadBalancer) -> JsonObject:
    return {"simple": balancer.simple.value}
