"""The scenario's security section as Istio objects: PeerAuthentication and
AuthorizationPolicy (``security.istio.io/v1``), in the run's namespace.

Rule values that name a service become that service's principal in the run's namespace
(``cluster.local/ns/<namespace>/sa/<service>``; ``ingress`` → the gateway's account) and
``self`` becomes the namespace itself, so the objects are exactly what a user would write
for that namespace. :mod:`harness.mesh.rbac` translates the very same objects for
``--mesh envoy``.

>>> from harness.scenario.security import AuthorizationPolicy
>>> policy = AuthorizationPolicy.model_validate({"name": "p", "service": "catalog"})
>>> security_objects(None, [policy], "ns")[0].kind
'AuthorizationPolicy'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from harness.scenario.security import (
    SELF_NAMESPACE,
    AuthorizationPolicy,
    Operation,
    PeerAuthentication,
    Rule,
    Source,
    istio_principal,
)

__all__ = ["SECURITY", "SecurityObject", "istio_rule", "security_objects"]

SECURITY: Final = "security.istio.io/v1"
NAMESPACE_WIDE: Final = "default"  # Istio's convention for a namespace-wide PeerAuthentication

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
JsonObject: TypeAlias = dict[str, JsonValue]


@dataclass(frozen=True)
class SecurityObject:
    kind: str
    name: str
    spec: JsonObject
    service: str | None  # the workload it selects (an ``app`` label), None: namespace-wide


def _selector(service: str | None) -> JsonObject:
    return {} if service is None else {"selector": {"matchLabels": {"app": service}}}


def _source(source: Source, namespace: str) -> JsonObject:
    def principals(services: list[str], raw: list[str]) -> list[JsonValue]:
        return [*(istio_principal(s, namespace) for s in services), *raw]

    def namespaces(values: list[str]) -> list[JsonValue]:
        return [namespace if value == SELF_NAMESPACE else value for value in values]

    fields: dict[str, list[JsonValue]] = {
        "principals": principals(source.services, source.principals),
        "notPrincipals": principals(source.not_services, source.not_principals),
        "namespaces": namespaces(source.namespaces),
        "notNamespaces": namespaces(source.not_namespaces),
    }
    return {key: value for key, value in fields.items() if value}


def _operation(operation: Operation) -> JsonObject:
    fields: dict[str, list[JsonValue]] = {
        "methods": list(operation.methods),
        "notMethods": list(operation.not_methods),
        "paths": list(operation.paths),
        "notPaths": list(operation.not_paths),
    }
    return {key: value for key, value in fields.items() if value}


def istio_rule(rule: Rule, namespace: str) -> JsonObject:
    """One AuthorizationPolicy rule in Istio's spelling, for ``namespace``."""
    out: JsonObject = {}
    if rule.from_:
        out["from"] = [{"source": _source(source, namespace)} for source in rule.from_]
    if rule.to:
        out["to"] = [{"operation": _operation(operation)} for operation in rule.to]
    return out


def security_objects(
    peer: PeerAuthentication | None,
    policies: Sequence[AuthorizationPolicy],
    namespace: str,
) -> list[SecurityObject]:
    """PeerAuthentications (namespace-wide ``default``, then one per service), then the
    AuthorizationPolicies in the scenario's order."""
    objects: list[SecurityObject] = []
    if peer is not None:
        if peer.mode is not None:
            spec: JsonObject = {"mtls": {"mode": peer.mode.value}}
            objects.append(SecurityObject("PeerAuthentication", NAMESPACE_WIDE, spec, None))
        for service, mode in sorted(peer.services.items()):
            spec = {**_selector(service), "mtls": {"mode": mode.value}}
            # A service called "default" must not replace the namespace-wide object.
            name = service if service != NAMESPACE_WIDE else "default-workload"
            objects.append(SecurityObject("PeerAuthentication", name, spec, service))
    for policy in policies:
        spec = {**_selector(policy.service), "action": policy.action.value}
        if policy.rules:
            spec["rules"] = [istio_rule(rule, namespace) for rule in policy.rules]
        objects.append(SecurityObject("AuthorizationPolicy", policy.name, spec, policy.service))
    return objects
