"""Differential fidelity: istiod's Envoy configuration against the translation's.

The ``controlplane`` test brings up ONE etcd + kube-apiserver + istiod for the module and
feeds it every shipped scenario (plus one that sets every policy field), each in its own
namespace with one pilot-agent + Envoy per proxy role; the translation's bootstraps are
loaded into real Envoys. Both sides are read from Envoy's ``/config_dump`` and compared on
the fields that decide resilience (:mod:`harness.mesh.fidelity`).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import ExitCode, ToolMissingError
from harness.mesh.fidelity import (
    Difference,
    cluster_view,
    compare,
    differences,
    downstream_tls_view,
    edge_of_cluster,
    resilience_view,
    retry_view,
    role_edges,
    route_view,
    upstream_tls_view,
)
from harness.mesh.rbac import plaintext_service
from harness.platforms.local.fidelity import istiod_dumps, translation_dumps
from harness.platforms.local.istio import IstioControlPlane, istio_control_plane
from harness.platforms.local.platform import find_envoy
from harness.platforms.local.processes import run_processes
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.loader import load_scenario
from harness.scenario.models import Scenario

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))

# Every policy field the scenario language has, on two edges, so the fields no shipped
# scenario sets (circuit breakers, requests per connection, load balancer, minHealthPercent,
# status codes in retryOn, the previous-hosts switch) are compared too.
EVERY_FIELD: dict[str, Any] = {
    "metadata": {"name": "every-field"},
    "app": {"replicas": {"catalog": 2}},
    "mesh": {
        "destinations": {
            "catalog": {
                "timeout": "2s",
                "retries": {
                    "attempts": 3,
                    "perTryTimeout": "500ms",
                    "retryOn": "5xx,gateway-error,503",
                    "retryIgnorePreviousHosts": False,
                },
                "connectionPool": {
                    "tcp": {"maxConnections": 10, "connectTimeout": "250ms"},
                    "http": {
                        "http1MaxPendingRequests": 5,
                        "http2MaxRequests": 20,
                        "maxRequestsPerConnection": 3,
                        "maxRetries": 2,
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 2,
                    "consecutiveGatewayErrors": 1,
                    "interval": "1s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 100,
                    "minHealthPercent": 50,
                },
                "loadBalancer": {"simple": "ROUND_ROBIN"},
            },
            "inventory": {"retries": {"attempts": 1, "retryOn": "503,504"}},
            "pricing": {
                "retries": {"attempts": 2},
                "outlierDetection": {"consecutive5xxErrors": 0, "consecutiveGatewayErrors": 4},
                "loadBalancer": {"simple": "RANDOM"},
            },
            "frontend": {"timeout": "3s", "retries": {"attempts": 1}},
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


# Mesh security: every PeerAuthentication mode the translation has (STRICT namespace-wide,
# DISABLE on one workload) and every AuthorizationPolicy action and matcher kind, so the
# inbound transport and RBAC filters are compared with istiod's.
SECURITY: dict[str, Any] = {
    **EVERY_FIELD,
    "metadata": {"name": "security"},
    "mesh": {
        "peerAuthentication": {"mode": "STRICT", "services": {"pricing": "DISABLE"}},
        "authorizationPolicies": [
            {
                "name": "catalog-callers",
                "service": "catalog",
                "rules": [
                    {
                        "from": [
                            {"services": ["frontend", "ingress"], "notNamespaces": ["other-*"]},
                            {"principals": ["*"], "notServices": ["pricing"]},
                            {"namespaces": ["self"], "notPrincipals": ["*/sa/inventory"]},
                        ],
                        "to": [
                            {"methods": ["GET", "HEAD"], "paths": ["/product/*", "*.json"]},
                            {"notMethods": ["DELETE"], "notPaths": ["/admin*"]},
                        ],
                    },
                    {"to": [{"methods": ["*"], "paths": ["/healthz"]}]},
                ],
            },
            {"name": "no-admin", "action": "DENY", "rules": [{"to": [{"paths": ["/admin*"]}]}]},
            {"name": "audit", "service": "inventory", "action": "AUDIT", "rules": [{}]},
            {"name": "nothing", "service": "pricing"},
        ],
    },
}


# Every traffic-distribution field (issue 12): subsets with a policy of the destination's
# own, header (exact, prefix), URI-prefix and source-label matches, weighted
# routes with a zero weight, a mirror to another service's subset with a percentage, and a
# route whose source labels select no caller (left out of that sidecar).
EVERY_ROUTE: dict[str, Any] = {
    "metadata": {"name": "every-route"},
    "app": {
        "entry": "frontend",
        "services": [
            {"name": "frontend", "serviceTime": "1ms", "calls": ["reviews", "ratings"]},
            {
                "name": "reviews",
                "serviceTime": "1ms",
                "versions": [{"name": "v1"}, {"name": "v2", "labels": {"track": "canary"}}],
            },
            {"name": "ratings", "serviceTime": "1ms", "versions": [{"name": "v1"}, {"name": "v2"}]},
        ],
    },
    "mesh": {
        "destinations": {
            "reviews": {
                "timeout": "2s",
                "retries": {"attempts": 1},
                "outlierDetection": {"consecutive5xxErrors": 3},
                "subsets": [
                    {"name": "stable", "labels": {"version": "v1"}},
                    {"name": "canary", "labels": {"track": "canary"}},
                ],
                "http": [
                    {
                        "name": "by-header",
                        "match": [
                            {"name": "exact", "headers": {"x-canary": {"exact": "1"}}},
                            {"headers": {"x-user": {"prefix": "test-"}}},
                            {"uri": {"prefix": "/beta"}},
                            {"sourceLabels": {"app": "nobody"}},
                        ],
                        "route": [{"subset": "canary"}],
                    },
                    {
                        "route": [
                            {"subset": "stable", "weight": 90},
                            {"subset": "canary", "weight": 10},
                            {"weight": 0},
                        ],
                        "mirror": {"host": "ratings", "subset": "v2"},
                        "mirrorPercentage": {"value": 12.5},
                    },
                ],
            },
            "ratings": {
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
                "http": [
                    # Kept for frontend (its labels match), and no catch-all: istiod adds
                    # no fallback route, so a call without the header gets a 404.
                    {
                        "match": [
                            {
                                "sourceLabels": {"app": "frontend"},
                                "headers": {"end-user": {"exact": "tester"}},
                            }
                        ],
                        "route": [{"subset": "v1"}],
                    }
                ],
            },
        }
    },
    "load": {"rate": 1},
    "phases": [{"name": "only", "duration": "1s"}],
    "slos": [{"kind": "errorRate", "name": "errors", "max": "1%"}],
}


def cases() -> list[Scenario]:
    return [
        *(load_scenario(path) for path in SCENARIOS),
        Scenario.model_validate(EVERY_FIELD),
        Scenario.model_validate(SECURITY),
        Scenario.model_validate(EVERY_ROUTE),
    ]


CASE_IDS = [*(p.stem for p in SCENARIOS), "every-field", "security", "every-route"]


# --------------------------------------------------------------------------- the normalizer


def test_cluster_names_map_between_istiod_and_the_translation() -> None:
    istiod = "outbound|8080||catalog.hf0-x.svc.cluster.local"
    assert edge_of_cluster(istiod) == edge_of_cluster("outbound|8080||catalog") == "→ catalog:8080"
    assert edge_of_cluster("inbound|8080||") == "inbound:8080"
    for other in ("PassthroughCluster", "InboundPassthroughCluster", "outbound|8080||", "x|y"):
        assert edge_of_cluster(other) is None


def test_tls_views_read_istiods_socket_matches_and_the_translations_socket() -> None:
    spiffe = "spiffe://cluster.local/ns/n/sa/catalog"
    context = {
        "common_tls_context": {
            "alpn_protocols": ["istio"],
            "tls_certificate_sds_secret_configs": [{"name": "default"}],
            "combined_validation_context": {
                "default_validation_context": {"match_subject_alt_names": [{"exact": spiffe}]}
            },
        },
        "sni": "outbound_.8080_._.catalog.n.svc.cluster.local",
    }
    tls_socket = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    istiod = {
        "transport_socket_matches": [
            {
                "name": "tlsMode-istio",
                "match": {"tlsMode": "istio"},
                "transport_socket": tls_socket,
            },
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": {"name": "raw"}},
        ]
    }
    translation_context = {
        "common_tls_context": {
            "alpn_protocols": ["istio"],
            "tls_certificates": [{"certificate_chain": {"filename": "x"}}],
            "validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": spiffe}}]
            },
        },
        "sni": "outbound_.8080_._.catalog.n.svc.cluster.local",
    }
    translation = {
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": translation_context,
        }
    }
    assert upstream_tls_view(istiod) == upstream_tls_view(translation)
    assert upstream_tls_view(istiod)["tls.accepted_sans"] == (spiffe,)
    assert upstream_tls_view({}) == {"tls.origination": "none"}
    no_client_cert = {**translation_context, "common_tls_context": {"alpn_protocols": ["istio"]}}
    simple = {
        "transport_socket": {**translation["transport_socket"], "typed_config": no_client_cert}
    }
    assert upstream_tls_view(simple)["tls.origination"] == "simple"
    # An inbound plain-text chain has no TLS fields; a TLS chain says what it requires.
    assert downstream_tls_view({"filters": []}) is None
    chain = {
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"require_client_certificate": True, "common_tls_context": {}},
        }
    }
    assert downstream_tls_view(chain) == {
        "tls.require_client_certificate": True,
        "tls.client_ca": False,
        "tls.alpn": (),
    }


def test_left_out_fields_compare_as_envoys_defaults() -> None:
    # A field Envoy's dump leaves out means Envoy's default: equal to writing the default.
    assert route_view({}, {}) == route_view({"timeout": "15s"}, {})
    assert route_view({"timeout": "0s"}, {}) != route_view({}, {})
    bare = retry_view({"retry_on": "5xx"})
    explicit = retry_view(
        {
            "retry_on": "5xx",
            "num_retries": 1,
            "host_selection_retry_max_attempts": "1",
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.250s"},
        }
    )
    assert bare == explicit
    assert cluster_view({}) == cluster_view(
        {
            "connect_timeout": "5s",
            "lb_policy": "ROUND_ROBIN",
            "circuit_breakers": {"thresholds": [{"max_retries": 3}]},
        }
    )
    # Envoy prints a 0 % panic threshold as an empty object.
    assert (
        cluster_view({"common_lb_config": {"healthy_panic_threshold": {}}})[
            "cluster.healthy_panic_threshold"
        ]
        == 0.0
    )
    assert cluster_view({})["cluster.healthy_panic_threshold"] == 50.0


def test_retry_conditions_compare_as_sets_and_a_virtual_host_policy_applies() -> None:
    a = retry_view({"retry_on": "5xx,reset", "retriable_status_codes": [504, 503]})
    b = retry_view({"retry_on": "reset,5xx", "retriable_status_codes": [503, 504]})
    assert a == b
    inherited = route_view({"cluster": "c"}, {"retry_policy": {"retry_on": "5xx"}})
    assert inherited["retry.policy"] == "set"
    assert route_view({"cluster": "c"}, {})["retry.policy"] is None


def test_differences_are_readable_lines() -> None:
    edge = "→ catalog:8080"
    istio = {edge: {"route.timeout": route_view({"timeout": "2s"}, {})["route.timeout"]}}
    envoy = {edge: {"route.timeout": route_view({}, {})["route.timeout"]}}
    (found,) = compare("frontend", ["→ catalog:8080", "inbound:8080"], istio, envoy)
    assert found == Difference("frontend", "→ catalog:8080", "route.timeout", 2, 15)
    assert found.line() == "frontend → catalog:8080: route.timeout: istiod 2s | translation 15s"
    (missing,) = compare("frontend", ["inbound:8080"], {}, {"inbound:8080": {}})
    assert missing.field == "edge"


def test_fidelity_command_refuses_a_bad_scenario_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: harness/v1\nmetadata: {name: x}\nfaults: [{kind: htp}]\n")
    result = CliRunner().invoke(app, ["fidelity", str(bad)])
    assert result.exit_code == ExitCode.ERROR
    assert "bad.yaml" in result.output
    missing = CliRunner().invoke(app, ["fidelity", str(tmp_path / "none.yaml")])
    assert missing.exit_code == ExitCode.ERROR
    assert "none.yaml" in missing.output


# --------------------------------------------------------------------------- real Envoys


@pytest.mark.integration
def test_the_comparison_sees_a_retry_policy_change_in_real_config_dumps(tmp_path: Path) -> None:
    """Negative control on real dumps: the translation of a scenario compared with the
    translation of its negative twin (no retries) differs exactly on the retried edge;
    compared with itself it does not differ. And the pre-1.24 default (503 retriable) is
    told apart from Istio ≥ 1.24's."""
    envoy = find_envoy()
    positive = load_scenario(REPO / "scenarios/retries-mask-transient-errors.yaml")
    negative = load_scenario(REPO / "scenarios/retries-mask-transient-errors-negative.yaml")
    mine = translation_dumps(positive, envoy, tmp_path / "p")
    theirs = translation_dumps(negative, envoy, tmp_path / "n")
    assert differences(positive, mine, mine) == []
    found = differences(positive, mine, theirs)
    assert found, "the comparison must see the retry policy the negative twin drops"
    assert {(d.role, d.edge) for d in found} == {("frontend", "→ catalog:8080")}
    assert "retry.policy" in {d.field for d in found}

    default = load_scenario(REPO / "scenarios/default-retries-pass-503-through.yaml")
    dumps = translation_dumps(default, envoy, tmp_path / "d")
    view = resilience_view(dumps["frontend"])["→ catalog:8080"]
    assert view["retry.retriable_status_codes"] == ()
    assert "5xx" not in view["retry.retry_on"]
    old = copy.deepcopy(dumps)
    for listener in old["frontend"]["configs"][2]["static_listeners"]:
        for chain in listener["listener"]["filter_chains"]:
            routes = chain["filters"][0]["typed_config"]["route_config"]
            for host in routes["virtual_hosts"]:
                for route in host["routes"]:
                    if "retry_policy" in route["route"]:
                        route["route"]["retry_policy"]["retriable_status_codes"] = [503]
    pre_1_24 = differences(default, old, dumps)
    assert any(d.field == "retry.retriable_status_codes" for d in pre_1_24)


