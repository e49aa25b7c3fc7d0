"""Probes and the security SLO kinds (``denied``, ``plaintextRejected``): what is judged
from the probe records, how the probes are sent (against the in-memory FakeDeployment of
tests/fakes.py, no network), and how the scenario refers to them. The real proxies answer
in tests/test_security_scenarios.py and tests/test_authz_envoy.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeDeployment

from harness.files import redact_secrets
from harness.journal import Journal, PhaseWindow, ProbeRecord, Verdict
from harness.observe.probes import RBAC_DENIED_BODY, ProbeSender
from harness.platforms.base import ProbeReply, ProbeRequest
from harness.scenario.models import Scenario
from harness.slo.judge import judge_slos
from harness.slo.security import evaluate_denied, evaluate_plaintext_rejected

BASE: dict[str, Any] = {
    "metadata": {"name": "probe-test"},
    "load": {"rate": 1},
    "phases": [{"name": "before", "duration": "10s"}, {"name": "during", "duration": "10s"}],
    "probes": [
        {"name": "admin", "to": "catalog", "as": "frontend", "paths": ["/admin", "//admin"]},
        {"name": "plain", "to": "catalog", "as": "plaintext"},
    ],
    "slos": [
        {"kind": "denied", "name": "admin-denied", "probe": "admin"},
        {"kind": "plaintextRejected", "name": "no-plaintext", "probe": "plain"},
    ],
}


def journal_with(records: list[ProbeRecord]) -> Journal:
    journal = Journal(
        run_id="r",
        scenario_name="probe-test",
        scenario_file=None,
        scenario={},
        platform="fake",
        isolation="none",
        isolation_note="",
        environment={},
        started_at=0.0,
    )
    journal.phases = [
        PhaseWindow(name="before", start=100.0, end=110.0),
        PhaseWindow(name="during", start=110.0, end=120.0),
    ]
    journal.probes = records
    return journal


def record(
    t: float, path: str, status: int, *, probe: str = "admin", body: str = ""
) -> ProbeRecord:
    return ProbeRecord(
        probe=probe,
        t=t,
        to="catalog",
        identity="frontend" if probe == "admin" else "plaintext",
        method="GET",
        path=path,
        status=status,
        rbac_denied=status == 403 and body == RBAC_DENIED_BODY,
        rid=f"rid-{t:g}",
        error=None if status else "ConnectionResetError",
    )


def denied(t: float, path: str = "/admin") -> ProbeRecord:
    return record(t, path, 403, body=RBAC_DENIED_BODY)


# --------------------------------------------------------------------------- verdicts


def test_denied_passes_only_when_every_answer_was_an_rbac_denial() -> None:
    journal = journal_with([denied(101), denied(102, "//admin"), record(103, "/admin", 0)])
    result = evaluate_denied("admin-denied", "before", "admin", journal)
    assert result.verdict is Verdict.PASS and result.n == 3 and result.measured == 0.0
    assert "1 unanswered" in result.message


def test_denied_fails_naming_each_request_that_got_through() -> None:
    journal = journal_with(
        [denied(111), record(112.5, "//admin", 200), record(113, "/%2Fadmin", 404)]
    )
    result = evaluate_denied("admin-denied", "during", "admin", journal)
    assert result.verdict is Verdict.FAIL
    assert result.measured == pytest.approx(2 / 3)
    assert "2 of 3 requests of probe 'admin' got through" in result.message
    assert "GET //admin as frontend → catalog at +2.5s: HTTP 200 (x-request-id rid-112.5)" in (
        result.message
    )
    assert "/%2Fadmin" in result.message and "HTTP 404" in result.message
    # A 403 that is not the RBAC filter's (an app's own 403) is not a denial by the mesh.
    app_403 = journal_with([record(101, "/admin", 403, body="forbidden by the app")])
    assert evaluate_denied("x", "before", "admin", app_403).verdict is Verdict.FAIL


def test_denied_is_inconclusive_when_nothing_showed_the_policy() -> None:
    silent = journal_with([record(101, "/admin", 0), denied(115)])  # the denial is elsewhere
    result = evaluate_denied("admin-denied", "before", "admin", silent)
    assert result.verdict is Verdict.INCONCLUSIVE and result.n == 1
    nothing = evaluate_denied("admin-denied", "before", "admin", journal_with([]))
    assert nothing.verdict is Verdict.INCONCLUSIVE and nothing.n == 0


def test_plaintext_rejected_fails_on_any_http_answer() -> None:
    refused = [record(101, "/", 0, probe="plain"), record(102, "/", 0, probe="plain")]
    ok = evaluate_plaintext_rejected("p", "before", "plain", journal_with(refused))
    assert ok.verdict is Verdict.PASS and ok.n == 2
    answered = journal_with([*refused, record(104, "/", 200, probe="plain")])
    failed = evaluate_plaintext_rejected("p", "before", "plain", answered)
    assert failed.verdict is Verdict.FAIL and "1 of 3 plaintext requests" in failed.message
    assert "HTTP 200" in failed.message and "rid-104" in failed.message
    empty = evaluate_plaintext_rejected("p", "during", "plain", journal_with(refused))
    assert empty.verdict is Verdict.INCONCLUSIVE


def test_the_judge_runs_both_kinds_in_every_phase() -> None:
    scenario = Scenario.model_validate(BASE)
    journal = journal_with(
        [
            denied(101),
            denied(111),
            record(102, "/", 0, probe="plain"),
            record(112, "/", 200, probe="plain"),
        ]
    )
    results = judge_slos(scenario.slos, journal, [])
    verdicts = {(r.slo, r.phase): r.pair_verdict or r.verdict for r in results}
    assert verdicts == {
        ("admin-denied", "before"): Verdict.PASS,
        ("admin-denied", "during"): Verdict.PASS,
        ("no-plaintext", "before"): Verdict.PASS,
        ("no-plaintext", "during"): Verdict.FAIL,
    }


# --------------------------------------------------------------------------- sending


def test_probes_send_their_paths_in_turn_with_their_own_request_ids(tmp_path: Path) -> None:
    scenario = Scenario.model_validate(BASE)

    def reply(request: ProbeRequest) -> ProbeReply:
        if request.identity == "plaintext":
            return ProbeReply(0, "", "ConnectionResetError: reset")
        return ProbeReply(403, RBAC_DENIED_BODY) if request.path == "/admin" else ProbeReply(200)

    fake = FakeDeployment(scenario, tmp_path, probe_reply=reply)
    sender = ProbeSender(fake, scenario.probes, max_duration=1.2)
    sender.start()
    deadline = time.monotonic() + 10.0
    while sum(r.probe == "admin" for r in sender.records()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.stop()
    records = sender.records()
    admin = [r for r in records if r.probe == "admin"]
    assert [r.path for r in admin[:2]] == ["/admin", "//admin"]
    assert admin[0].rbac_denied and not admin[1].rbac_denied and admin[1].status == 200
    assert [r.turn for r in fake.probes_sent if r.path.endswith("admin")][:2] == [0, 1]
    plain = [r for r in records if r.probe == "plain"]
    assert plain and plain[0].status == 0 and plain[0].error == "ConnectionResetError: reset"
    assert len({r.rid for r in records}) == len(records)
    assert all(r.rid.startswith(f"probe-{r.probe}-") for r in records)
    # Bounded: nothing is sent after stop() (or after max_duration).
    count = len(fake.probes_sent)
    time.sleep(0.3)
    assert len(fake.probes_sent) == count


def test_a_journal_keeps_its_probe_records(tmp_path: Path) -> None:
    journal = journal_with([denied(101), record(102, "//admin", 200)])
    path = tmp_path / "journal.json"
    journal.write(path)
    assert Journal.read(path).probes == journal.probes


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"slos": [{"kind": "denied", "name": "d", "probe": "admn"}]}, "unknown probe 'admn'"),
        (
            {"slos": [{"kind": "plaintextRejected", "name": "p", "probe": "admin"}]},
            "judges a probe with as: plaintext",
        ),
        (
            {"probes": [{"name": "x", "to": "catalogue", "as": "frontend"}]},
            "unknown service 'catalogue'",
        ),
        ({"probes": [{"name": "x", "to": "catalog", "as": "frontnd"}]}, "did you mean 'frontend'"),
        ({"probes": [{"name": "x", "to": "catalog", "as": "frontend", "paths": ["a"]}]}, "'/'"),
        ({"probes": [{"name": "x", "to": "catalog", "as": "x", "every": "10ms"}]}, "0.2"),
    ],
)
def test_bad_probe_references_are_refused(change: dict[str, Any], message: str) -> None:
    spec = {**BASE, **change}
    if "slos" not in change:
        spec["slos"] = [{"kind": "errorRate", "name": "e", "max": "1%"}]
    with pytest.raises(ValueError, match=message):
        Scenario.model_validate(spec)


def test_logs_are_redacted_of_pem_blocks_and_tokens(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    pem = "-----BEGIN CERTIFICATE-----\nMIIC/DCCAeSg\n-----END CERTIFICATE-----"
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----"
    token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.c2lnbmF0dXJl"
    (logs / "istiod.log").write_text(f"info key: {pem}\nnext\n{key}\nbearer {token} end\n")
    (logs / "app.log").write_text("nothing secret\n")
    changed = redact_secrets(logs)
    assert changed == [logs / "istiod.log"]
    text = (logs / "istiod.log").read_text()
    assert text == (
        "info key: [PEM CERTIFICATE redacted by the harness]\nnext\n"
        "[PEM EC PRIVATE KEY redacted by the harness]\n"
        "bearer [token redacted by the harness] end\n"
    )
    assert (logs / "app.log").read_text() == "nothing secret\n"
    assert redact_secrets(tmp_path / "none") == []
