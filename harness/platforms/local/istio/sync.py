"""Is every proxy running istiod's latest configuration? ``/debug/syncz`` (sent vs acked
nonces per type, a proxy's NACK as ``lastError``) and Envoy's ``update_rejected`` counters.

:func:`wait_synced` waits for SYNCED after start-up; :func:`wait_pushed` measures a policy
change: from the API write until every affected proxy acknowledged a newer configuration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import ControlPlaneError, PlatformError
from harness.platforms.local.istio.workloads import (
    ISTIOD_PORTS,
    LOCALHOST,
    POLL_S,
    SYNC_TIMEOUT_S,
    Sidecar,
    tail,
)
from harness.platforms.local.sandbox import Sandbox

__all__ = [
    "check_sidecar",
    "rejected_updates",
    "sent_nonces",
    "snapshot",
    "sync_state",
    "syncz",
    "wait_pushed",
    "wait_synced",
]

SYNC_POLL_S = POLL_S / 2


def syncz(sandbox: Sandbox, timeout: float = 5.0) -> list[dict[str, Any]]:
    """istiod's ``/debug/syncz``: one entry per connected proxy with each type's status."""
    status, body = sandbox.http(
        "GET", f"http://{LOCALHOST}:{ISTIOD_PORTS['http']}/debug/syncz", timeout=timeout
    )
    if status != 200:
        raise ControlPlaneError(f"istiod's /debug/syncz answered {status}: {body[:200]}")
    entries: list[dict[str, Any]] = json.loads(body) or []
    return entries


def sync_state(entry: Mapping[str, Any]) -> tuple[str, str]:
    """``SYNCED``, ``STALE`` or ``NACK`` for one ``/debug/syncz`` entry, and why.

    As ``istioctl proxy-status`` reads it: a type is SYNCED when the last nonce istiod sent
    is the one the proxy acknowledged; a ``lastError`` is the proxy's NACK. Clusters and
    listeners must have been sent (every sidecar gets both).
    """
    resources: Mapping[str, Mapping[str, Any]] = entry.get("resources") or {}
    errors = {
        url.rsplit(".", 1)[-1]: str(status["lastError"])
        for url, status in resources.items()
        if status.get("lastError")
    }
    if errors:
        return "NACK", "; ".join(f"{kind}: {error}" for kind, error in errors.items())
    stale = [
        url.rsplit(".", 1)[-1]
        for url, status in resources.items()
        if not status.get("sent") or status.get("sent") != status.get("acked")
    ]
    for kind in ("cluster", "listener"):
        if not entry.get(f"{kind}_sent"):
            stale.append(f"{kind} (not sent)")
    if stale:
        return "STALE", "not acknowledged: " + ", ".join(stale)
    return "SYNCED", ""


def sent_nonces(entry: Mapping[str, Any]) -> dict[str, str]:
    """Type URL → the last nonce istiod sent to this proxy."""
    resources: Mapping[str, Mapping[str, Any]] = entry.get("resources") or {}
    return {url: str(status.get("sent", "")) for url, status in resources.items()}


def rejected_updates(sidecar: Sidecar) -> dict[str, int]:
    """Envoy's ``*.update_rejected`` counters of ``sidecar`` that are not zero."""
    counters = sidecar.admin.counters(r"update_rejected$")
    return {name: value for name, value in counters.items() if value}


