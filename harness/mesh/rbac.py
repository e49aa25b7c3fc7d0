"""AuthorizationPolicy and PeerAuthentication → the callee sidecar's inbound config, as
istiod builds it (``--mesh envoy``).

Read in the pinned istio module (never copied): ``pilot/pkg/security/authz/builder``
(one RBAC HTTP filter per action, in the order AUDIT (Envoy ``LOG``), DENY, ALLOW; policy
names ``ns[<namespace>]-policy[<name>]-rule[<index>]``; an ALLOW/DENY policy without rules
becomes one "match never" policy), ``authz/model`` (a rule's sources become the RBAC
policy's principals, one ``and_ids`` per source: principals first, then namespaces, each an
``or_ids`` of the values and a ``not_id`` of the excluded ones; its operations become the
permissions, one ``and_rules`` per operation: methods, then paths; ``any`` when a rule has
no ``from`` / ``to``), ``authz/matcher`` (``*`` alone → the regex ``.+``, ``*x`` → suffix,
``x*`` → prefix; principals are matched on ``authenticated.principal_name`` with
``spiffe://`` in front; a namespace is the regex ``.*/ns/<namespace>/.*``).

The peer mode: STRICT is what the translation always did (the inbound listener requires a
client certificate); DISABLE makes the inbound listener plaintext and, as istiod's
auto-mTLS does, every caller's cluster for that service plaintext too. PERMISSIVE (TLS and
plaintext on one port, chosen by a TLS inspector) is not translated: a scenario that asks
for it is refused under ``--mesh envoy`` (:func:`envoy_security_problems`).

>>> from harness.scenario.security import AuthorizationPolicy
>>> deny_all = AuthorizationPolicy.model_validate({"name": "none", "service": "catalog"})
>>> [f["typed_config"]["rules"]["action"] for f in rbac_filters([deny_all], "catalog", "ns")]
['ALLOW']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from harness.scenario.security import (
    SELF_NAMESPACE,
    AuthorizationPolicy,
    AuthzAction,
    MtlsMode,
    Operation,
    PeerAuthentication,
    Rule,
    Source,
    istio_principal,
)

__all__ = [
    "RBAC_FILTER",
    "envoy_security_problems",
    "plaintext_service",
    "policy_name",
    "rbac_filters",
    "rbac_view",
]

RBAC_FILTER: Final = "envoy.filters.http.rbac"
RBAC_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
SPIFFE_PREFIX: Final = "spiffe://"
# istiod's filter order and the Envoy action of each Istio action.
_ENVOY_ACTIONS: Final = (
    (AuthzAction.AUDIT, "LOG"),
    (AuthzAction.DENY, "DENY"),
    (AuthzAction.ALLOW, "ALLOW"),
)
_ANY_PERMISSION: Final = {"any": True}
_MATCH_NEVER: Final = {
    "permissions": [{"not_rule": {"any": True}}],
    "principals": [{"not_id": {"any": True}}],
}

Json = dict[str, Any]


def policy_name(namespace: str, name: str, rule: int) -> str:
    """istiod's name of one rule's RBAC policy (what a denial's response details name)."""
    return f"ns[{namespace}]-policy[{name}]-rule[{rule}]"


_RE2_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")


def quote_meta(text: str) -> str:
    """``text`` as a literal RE2 pattern, escaped as istiod escapes it (Go's
    ``regexp.QuoteMeta``: only the special characters; Python's ``re.escape`` also escapes
    ``-``, equal in meaning but not in the config)."""
    return "".join("\\" + char if char in _RE2_SPECIAL else char for char in text)


def string_matcher(value: str, prefix: str = "") -> Json:
    """An Envoy StringMatcher for an Istio value with ``*`` wildcards."""
    if value == "*":
        return {"safe_regex": {"regex": ".+"}}
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": prefix + ".*" + quote_meta(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def _values_and_not(values: list[Json], not_values: list[Json], kind: str) -> list[Json]:
    """One OR of the values, one NOT(OR) of the excluded values (``kind``: ``ids`` or
    ``rules``, the principal or the permission spelling)."""
    out: list[Json] = []
    either, negate = ("or_ids", "not_id") if kind == "ids" else ("or_rules", "not_rule")
    if values:
        out.append({either: {kind: values}})
    if not_values:
        out.append({negate: {either: {kind: not_values}}})
    return out


def _principal(source: Source, namespace: str) -> Json:
    def principal(value: str) -> Json:
        return {"authenticated": {"principal_name": string_matcher(value, SPIFFE_PREFIX)}}

    def in_namespace(value: str) -> Json:
        name = namespace if value == SELF_NAMESPACE else value
        pattern = ".*".join(quote_meta(part) for part in name.split("*"))
        regex = {"safe_regex": {"regex": f".*/ns/{pattern}/.*"}}
        return {"authenticated": {"principal_name": regex}}

    principals = [istio_principal(s, namespace) for s in source.services] + source.principals
    excluded = [istio_principal(s, namespace) for s in source.not_services]
    excluded += source.not_principals
    ids = _values_and_not(
        [principal(p) for p in principals], [principal(p) for p in excluded], "ids"
    )
    ids += _values_and_not(
        [in_namespace(n) for n in source.namespaces],
        [in_namespace(n) for n in source.not_namespaces],
        "ids",
    )
    return {"and_ids": {"ids": ids or [{"any": True}]}}


def _permission(operation: Operation) -> Json:
    def method(value: str) -> Json:
        if value == "*":
            return {"header": {"name": ":method", "present_match": True}}
        return {"header": {"name": ":method", "string_match": string_matcher(value)}}

    def path(value: str) -> Json:
        return {"url_path": {"path": string_matcher(value)}}

    rules = _values_and_not(
        [method(m) for m in operation.methods], [method(m) for m in operation.not_methods], "rules"
    )
    rules += _values_and_not(
        [path(p) for p in operation.paths], [path(p) for p in operation.not_paths], "rules"
    )
    return {"and_rules": {"rules": rules or [_ANY_PERMISSION]}}


def _policy(rule: Rule, namespace: str) -> Json:
    permissions = [_permission(op) for op in rule.to] or [
        {"and_rules": {"rules": [_ANY_PERMISSION]}}
    ]
    principals = [_principal(src, namespace) for src in rule.from_] or [
        {"and_ids": {"ids": [{"any": True}]}}
    ]
    return {"permissions": permissions, "principals": principals}


def rbac_filters(
    policies: Sequence[AuthorizationPolicy], service: str, namespace: str
) -> list[Json]:
    """The RBAC HTTP filters istiod puts first on the inbound HTTP chain of ``service``'s
    sidecars (none when no policy selects it)."""
    filters: list[Json] = []
    for action, envoy_action in _ENVOY_ACTIONS:
        rules: dict[str, Json] = {}
        for policy in policies:
            if policy.action is not action or not policy.selects(service):
                continue
            for index, rule in enumerate(policy.rules):
                rules[policy_name(namespace, policy.name, index)] = _policy(rule, namespace)
            if not policy.rules:
                rules[policy_name(namespace, policy.name, 0)] = _MATCH_NEVER
        if rules:
            config = {"@type": RBAC_TYPE, "rules": {"action": envoy_action, "policies": rules}}
            filters.append({"name": RBAC_FILTER, "typed_config": config})
    return filters


def plaintext_service(peer: PeerAuthentication | None, service: str) -> bool:
    """Whether ``service``'s sidecars take plaintext only (PeerAuthentication DISABLE), so
    that auto-mTLS callers send plaintext to it."""
    return peer is not None and peer.mode_of(service) is MtlsMode.DISABLE


def envoy_security_problems(peer: PeerAuthentication | None, services: Sequence[str]) -> list[str]:
    """What ``--mesh envoy`` does not translate, as sentences (empty: all of it)."""
    if peer is None:
        return []
    permissive = sorted(s for s in services if peer.mode_of(s) is MtlsMode.PERMISSIVE)
    if not permissive:
        return []
    return [
        f"mesh.peerAuthentication: PERMISSIVE (for {', '.join(permissive)}) is not translated "
        "under --mesh envoy (mutual TLS and plaintext on one port need a TLS inspector and "
        "two filter chains); run the scenario with --mesh istio, or choose STRICT or DISABLE"
    ]


# --------------------------------------------------------------------------- differential view

_SETS: Final = frozenset({"ids", "rules"})  # and/or sets: order decides nothing


def _canonical(value: Any) -> Any:
    """A JSON value with Envoy's left-out defaults dropped and and/or sets sorted."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "google_re2" or item in (False, "", None, {}):
                continue
            item = _canonical(item)
            if key in _SETS and isinstance(item, list):
                item = sorted(item, key=lambda entry: json.dumps(entry, sort_keys=True))
            out[key] = item
        return out
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def rbac_view(http_filters: Sequence[Json]) -> str | None:
    """The enforced RBAC rules of one HTTP filter chain in a normalized form (one JSON
    text: per filter in order, its action and its policies by name), for the differential
    test; None without an RBAC filter. Shadow rules (dry-run) are not enforced, not read."""
    found = []
    for http_filter in http_filters:
        rules = http_filter.get("typed_config", {}).get("rules")
        if http_filter.get("name") != RBAC_FILTER or rules is None:
            continue
        policies = {name: _canonical(p) for name, p in rules.get("policies", {}).items()}
        # proto3 JSON leaves the first enum value (ALLOW) out of a dump.
        found.append({"action": rules.get("action", "ALLOW"), "policies": policies})
    return json.dumps(found, sort_keys=True) if found else None