# --------------------------------------------------------------------------- against istiod


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IstioControlPlane, Path]]:
    """One control plane for every scenario of the module; nothing survives it."""
    logs = tmp_path_factory.mktemp("fidelity-logs")
    run_id = f"fidelity-{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="hrn-"))
    sandbox = Sandbox.start(run_id, logs, Isolation.NAMESPACE, scratch)
    try:
        try:
            with istio_control_plane(sandbox, scratch / "cp", logs) as control:
                yield control, scratch
        except ToolMissingError as exc:
            pytest.fail(f"{exc}\n(these tests need the pinned toolchain: .ci/run installs it)")
    finally:
        sandbox.close()
        shutil.rmtree(scratch, ignore_errors=True)
    assert run_processes(run_id) == []


@pytest.mark.controlplane
@pytest.mark.parametrize("slot", range(len(CASE_IDS)), ids=CASE_IDS)
def test_istiod_and_the_translation_agree(
    plane: tuple[IstioControlPlane, Path], slot: int, tmp_path: Path
) -> None:
    """For every shipped scenario: each proxy role's resilience fields, as istiod programs
    them and as ``harness.mesh.envoy`` writes them, are equal (read from real Envoys)."""
    control, scratch = plane
    scenario = cases()[slot]
    began = time.monotonic()
    istio = istiod_dumps(control, scenario, slot, find_envoy(), scratch)
    envoy = translation_dumps(scenario, find_envoy(), tmp_path / "translation", istio.namespace)
    views = {role: resilience_view(dump) for role, dump in istio.dumps.items()}
    for role, edges in role_edges(scenario).items():
        # Every edge is there to compare: a missing one would make agreement vacuous.
        assert set(edges) <= set(views[role]), (role, sorted(views[role]))
        # istiod gives every edge mutual TLS (but to and on a DISABLE workload), so the TLS
        # fields are compared, not absent.
        peer = scenario.mesh.peer_authentication
        for edge in edges:
            if edge.startswith("inbound:") and plaintext_service(peer, role):
                assert views[role][edge]["inbound.transport"] == "plaintext"
            elif edge.startswith("inbound:"):
                assert views[role][edge]["tls.require_client_certificate"] is True
            elif plaintext_service(peer, edge.split()[1].split(":")[0]):
                assert views[role][edge]["tls.origination"] == "none"
            else:
                assert views[role][edge]["tls.origination"] == "mutual"
    if scenario.metadata.name == "every-route":
        # The routing fields are compared, not absent: istiod's own table has the weights,
        # the matches and the mirror.
        table = views["frontend"]["→ reviews:8080"]["route.table"]
        assert ("weighted", (("reviews:8080/canary", 10), ("reviews:8080/stable", 90))) in [
            target for _, target, _ in table
        ]
        assert len(table) == 4, table  # three matches kept, the catch-all; nobody's left out
        assert table[-1][2] == (("ratings:8080/v2", Decimal("12.5"), False),)
        (ratings,) = views["frontend"]["→ ratings:8080"]["route.table"]
        assert ratings[1] == ("cluster", "ratings:8080/v1")
        assert ratings[0][2] == (
            "headers",
            (("end-user", (("string_match", "{'exact': 'tester'}"),)),),
        )
        assert views["frontend"]["→ reviews:8080"]["subset canary.tls.sni"].startswith(
            "outbound_.8080_.canary_.reviews."
        )
    found = differences(scenario, istio.dumps, envoy)
    print(f"{scenario.metadata.name}: compared in {time.monotonic() - began:.1f} s")
    assert found == [], "\n".join(d.line() for d in found)
