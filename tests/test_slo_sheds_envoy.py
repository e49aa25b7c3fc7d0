"""Issue 8's acceptance for ``sheds``, on real Envoy with the shop app: Istio's
circuit-breaking task (maxConnections 1, http1MaxPendingRequests 1,
maxRequestsPerConnection 1) at the ingress → frontend edge.

* 3 concurrent users without pause: the breaker rejects requests (503 with the response
  flag ``UO`` in the ingress's access log), and ``sheds`` equals the UO count.
* 2 users with two pending slots: the second user's requests overflow the one connection
  and only queue, so nothing is rejected. A ``sheds`` SLO FAILs (before issue 8 it passed
  on "1327 sheds" while not one request failed). With one pending slot, 2 users are shed
  now and then, as in Istio's own task: sidecars talk mutual TLS, and while the next
  connection's handshake runs (maxRequestsPerConnection 1) a user's next request can find
  the one slot taken.

Load ``{mode: concurrency, users: N}``: N closed-loop users without pacing, as in the task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.journal import Journal, PhaseWindow
from harness.observe.access_logs import read_access_log
from harness.pytest_plugin import ScenarioOutcome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Run = Callable[..., ScenarioOutcome]
# The phase's counters are snapshotted just before its start and, after its end, on the
# runner's next tick (up to 0.1 s) plus a scrape: rejections in those bands may count
# on either side.
BEFORE_S = 0.05
AFTER_S = 0.5

SCENARIO = """\
apiVersion: harness/v1
metadata:
  name: istio-circuit-breaking-{users}-users
  description: Istio's circuit-breaking task, {users} concurrent users without pause.
app:
  name: shop
mesh:
  destinations:
    frontend:
      connectionPool:
        tcp: {{maxConnections: 1}}
        http: {{http1MaxPendingRequests: {pending}, maxRequestsPerConnection: 1}}
load:
  mode: concurrency
  users: {users}
phases:
  - {{name: load, duration: 8s}}
slos:
  - name: breaker-sheds
    kind: sheds
    edge: {{from: ingress, to: frontend}}
    min: 1
"""


def run(harness_run: Run, tmp_path: Path, users: int, pending: int = 1) -> ScenarioOutcome:
    path = tmp_path / f"circuit-breaking-{users}.yaml"
    path.write_text(SCENARIO.format(users=users, pending=pending))
    return harness_run(path)


def rejections(journal: Journal, run_dir: Path) -> tuple[int, int]:
    """UO lines in the ingress's access log for requests started in the phase: surely
    inside it, and in the bands around its edges where the counter snapshots were taken
    (:data:`BEFORE_S`, :data:`AFTER_S`: either side may count those)."""
    (window,) = journal.phases
    assert isinstance(window, PhaseWindow)
    sure = near = 0
    for entry in read_access_log(run_dir / "access" / "ingress.jsonl"):
        if "UO" not in entry.flag_list:
            continue
        if window.start + BEFORE_S <= entry.start < window.end - BEFORE_S:
            sure += 1
        elif window.start - BEFORE_S <= entry.start < window.end + AFTER_S:
            near += 1
    return sure, near


def test_three_users_are_shed_as_often_as_envoy_rejects(harness_run: Run, tmp_path: Path) -> None:
    outcome = run(harness_run, tmp_path, users=3)
    journal = outcome.journal
    (result,) = journal.slos
    assert result.verdict == "PASS", result.message
    sure, near = rejections(journal, outcome.result.run_dir)
    assert sure > 0, "3 unpaced users must overflow a pool of 1 connection + 1 pending"
    assert result.measured is not None
    assert sure <= result.measured <= sure + near, (result.measured, sure, near)
    edge = next(e for e in journal.edges if (e.caller, e.callee) == ("ingress", "frontend"))
    counters = edge.phases["load"]
    assert result.measured == (
        counters["upstream_rq_pending_overflow"] + counters["upstream_rq_retry_overflow"]
    )
    assert "upstream_rq_pending_overflow" in result.message
    assert journal.response_codes["ingress→frontend"].get("503", 0) >= sure


def test_two_users_are_queued_not_shed_and_fail_a_sheds_slo(
    harness_run: Run, tmp_path: Path
) -> None:
    outcome = run(harness_run, tmp_path, users=2, pending=2)
    journal = outcome.journal
    (result,) = journal.slos
    sure, near = rejections(journal, outcome.result.run_dir)
    assert sure + near == 0, "a connection and two pending slots hold 2 users' requests"
    edge = next(e for e in journal.edges if (e.caller, e.callee) == ("ingress", "frontend"))
    assert edge.phases["load"]["upstream_cx_overflow"] > 0  # the pool was full: they queued
    assert result.verdict == "FAIL", result.message
    assert result.measured == 0
    assert "0 requests rejected by the circuit breaker" in result.message
    edge = next(e for e in journal.edges if (e.caller, e.callee) == ("ingress", "frontend"))
    if edge.phases["load"]["upstream_cx_overflow"]:
        assert "queueing, not shedding" in result.message
