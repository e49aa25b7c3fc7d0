"""The scenario's mesh security: PeerAuthentication modes and AuthorizationPolicies.

Istio's vocabulary, scoped to one run. Every workload of a run lives in the run's own
namespace (``harness-<run id>``), which a scenario file cannot know in advance, so a rule
names *services* (each service's ServiceAccount is its name, so its principal is
``cluster.local/ns/<run namespace>/sa/<service>``; ``ingress`` is the ingress gateway's
account) and spells the run's namespace ``self``::

    mesh:
      peerAuthentication:
        mode: STRICT                 # namespace-wide (omitted: Istio's PERMISSIVE)
        services: {inventory: DISABLE}
      authorizationPolicies:
        - name: catalog-callers
          service: catalog           # omitted: every workload of the run
          action: ALLOW              # ALLOW (default), DENY or AUDIT
          rules:
            - from: [{services: [frontend]}]
              to: [{methods: [GET], paths: ["/product/*"]}]

Istio's semantics, read in the pinned istio module (``pilot/pkg/security/authz``): DENY
policies are checked before ALLOW ones; once any ALLOW policy selects a workload, a request
must match one of its rules; an ALLOW policy without rules allows nothing, a DENY policy
without rules denies nothing; AUDIT never changes a decision. ``*`` in a value matches
anything as a prefix (``*.js``) or suffix (``/api/*``) wildcard, or alone.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import Field, field_validator, model_validator

from harness.scenario.base import MAX_ITEMS, MAX_TEXT, Model, check_name
from harness.scenario.units import Duration

__all__ = [
    "GATEWAY_SERVICE",
    "SELF_NAMESPACE",
    "AuthorizationPolicy",
    "AuthzAction",
    "MtlsMode",
    "Operation",
    "PeerAuthentication",
    "Probe",
    "Rule",
    "Source",
    "istio_principal",
    "probe_problems",
    "security_problems",
]

GATEWAY_SERVICE: Final = "ingress"
"""The name rules use for the ingress gateway (its ServiceAccount: ``istio-ingressgateway``)."""
GATEWAY_ACCOUNT: Final = "istio-ingressgateway"
TRUST_DOMAIN: Final = "cluster.local"
SELF_NAMESPACE: Final = "self"
"""The run's own namespace in ``namespaces`` / ``notNamespaces``."""

# Methods Istio's docs list for ``operation.methods`` (any HTTP method; these are the ones a
# typo is checked against).
HTTP_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE")
HTTP_METHODS_MORE: Final = ("PATCH",)
_PRINCIPAL = re.compile(r"[^/\s]+/ns/[^/\s]+/sa/[^/\s]+")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAMESPACE_PART = re.compile(r"[-a-z0-9]{1,63}")

Values = list[str]


class MtlsMode(StrEnum):
    """PeerAuthentication ``mtls.mode``: what the callee's sidecar accepts."""

    STRICT = "STRICT"  # mutual TLS only
    PERMISSIVE = "PERMISSIVE"  # mutual TLS or plaintext (Istio's default)
    DISABLE = "DISABLE"  # plaintext only; auto-mTLS callers send plaintext too


class PeerAuthentication(Model):
    """Istio ``PeerAuthentication`` objects: one namespace-wide, one per listed service."""

    mode: MtlsMode | None = Field(
        default=None,
        strict=False,
        description="Namespace-wide mode; omitted: Istio's default, PERMISSIVE.",
    )
    services: dict[str, Annotated[MtlsMode, Field(strict=False)]] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="A workload's own mode (wins over the namespace-wide one).",
    )

    def mode_of(self, service: str) -> MtlsMode | None:
        """The mode the sidecar of ``service`` enforces (None: nothing set, Istio's default)."""
        return self.services.get(service, self.mode)


class AuthzAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"


def _values(description: str) -> Any:
    return Field(default_factory=list, max_length=MAX_ITEMS, description=description)


class Source(Model):
    """Istio ``Source``: who sends the request. Fields are ANDed, values within one ORed."""

    services: Values = _values("Services of the run (their principal); 'ingress': the gateway.")
    not_services: Values = _values("Services whose principal does not match.")
    principals: Values = _values("Istio principals, e.g. '*' (any mesh identity).")
    not_principals: Values = _values("Principals that do not match.")
    namespaces: Values = _values("Source namespaces; 'self': the run's namespace.")
    not_namespaces: Values = _values("Namespaces that do not match.")

    @model_validator(mode="after")
    def _not_empty(self) -> Source:
        if not any(values for _, values in self):
            raise ValueError(
                "an empty source matches nothing in Istio (it refuses it); name services, "
                "principals or namespaces, or leave 'from' out to match any source"
            )
        return self


