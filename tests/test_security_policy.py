"""The scenario's mesh security (``harness.scenario.security``): located validation, the
Istio objects the renderer writes (checked against Istio's CRD schemas), the RBAC filters
the ``--mesh envoy`` translation builds from them (istiod's shape, read in the pinned
``pilot/pkg/security/authz``), and the refusal of what ``--mesh envoy`` does not translate.
The real-Envoy behaviour is in ``tests/test_authz_envoy.py``."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubeschema import CrdSchemas
from test_envoy_translation import envoy_binary, envoy_validate  # noqa: F401 (fixture)
from test_manifests import crds  # noqa: F401 (fixture)

from harness.errors import ScenarioError
from harness.kube import render
from harness.mesh.envoy import Addr, SidecarSpec, Upstream, WorkloadTls, sidecar_bootstrap
from harness.mesh.fidelity import compare, known_transport_difference
from harness.mesh.identity import write_mesh_identities
from harness.mesh.rbac import (
    plaintext_service,
    policy_name,
    rbac_filters,
    rbac_view,
    string_matcher,
)
from harness.platforms.local.deploy import check_mesh_support
from harness.platforms.local.platform import Mesh
from harness.runner import RunOptions, run_scenario
from harness.scenario import load_scenario
from harness.scenario.models import Scenario
from harness.scenario.security import AuthorizationPolicy

BASE: dict[str, Any] = {
    "apiVersion": "harness/v1",
    "metadata": {"name": "security-test"},
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}
EVERY_FIELD: dict[str, Any] = {
    "peerAuthentication": {"mode": "STRICT", "services": {"inventory": "DISABLE"}},
    "authorizationPolicies": [
        {
            "name": "catalog-callers",
            "service": "catalog",
            "rules": [
                {
                    "from": [
                        {"services": ["frontend", "ingress"], "notNamespaces": ["other-*"]},
                        {"principals": ["*"], "notServices": ["pricing"], "namespaces": ["self"]},
                    ],
                    "to": [
                        {"methods": ["GET", "HEAD"], "paths": ["/product/*", "*.json"]},
                        {"notMethods": ["DELETE"], "notPaths": ["/admin*"]},
                    ],
                }
            ],
        },
        {"name": "no-admin", "action": "DENY", "rules": [{"to": [{"paths": ["/admin*"]}]}]},
        {"name": "audit", "service": "inventory", "action": "AUDIT", "rules": [{}]},
        {"name": "nothing", "service": "pricing"},
    ],
}


def scenario(mesh: dict[str, Any]) -> Scenario:
    return Scenario.model_validate({**BASE, "mesh": mesh})


def policies(*specs: dict[str, Any]) -> list[AuthorizationPolicy]:
    return [AuthorizationPolicy.model_validate(spec) for spec in specs]


# --------------------------------------------------------------------------- validation


def test_bad_references_are_refused_each_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: harness/v1
            metadata: {name: bad}
            mesh:
              peerAuthentication:
                services: {inventroy: DISABLE}
              authorizationPolicies:
                - name: p
                  service: catalogg
                  rules:
                    - from: [{services: [frontnd], principals: ["a*b"]}]
                      to: [{methods: [GTE], paths: [admin]}]
                - name: p
                  action: AUDIT
            load: {rate: 1}
            phases: [{name: a, duration: 1s}]
            slos: [{kind: errorRate, name: e, max: 1%}]
            """
        )
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    problems = caught.value.problems
    expected = [
        ("5:16", "unknown service 'inventroy'", "did you mean 'inventory'?"),
        ("8:16", "unknown service 'catalogg'", "did you mean 'catalog'?"),
        ("10:30", "unknown service 'frontnd'", "did you mean 'frontend'?"),
        ("10:53", "'a*b'", "'*' may only stand alone, at the start or at the end"),
        ("11:27", "unknown HTTP method 'GTE'", "did you mean 'GET'?"),
        ("11:41", "'admin'", "a path starts with '/'"),
        ("12:13", "duplicate policy name 'p'", ""),
    ]
    assert len(problems) == len(expected), problems
    for problem, (where, what, hint) in zip(problems, expected, strict=True):
        assert problem.startswith(f"{path}:{where}:"), problem
        assert what in problem and hint in problem, problem


