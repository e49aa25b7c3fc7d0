"""The shipped security scenarios end to end (real Envoys, real TLS handshakes, real Locust,
real verdicts): authorization holds through a sidecar kill, its deliberately permissive
negative control fails naming the requests that got through (under the translation and
under a real istiod), and STRICT mutual TLS refuses a plaintext client (both meshes). Each
run's whole report directory is searched for key material, certificates and tokens."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.errors import ExitCode
from harness.platforms.local.platform import Mesh
from harness.platforms.local.processes import run_processes
from harness.pytest_plugin import ScenarioOutcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
Run = Callable[..., ScenarioOutcome]
# PEM blocks of keys and certificates, and JWTs (a ServiceAccount token is one).
SECRETS = re.compile(rb"PRIVATE KEY-----|BEGIN CERTIFICATE|eyJ[A-Za-z0-9_-]{8,}\.eyJ")


def assert_no_secrets(outcome: ScenarioOutcome) -> None:
    run_dir = outcome.result.journal_path.parent
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.name == "journal.json" for path in files)
    for path in files:
        assert not SECRETS.search(path.read_bytes()), f"key material or a token in {path}"


def verdicts(outcome: ScenarioOutcome) -> dict[tuple[str, str], str]:
    return {(entry.slo, entry.phase): entry.verdict for entry in outcome.journal.slos}


def test_authz_holds_under_chaos(harness_run: Run) -> None:
    outcome = harness_run(SCENARIOS / "authz-holds-under-chaos.yaml")
    assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    journal = outcome.journal
    assert journal.faults[0].took_effect and journal.faults[0].revert_verified
    for slo in ("wrong-caller-denied", "admin-denied"):
        for phase in ("baseline", "fault", "recovery"):
            assert verdicts(outcome)[(slo, phase)] == "PASS", outcome.summary
    # Every spelling of /admin was tried and refused by the RBAC filter.
    admin = [r for r in journal.probes if r.probe == "frontend-asks-admin"]
    assert {r.path for r in admin if r.rbac_denied} == {
        "/admin",
        "//admin",
        "/%2Fadmin",
        "/./admin",
    }
    assert run_processes(journal.run_id) == []
    assert_no_secrets(outcome)


@pytest.mark.parametrize("mesh", [Mesh.ENVOY, Mesh.ISTIO], ids=["envoy", "istio"])
def test_permissive_negative_control_names_what_got_through(harness_run: Run, mesh: Mesh) -> None:
    """Under istio the probes carry certificates istiod's CA signed for each identity
    (pilot-agent's OUTPUT_CERTS) and the RBAC filters are istiod's: the same requests get
    through as under the translation."""
    outcome = harness_run(SCENARIOS / "authz-holds-under-chaos-negative.yaml", mesh=mesh)
    assert outcome.exit_code == ExitCode.FAILED, outcome.summary
    journal = outcome.journal
    assert journal.mesh == mesh.value
    assert not journal.problems, "a negative control fails on its SLOs, not on its faults"
    admin = [r for r in journal.probes if r.probe == "frontend-asks-admin"]
    # The deny-list holds for the spellings Envoy normalizes, not for the others.
    through = {r.path for r in admin if r.status == 200}
    assert through == {"//admin", "/%2Fadmin"}
    assert {r.path for r in admin if r.rbac_denied} == {"/admin", "/./admin"}
    messages = {(e.slo, e.phase): e.message for e in journal.slos}
    assert "GET //admin as frontend → catalog" in messages[("admin-denied", "baseline")]
    assert verdicts(outcome)[("wrong-caller-denied", "baseline")] == "FAIL"
    assert "as ingress → catalog" in messages[("wrong-caller-denied", "baseline")]
    assert_no_secrets(outcome)


@pytest.mark.parametrize("mesh", [Mesh.ENVOY, Mesh.ISTIO], ids=["envoy", "istio"])
def test_strict_mtls_rejects_plaintext(harness_run: Run, mesh: Mesh) -> None:
    """Under istio the STRICT PeerAuthentication is istiod's to enforce, and every sidecar's
    certificate comes from istiod's CA for a TokenRequest token: neither the keys nor the
    tokens may reach the report directory."""
    outcome = harness_run(SCENARIOS / "mtls-strict-rejects-plaintext.yaml", mesh=mesh)
    journal = outcome.journal
    assert journal.mesh == mesh.value
    for slo in ("catalog-refuses-plaintext", "inventory-refuses-plaintext"):
        for phase in ("baseline", "fault", "recovery"):
            assert verdicts(outcome)[(slo, phase)] == "PASS", outcome.summary
    refused = [r for r in journal.probes if r.identity == "plaintext"]
    assert refused and all(r.status == 0 and r.error for r in refused)
    if mesh is Mesh.ENVOY:
        assert outcome.exit_code == ExitCode.PASSED, outcome.summary
    assert_no_secrets(outcome)