class Operation(Model):
    """Istio ``Operation``: what the request asks for."""

    methods: Values = _values("HTTP methods, e.g. GET.")
    not_methods: Values = _values("Methods that do not match.")
    paths: Values = _values("Request paths (after Envoy's normalization), '*' wildcards.")
    not_paths: Values = _values("Paths that do not match.")

    @model_validator(mode="after")
    def _not_empty(self) -> Operation:
        if not any(values for _, values in self):
            raise ValueError(
                "an empty operation: Istio refuses it; name methods or paths, or leave 'to' "
                "out to match any request"
            )
        return self


class Rule(Model):
    """A rule matches when one of its sources and one of its operations match."""

    from_: list[Source] = Field(
        default_factory=list, alias="from", max_length=MAX_ITEMS, description="Omitted: any."
    )
    to: list[Operation] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Omitted: any request."
    )


class AuthorizationPolicy(Model):
    """Istio ``AuthorizationPolicy``, enforced by the callee's sidecar (RBAC filter)."""

    name: str = Field(description="Object name: lowercase letters, digits and '-'.")
    service: str | None = Field(
        default=None, description="The workload it selects; omitted: every workload of the run."
    )
    action: AuthzAction = Field(default=AuthzAction.ALLOW, strict=False)
    rules: list[Rule] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Omitted: an ALLOW policy allows nothing, a DENY policy denies nothing.",
    )

    _name = field_validator("name")(check_name)

    def selects(self, service: str) -> bool:
        return self.service is None or self.service == service


def istio_principal(service: str, namespace: str) -> str:
    """The Istio principal (no ``spiffe://``) of a service of the run in ``namespace``."""
    account = GATEWAY_ACCOUNT if service == GATEWAY_SERVICE else service
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


PLAINTEXT: Final = "plaintext"
"""``probes[].as`` for a client without a mesh certificate (plain HTTP)."""
MIN_PROBE_PERIOD: Final = 0.2


class Probe(Model):
    """Requests the harness sends on its own, beside the load, in every phase: straight to
    ``to``'s sidecar (its inbound port) as the identity of a service of the run (mutual
    TLS with that service's mesh certificate; ``ingress``: the gateway's), or as
    ``plaintext`` (no certificate). Each tick sends the next of ``paths`` in turn, so path
    variants (``//admin``, ``/%2Fadmin``, ``/./admin``) are all tried in each phase. The
    ``denied`` and ``plaintextRejected`` SLOs judge what came back."""

    name: str = Field(description="Probe name, for the SLOs: lowercase letters, digits, '-'.")
    to: str = Field(description="The service whose sidecar the requests go to.")
    as_: str = Field(alias="as", description="A service (its identity), 'ingress', or 'plaintext'.")
    paths: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] = Field(
        default_factory=lambda: ["/"],
        min_length=1,
        max_length=MAX_ITEMS,
        description="Request paths, sent in turn, as written (no client-side normalization).",
    )
    method: str = Field(default="GET", description="The HTTP method.")
    every: Duration = Field(
        default=1.0,
        ge=MIN_PROBE_PERIOD,
        le=3600,
        description="Time between two requests of this probe.",
    )

    _name = field_validator("name")(check_name)

    @property
    def plaintext(self) -> bool:
        return self.as_ == PLAINTEXT


def probe_problems(probes: list[Probe], services: Iterable[str]) -> list[Problem]:
    """Probes that name no service of the run, duplicate names, unknown methods."""
    known = frozenset(services)
    problems: list[Problem] = []
    names: set[str] = set()
    for index, probe in enumerate(probes):
        where: tuple[str | int, ...] = ("probes", index)
        if probe.name in names:
            problems.append(((*where, "name"), f"duplicate probe name {probe.name!r}"))
        names.add(probe.name)
        if probe.to not in known:
            problems.append(
                ((*where, "to"), f"unknown service {probe.to!r} {_nearest(probe.to, known)}")
            )
        identities = known | {GATEWAY_SERVICE, PLAINTEXT}
        if probe.as_ not in identities:
            problems.append(
                (
                    (*where, "as"),
                    f"unknown identity {probe.as_!r} {_nearest(probe.as_, identities)}",
                )
            )
        methods = (*HTTP_METHODS, *HTTP_METHODS_MORE)
        if probe.method not in methods:
            problems.append(
                (
                    (*where, "method"),
                    f"unknown HTTP method {probe.method!r} {_nearest(probe.method, methods)}",
                )
            )
        for p_index, path in enumerate(probe.paths):
            if not path.startswith("/") or any(c.isspace() for c in path):
                problems.append(
                    ((*where, "paths", p_index), f"{path!r}: a path starts with '/', no spaces")
                )
    return problems