def rejections(path: Path) -> str:
    """The log lines where Envoy says what it rejected (gRPC config ... rejected: reason)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    found = [line for line in text if "rejected" in line or "NACK" in line]
    return "\n".join(found[-5:]) or tail(path)


def check_sidecar(sandbox: Sandbox, sidecar: Sidecar) -> None:
    """A dead agent or an Envoy that rejected an update is a ControlPlaneError saying why."""
    running, code = sandbox.running(sidecar.pid)
    if not running:
        raise ControlPlaneError(
            f"pilot-agent of {sidecar.workload.name} exited with {code} "
            f"(log {sidecar.log}):\n{tail(sidecar.log)}"
        )
    try:
        rejected = rejected_updates(sidecar)
    except PlatformError:
        return  # Envoy's admin API is not up yet
    if rejected:
        raise ControlPlaneError(
            f"Envoy of {sidecar.workload.name} rejected istiod's configuration "
            f"({rejected}); reason in {sidecar.log}:\n{rejections(sidecar.log)}"
        )


def _states(
    sandbox: Sandbox, wanted: Mapping[str, str]
) -> tuple[dict[str, Mapping[str, Any]], dict[str, str]]:
    """proxy id → its syncz entry (only ``wanted``), and the SYNCED ones' absence reasons;
    a NACK raises at once."""
    entries: dict[str, Mapping[str, Any]] = {}
    pending: dict[str, str] = {}
    for entry in syncz(sandbox):
        proxy = str(entry.get("proxy", ""))
        if proxy not in wanted:
            continue
        state, detail = sync_state(entry)
        if state == "NACK":
            raise ControlPlaneError(
                f"Envoy of {wanted[proxy]} rejected istiod's configuration: {detail}"
            )
        entries[proxy] = entry
        if state != "SYNCED":
            pending[proxy] = detail
    return entries, pending


def wait_synced(
    sandbox: Sandbox,
    sidecars: Mapping[str, Sidecar],
    names: Sequence[str],
    timeout_s: float = SYNC_TIMEOUT_S,
) -> float:
    """Wait until istiod shows each sidecar in ``names`` SYNCED; returns the seconds it
    took. A dead agent or a rejected update (a NACK) fails at once, naming it and why."""
    begun = time.monotonic()
    wanted = {sidecars[name].workload.proxy_id: name for name in names}
    while True:
        for name in names:
            check_sidecar(sandbox, sidecars[name])
        entries, pending = _states(sandbox, wanted)
        missing = set(wanted) - set(entries)
        if not missing and not pending:
            return time.monotonic() - begun
        if time.monotonic() - begun > timeout_s:
            late = sorted(wanted[p] for p in missing | set(pending))
            detail = "; ".join(f"{wanted[k]}: {v}" for k, v in pending.items())
            raise ControlPlaneError(
                f"proxies not SYNCED with istiod within {timeout_s:.0f} s: {late} "
                f"({detail or 'not connected to istiod'})"
            )
        time.sleep(SYNC_POLL_S)


def snapshot(sandbox: Sandbox, timeout: float = 5.0) -> dict[str, dict[str, str]]:
    """proxy id → the nonces istiod last sent it: the state before a policy change."""
    return {str(e.get("proxy", "")): sent_nonces(e) for e in syncz(sandbox, timeout)}


def wait_pushed(
    sandbox: Sandbox,
    sidecars: Mapping[str, Sidecar],
    affected: Collection[str],
    before: Mapping[str, Mapping[str, str]],
    timeout_s: float = SYNC_TIMEOUT_S,
) -> None:
    """Wait until every proxy in ``affected`` (sidecar names) was sent a configuration newer
    than ``before`` (:func:`snapshot` taken before the API write) and acknowledged it. A NACK,
    a rejected update or a dead agent fails at once, naming the proxy and Envoy's reason."""
    begun = time.monotonic()
    wanted = {sidecars[name].workload.proxy_id: name for name in affected}
    while True:
        for name in affected:
            check_sidecar(sandbox, sidecars[name])
        entries, pending = _states(sandbox, wanted)
        waiting = {
            proxy
            for proxy in wanted
            if proxy not in entries
            or proxy in pending
            or sent_nonces(entries[proxy]) == dict(before.get(proxy, {}))
        }
        if not waiting:
            return
        if time.monotonic() - begun > timeout_s:
            raise ControlPlaneError(
                f"a policy change did not reach {sorted(wanted[p] for p in waiting)} "
                f"within {timeout_s:.0f} s (istiod /debug/syncz)"
            )
        time.sleep(SYNC_POLL_S)
