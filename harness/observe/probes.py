"""The scenario's probes (``probes:``), sent beside the load through every phase.

A :class:`ProbeSender` thread wakes when the next probe is due, sends every due probe in
one batch through :meth:`~harness.platforms.base.Deployment.send_probes`, and records one
:class:`~harness.journal.ProbeRecord` per request (who, what, when, what came back). A probe
that fell behind (a slow batch) skips ahead instead of bursting, so a probe sends at most one
request per ``every``; sending stops at :meth:`ProbeSender.stop` or after ``max_duration``.
The SLOs ``denied`` and ``plaintextRejected`` judge the records (harness.slo.security)::

    sender = ProbeSender(deployment, scenario.probes, max_duration=120.0)
    sender.start()
    ...                     # the phases
    sender.stop()
    journal.probes = sender.records()
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Final

from harness.journal import ProbeRecord
from harness.platforms.base import Deployment, ProbeRequest
from harness.scenario.security import Probe

__all__ = ["RBAC_DENIED_BODY", "ProbeSender"]

RBAC_DENIED_BODY: Final = "RBAC: access denied"
"""The body of Envoy's RBAC filter's 403 (``envoy.filters.http.rbac``)."""


class ProbeSender:
    """Send ``probes`` from a background thread until stopped."""

    def __init__(
        self, deployment: Deployment, probes: Sequence[Probe], *, max_duration: float
    ) -> None:
        self._deployment = deployment
        self._probes = list(probes)
        self._max_duration = max_duration
        self._stop = threading.Event()
        self._records: list[ProbeRecord] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="probes", daemon=True)
        self._turns = [0] * len(self._probes)
        self.failure: str | None = None  # why the thread stopped early, if it did

    def start(self) -> None:
        if self._probes:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def records(self) -> list[ProbeRecord]:
        with self._lock:
            return list(self._records)

    def _loop(self) -> None:
        begun = time.monotonic()
        due = [begun] * len(self._probes)
        try:
            while not self._stop.is_set() and time.monotonic() - begun < self._max_duration:
                now = time.monotonic()
                ready = [i for i, at in enumerate(due) if at <= now]
                if not ready:
                    self._stop.wait(min(due) - now)
                    continue
                self._send(ready)
                after = time.monotonic()
                for i in ready:
                    # No catch-up burst after a slow batch: the next one is a period away.
                    due[i] = max(due[i] + self._probes[i].every, after)
        except Exception as exc:  # recorded; the SLOs then see fewer requests
            self.failure = f"{type(exc).__name__}: {exc}"

    def _send(self, ready: list[int]) -> None:
        requests = []
        for i in ready:
            probe = self._probes[i]
            turn = self._turns[i]
            self._turns[i] += 1
            path = probe.paths[turn % len(probe.paths)]
            rid = f"probe-{probe.name}-{uuid.uuid4().hex[:12]}"
            requests.append(ProbeRequest(probe.to, probe.as_, probe.method, path, rid, turn))
        sent = time.time()
        replies = self._deployment.send_probes(requests)
        with self._lock:
            for i, request, reply in zip(ready, requests, replies, strict=True):
                self._records.append(
                    ProbeRecord(
                        probe=self._probes[i].name,
                        t=sent,
                        to=request.to,
                        identity=request.identity,
                        method=request.method,
                        path=request.path,
                        status=reply.status,
                        rbac_denied=reply.status == 403 and reply.body == RBAC_DENIED_BODY,
                        rid=request.rid,
                        error=reply.error,
                    )
                )