# --------------------------------------------------------------------------- checks

Problem = tuple[tuple[str | int, ...], str]


def _nearest(value: str, choices: Iterable[str]) -> str:
    names = sorted(choices)
    near = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"(valid: {', '.join(names)}){hint}"


def _wildcard_problem(value: str) -> str | None:
    """Istio's rule for string values: ``*`` only alone, as a prefix or as a suffix."""
    if not value or len(value) > MAX_TEXT:
        return "an empty (or over-long) value"
    inner = value.strip("*") if value != "*" else ""
    if "*" in inner or value.startswith("**") or value.endswith("**"):
        return f"{value!r}: '*' may only stand alone, at the start or at the end"
    return None


def _source_problems(
    where: tuple[str | int, ...], source: Source, callers: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    for field in ("services", "not_services"):
        for index, service in enumerate(getattr(source, field)):
            if service not in callers:
                problems.append(
                    (
                        (*where, _camel(field), index),
                        f"unknown service {service!r} {_nearest(service, callers)}",
                    )
                )
    for field in ("principals", "not_principals"):
        for index, principal in enumerate(getattr(source, field)):
            problem = _wildcard_problem(principal)
            if problem is None and "*" not in principal and not _PRINCIPAL.fullmatch(principal):
                problem = (
                    f"{principal!r} is not an Istio principal "
                    "(<trust domain>/ns/<namespace>/sa/<account>, or '*' wildcards); a "
                    "service of the run is named under 'services'"
                )
            if problem:
                problems.append(((*where, _camel(field), index), problem))
    for field in ("namespaces", "not_namespaces"):
        for index, namespace in enumerate(getattr(source, field)):
            problem = _wildcard_problem(namespace)
            # A wildcard value is part of a label ("other-*"); an exact one a whole label.
            literal = namespace.strip("*")
            pattern = _NAMESPACE if literal == namespace else _NAMESPACE_PART
            if problem is None and not pattern.fullmatch(literal or "a"):
                problem = f"{namespace!r} is not a namespace name (a DNS label, '*' wildcards)"
            if problem:
                problems.append(((*where, _camel(field), index), problem))
    return problems


def _operation_problems(where: tuple[str | int, ...], operation: Operation) -> list[Problem]:
    problems: list[Problem] = []
    methods = (*HTTP_METHODS, *HTTP_METHODS_MORE)
    for field in ("methods", "not_methods"):
        for index, method in enumerate(getattr(operation, field)):
            problem = _wildcard_problem(method)
            if problem is None and method != "*" and method not in methods:
                problem = f"unknown HTTP method {method!r} {_nearest(method.upper(), methods)}"
            if problem:
                problems.append(((*where, _camel(field), index), problem))
    for field in ("paths", "not_paths"):
        for index, path in enumerate(getattr(operation, field)):
            problem = _wildcard_problem(path)
            if problem is None and not (path.startswith("/") or path.startswith("*")):
                problem = f"{path!r}: a path starts with '/' (or a '*' wildcard)"
            if problem is None and "{" in path:
                problem = f"{path!r}: path templates ({{*}}) are not supported by the harness"
            if problem:
                problems.append(((*where, _camel(field), index), problem))
    return problems


def security_problems(
    peer: PeerAuthentication | None,
    policies: list[AuthorizationPolicy],
    services: Iterable[str],
) -> list[Problem]:
    """Cross-references of the security section: services that do not exist, duplicate
    policy names, values Istio refuses; as (field path, message) pairs."""
    known = frozenset(services)
    callers = known | {GATEWAY_SERVICE}
    problems: list[Problem] = []
    if peer is not None:
        for service in peer.services:
            if service not in known:
                problems.append(
                    (
                        ("mesh", "peerAuthentication", "services", service),
                        f"unknown service {service!r} {_nearest(service, known)}",
                    )
                )
    names: set[str] = set()
    for p_index, policy in enumerate(policies):
        where: tuple[str | int, ...] = ("mesh", "authorizationPolicies", p_index)
        if policy.name in names:
            problems.append(((*where, "name"), f"duplicate policy name {policy.name!r}"))
        names.add(policy.name)
        if policy.service is not None and policy.service not in known:
            problems.append(
                (
                    (*where, "service"),
                    f"unknown service {policy.service!r} {_nearest(policy.service, known)}",
                )
            )
        for r_index, rule in enumerate(policy.rules):
            for s_index, source in enumerate(rule.from_):
                here = (*where, "rules", r_index, "from", s_index)
                problems += _source_problems(here, source, callers)
            for o_index, operation in enumerate(rule.to):
                problems += _operation_problems(
                    (*where, "rules", r_index, "to", o_index), operation
                )
    return problems


def _camel(field: str) -> str:
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)