@pytest.mark.parametrize(
    ("mesh", "message"),
    [
        ({"authorizationPolicies": [{"name": "p", "action": "CUSTOM"}]}, "'ALLOW', 'DENY'"),
        ({"authorizationPolicies": [{"name": "p", "rules": [{"from": [{}]}]}]}, "empty source"),
        ({"authorizationPolicies": [{"name": "p", "rules": [{"to": [{}]}]}]}, "empty operation"),
        ({"peerAuthentication": {"mode": "MUTUAL"}}, "'STRICT', 'PERMISSIVE'"),
        ({"authorizationPolicies": [{"name": "Bad_Name"}]}, "not a valid name"),
    ],
)
def test_malformed_security_is_refused(mesh: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scenario(mesh)


# --------------------------------------------------------------------------- Istio objects


def test_objects_carry_the_run_namespace_and_validate(crds: CrdSchemas) -> None:  # noqa: F811
    objects = render(scenario(EVERY_FIELD))
    security = [m for m in objects if m.api_version == "security.istio.io/v1"]
    assert [(m.kind, m.name) for m in security] == [
        ("PeerAuthentication", "default"),
        ("PeerAuthentication", "inventory"),
        ("AuthorizationPolicy", "catalog-callers"),
        ("AuthorizationPolicy", "no-admin"),
        ("AuthorizationPolicy", "audit"),
        ("AuthorizationPolicy", "nothing"),
    ]
    for manifest in security:
        assert crds.errors(manifest.to_dict()) == [], manifest.ref
    namespace = security[0].namespace
    specs = {m.name: m.to_dict()["spec"] for m in security}
    assert specs["default"] == {"mtls": {"mode": "STRICT"}}
    assert specs["inventory"] == {
        "selector": {"matchLabels": {"app": "inventory"}},
        "mtls": {"mode": "DISABLE"},
    }
    first, second = specs["catalog-callers"]["rules"][0]["from"]
    assert first["source"] == {
        "principals": [
            f"cluster.local/ns/{namespace}/sa/frontend",
            f"cluster.local/ns/{namespace}/sa/istio-ingressgateway",
        ],
        "notNamespaces": ["other-*"],
    }
    assert second["source"]["namespaces"] == [namespace]
    assert second["source"]["notPrincipals"] == [f"cluster.local/ns/{namespace}/sa/pricing"]
    # No rules: the key stays out (an ALLOW policy that allows nothing, as Istio reads it).
    assert specs["nothing"] == {
        "selector": {"matchLabels": {"app": "pricing"}},
        "action": "ALLOW",
    }
    assert "selector" not in specs["no-admin"]


def test_the_crd_check_catches_a_bad_security_object(crds: CrdSchemas) -> None:  # noqa: F811
    (policy,) = [m for m in render(scenario(EVERY_FIELD)) if m.name == "no-admin"]
    data = policy.to_dict()
    data["spec"]["rules"][0]["to"][0]["operation"]["pathz"] = ["/x"]  # type: ignore[index]
    assert crds.errors(data) != []


# --------------------------------------------------------------------------- RBAC filters


def test_filters_come_in_istiods_order_with_its_policy_names() -> None:
    found = rbac_filters(scenario(EVERY_FIELD).mesh.authorization_policies, "catalog", "ns")
    assert [f["typed_config"]["rules"]["action"] for f in found] == ["DENY", "ALLOW"]
    assert list(found[1]["typed_config"]["rules"]["policies"]) == [
        policy_name("ns", "catalog-callers", 0)
    ]
    on_inventory = rbac_filters(scenario(EVERY_FIELD).mesh.authorization_policies, "inventory", "n")
    assert [f["typed_config"]["rules"]["action"] for f in on_inventory] == ["LOG", "DENY"]
    assert rbac_filters([], "catalog", "ns") == []


def test_a_rule_becomes_principals_and_permissions() -> None:
    found = rbac_filters(scenario(EVERY_FIELD).mesh.authorization_policies, "catalog", "ns")
    policy = found[1]["typed_config"]["rules"]["policies"]["ns[ns]-policy[catalog-callers]-rule[0]"]

    def named(account: str) -> dict[str, Any]:
        exact = f"spiffe://cluster.local/ns/ns/sa/{account}"
        return {"authenticated": {"principal_name": {"exact": exact}}}

    other = {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/other-.*/.*"}}}}
    assert policy["principals"][0] == {
        "and_ids": {
            "ids": [
                {"or_ids": {"ids": [named("frontend"), named("istio-ingressgateway")]}},
                {"not_id": {"or_ids": {"ids": [other]}}},
            ]
        }
    }
    any_identity = {"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}}
    own = {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ns/.*"}}}}
    assert policy["principals"][1]["and_ids"]["ids"] == [
        {"or_ids": {"ids": [any_identity]}},
        {"not_id": {"or_ids": {"ids": [named("pricing")]}}},
        {"or_ids": {"ids": [own]}},
    ]
    get, head = (
        {"header": {"name": ":method", "string_match": {"exact": m}}} for m in ("GET", "HEAD")
    )
    assert policy["permissions"][0]["and_rules"]["rules"] == [
        {"or_rules": {"rules": [get, head]}},
        {
            "or_rules": {
                "rules": [
                    {"url_path": {"path": {"prefix": "/product/"}}},
                    {"url_path": {"path": {"suffix": ".json"}}},
                ]
            }
        },
    ]
    assert policy["permissions"][1]["and_rules"]["rules"][1] == {
        "not_rule": {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/admin"}}}]}}
    }


def test_rules_without_from_or_to_match_anything_and_no_rules_match_never() -> None:
    found = rbac_filters(
        policies({"name": "open", "rules": [{}]}, {"name": "shut", "service": "x"}), "x", "ns"
    )
    (allow,) = found
    rules = allow["typed_config"]["rules"]["policies"]
    assert rules["ns[ns]-policy[open]-rule[0]"] == {
        "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
        "principals": [{"and_ids": {"ids": [{"any": True}]}}],
    }
    assert rules["ns[ns]-policy[shut]-rule[0]"] == {
        "permissions": [{"not_rule": {"any": True}}],
        "principals": [{"not_id": {"any": True}}],
    }


@pytest.mark.parametrize(
    ("value", "prefix", "matcher"),
    [
        ("*", "", {"safe_regex": {"regex": ".+"}}),
        ("*.js", "", {"suffix": ".js"}),
        ("/api/*", "", {"prefix": "/api/"}),
        ("/x", "", {"exact": "/x"}),
        # Escaped as Go's regexp.QuoteMeta does: "." is, "-" is not.
        ("*/sa/a.b-c", "spiffe://", {"safe_regex": {"regex": "spiffe://.*/sa/a\\.b-c"}}),
        ("td/ns/*", "spiffe://", {"prefix": "spiffe://td/ns/"}),
    ],
)
def test_wildcards_become_istiods_matchers(
    value: str, prefix: str, matcher: dict[str, Any]
) -> None:
    assert string_matcher(value, prefix) == matcher


def _sidecar(mesh: dict[str, Any], service: str, tls: WorkloadTls | None = None) -> dict[str, Any]:
    s = scenario(mesh)
    tls = tls or WorkloadTls("ns", "/c.crt", "/c.key", "/ca.pem")
    upstream = Upstream(
        "inventory",
        (Addr("127.0.0.3", 15006),),
        plaintext=plaintext_service(s.mesh.peer_authentication, "inventory"),
    )
    spec = SidecarSpec(
        instance=f"{service}-0",
        service=service,
        inbound=Addr("127.0.0.2", 15006),
        app=Addr("127.0.0.2", 8080),
        outbound=Addr("127.0.0.2", 15001),
        admin_socket="/tmp/none.sock",
        access_log="/dev/null",
        upstreams=(upstream,),
        tls=tls,
        rbac_filters=tuple(rbac_filters(s.mesh.authorization_policies, service, "ns")),
        plaintext_inbound=plaintext_service(s.mesh.peer_authentication, service),
    )
    return sidecar_bootstrap(spec)


def test_rbac_comes_first_and_disable_means_plaintext_on_both_ends() -> None:
    catalog = _sidecar(EVERY_FIELD, "catalog")
    inbound, _ = catalog["static_resources"]["listeners"]
    chain = inbound["filter_chains"][0]
    names = [f["name"] for f in chain["filters"][0]["typed_config"]["http_filters"]]
    assert names[:3] == ["envoy.filters.http.rbac", "envoy.filters.http.rbac", names[2]]
    assert names[2].startswith("envoy.filters.http.fault")
    assert "transport_socket" in chain  # STRICT
    clusters = {c["name"]: c for c in catalog["static_resources"]["clusters"]}
    assert "transport_socket" not in clusters["outbound|8080||inventory"]  # auto-mTLS: DISABLE
    inventory = _sidecar(EVERY_FIELD, "inventory")
    assert (
        "transport_socket" not in inventory["static_resources"]["listeners"][0]["filter_chains"][0]
    )


@pytest.mark.integration
def test_real_envoy_accepts_every_matcher(
    envoy_binary: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    identities = write_mesh_identities(
        tmp_path / "mtls", "ns", [(f"{s}-0", s) for s in ("catalog", "inventory", "pricing")]
    )
    for service in ("catalog", "inventory", "pricing"):
        bootstrap = _sidecar(EVERY_FIELD, service, identities[f"{service}-0"])
        code, output = envoy_validate(envoy_binary, bootstrap, tmp_path / f"{service}.json")
        assert code == 0 and "OK" in output, output


# --------------------------------------------------------------------------- --mesh envoy limits


def test_permissive_is_refused_under_envoy_before_anything_exists(tmp_path: Path) -> None:
    permissive = scenario({"peerAuthentication": {"services": {"catalog": "PERMISSIVE"}}})
    check_mesh_support(permissive, Mesh.ISTIO)  # istiod does it
    with pytest.raises(ScenarioError) as caught:
        check_mesh_support(permissive, Mesh.ENVOY)
    (problem,) = caught.value.problems
    assert "PERMISSIVE (for catalog)" in problem and "--mesh istio" in problem
    with pytest.raises(ScenarioError):
        run_scenario(permissive, options=RunOptions(reports_dir=tmp_path / "reports"))
    assert not (tmp_path / "reports").exists()
    # STRICT and DISABLE are translated.
    check_mesh_support(scenario(EVERY_FIELD), Mesh.ENVOY)


# --------------------------------------------------------------------------- the differential view


def test_rbac_view_ignores_order_of_sets_and_envoys_left_out_defaults() -> None:
    found = rbac_filters(scenario(EVERY_FIELD).mesh.authorization_policies, "catalog", "ns")
    dumped = copy.deepcopy(found)
    # As a config dump prints it: the ALLOW action (proto3's first enum value) left out,
    # an or-set in another order, a false flag spelled out.
    allow = dumped[1]["typed_config"]["rules"]
    del allow["action"]
    policy = allow["policies"]["ns[ns]-policy[catalog-callers]-rule[0]"]
    policy["principals"][0]["and_ids"]["ids"].reverse()
    policy["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"][0]["header"][
        "string_match"
    ]["ignore_case"] = False
    assert rbac_view(dumped) == rbac_view(found) is not None
    # What decides a request is not normalized away.
    policy["permissions"][0]["and_rules"]["rules"][0]["or_rules"]["rules"].pop()
    assert rbac_view(dumped) != rbac_view(found)
    assert rbac_view([{"name": "envoy.filters.http.fault"}]) is None


def test_the_known_permissive_default_is_not_a_difference_but_a_set_mode_is() -> None:
    edge = "inbound:8080"
    istio = {edge: {"inbound.transport": ("plaintext", "tls")}}
    envoy = {edge: {"inbound.transport": "tls"}}
    (found,) = compare("catalog", [edge], istio, envoy)
    assert known_transport_difference(scenario({}), found) is True
    strict = scenario({"peerAuthentication": {"services": {"catalog": "STRICT"}}})
    assert known_transport_difference(strict, found) is False
