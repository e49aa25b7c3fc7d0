"""Envoy's JSON access logs: response flags per mesh edge and requests rebuilt hop by hop.

Every proxy writes one JSON object per request to ``<run_dir>/access/<proxy>.jsonl`` in the
format of :data:`harness.mesh.envoy.ACCESS_LOG_FORMAT`; ``dir`` says which listener logged
it (``ingress``, ``inbound`` at the callee's sidecar, ``outbound`` at the caller's). The
``x-request-id`` (``rid``) is the same on every hop, so a request's path through the mesh
can be put back together::

    flags = response_flags(run_dir / "access", service_of)   # {"frontend→catalog": {"FI": 12}}
    paths = request_paths(run_dir / "access", samples, journal.phases)

Files are streamed line by line (memory does not grow with the run's length); a line cut
short (the proxy killed mid-write, or still writing) is skipped.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.journal import Hop, PhaseWindow, RequestPath
from harness.load.driver import Sample

INGRESS = "ingress"
UNKNOWN = "unknown"
NO_FLAGS = "-"
MARKED_RIDS_LIMIT = 20_000
"""At most this many interesting request ids are remembered while choosing paths."""
_DIRECTION_ORDER = {"ingress": 0, "inbound": 1, "outbound": 2}


@dataclass(frozen=True)
class AccessEntry:
    """One access-log line of one proxy."""

    proxy: str
    direction: str  # "ingress" | "inbound" | "outbound"
    authority: str
    path: str
    status: int  # 0: no response was sent
    flags: str  # Envoy %RESPONSE_FLAGS%, "-" when none, comma-separated otherwise
    upstream: str
    attempts: int
    ms: int
    start: float  # epoch seconds
    rid: str
    source: str  # x-harness-source: the calling service, as its outbound route set it
    cluster: str

    @classmethod
    def from_json(cls, proxy: str, raw: Mapping[str, Any]) -> AccessEntry:
        """Build from one decoded line; raises ``ValueError``/``TypeError`` when malformed."""
        return cls(
            proxy=proxy,
            direction=_text(raw.get("dir")),
            authority=_text(raw.get("authority")),
            path=_text(raw.get("path")),
            status=_int(raw.get("status")),
            flags=_text(raw.get("flags")) or NO_FLAGS,
            upstream=_text(raw.get("upstream")),
            attempts=_int(raw.get("attempts")),
            ms=_int(raw.get("ms")),
            start=float(raw["start"]),
            rid=_text(raw.get("rid")),
            source=_text(raw.get("source")),
            cluster=_text(raw.get("cluster")),
        )

    @property
    def flag_list(self) -> list[str]:
        return [f for f in self.flags.split(",") if f and f != NO_FLAGS]

    def hop(self) -> Hop:
        return Hop(
            proxy=self.proxy,
            direction=self.direction,
            authority=self.authority,
            path=self.path,
            status=self.status,
            flags=self.flags,
            upstream=self.upstream,
            attempts=self.attempts,
            ms=self.ms,
            start=self.start,
        )


def _text(value: object) -> str:
    return "" if value is None or value == "-" else str(value)


def _int(value: object) -> int:
    if value is None or value == "-" or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"not a number: {value!r}")
    return int(value)


def read_access_log(path: Path, proxy: str | None = None) -> Iterator[AccessEntry]:
    """The entries of one proxy's log (``proxy`` defaults to the file's stem).

    Lines that are not complete JSON objects (a torn last line) are skipped.
    """
    name = proxy or path.stem
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if isinstance(raw, dict):
                    yield AccessEntry.from_json(name, raw)
            except (ValueError, TypeError, KeyError):
                continue


def access_log_files(access_dir: Path) -> list[Path]:
    """Every proxy's log in ``access_dir``, by name."""
    if not access_dir.is_dir():
        return []
    return sorted(access_dir.glob("*.jsonl"))


def read_access_logs(access_dir: Path) -> Iterator[AccessEntry]:
    for path in access_log_files(access_dir):
        yield from read_access_log(path)


def _callee(entry: AccessEntry) -> str:
    if entry.cluster.startswith("outbound|"):
        return entry.cluster.rsplit("|", 1)[-1]
    return entry.authority.rsplit(":", 1)[0] if entry.authority else UNKNOWN


def edge_of(entry: AccessEntry, service_of: Mapping[str, str]) -> str | None:
    """``"caller→callee"`` of an entry (None for a direction this does not know)."""
    if entry.direction == "outbound":
        return f"{service_of.get(entry.proxy, entry.proxy)}→{_callee(entry)}"
    if entry.direction == "ingress":
        return f"{INGRESS}→{_callee(entry)}"
    if entry.direction == "inbound":
        return f"{entry.source or UNKNOWN}→{service_of.get(entry.proxy, entry.proxy)}"
    return None


def status_class(status: int) -> str:
    """``"2xx"``, ``"5xx"``…, or ``"0"`` when no response was sent."""
    return f"{status // 100}xx" if status >= 100 else "0"


@dataclass
class ResponseSummary:
    """Per edge: response flags (both sides) and status classes (the caller's side)."""

    flags: dict[str, dict[str, int]] = field(default_factory=dict)
    codes: dict[str, dict[str, int]] = field(default_factory=dict)


def summarize_responses(access_dir: Path, service_of: Mapping[str, str]) -> ResponseSummary:
    """One pass over every log.

    Flags are counted from the caller's outbound (or ingress) entries and from the callee's
    inbound entries, each proxy logging the flags it set itself (``FI`` at the callee's
    fault filter, ``URX`` at the caller's retrying router…). Status classes come from the
    caller's side only, so each request on an edge counts once. Every edge seen appears,
    with an empty flag map when no request on it had a flag.
    """
    summary = ResponseSummary()
    for entry in read_access_logs(access_dir):
        edge = edge_of(entry, service_of)
        if edge is None:
            continue
        flags = summary.flags.setdefault(edge, {})
        for flag in entry.flag_list:
            flags[flag] = flags.get(flag, 0) + 1
        if entry.direction != "inbound":
            codes = summary.codes.setdefault(edge, {})
            label = status_class(entry.status)
            codes[label] = codes.get(label, 0) + 1
    summary.flags = {edge: dict(sorted(f.items())) for edge, f in sorted(summary.flags.items())}
    summary.codes = {edge: dict(sorted(c.items())) for edge, c in sorted(summary.codes.items())}
    return summary


def response_flags(access_dir: Path, service_of: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{"caller→callee": {flag: count}}``; see :func:`summarize_responses`."""
    return summarize_responses(access_dir, service_of).flags


# --------------------------------------------------------------------------- request paths


def _is_marked(entry: AccessEntry) -> bool:
    """A hop worth showing: it had a flag, a retry, or an error status."""
    return (
        entry.flags not in ("", NO_FLAGS)
        or entry.attempts > 1
        or entry.status >= 400
        or entry.status == 0
    )


def _marked_rids(access_dir: Path) -> set[str]:
    marked: set[str] = set()
    for entry in read_access_logs(access_dir):
        if entry.rid and _is_marked(entry):
            marked.add(entry.rid)
            if len(marked) >= MARKED_RIDS_LIMIT:
                break
    return marked


def _spread(items: Sequence[Sample], n: int) -> list[Sample]:
    """``n`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if n <= 0:
        return []
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step + step / 2)] for i in range(n)]


def _choose(samples: Sequence[Sample], marked: set[str], n: int) -> list[Sample]:
    """Up to ``n``: one of each kind (status, error) first, then spread over the rest.

    Within a kind, and for the rest, requests with a marked hop (a flag, a retry, an error)
    come before unmarked ones.
    """
    if n <= 0:
        return []
    by_kind: dict[tuple[int, str], list[Sample]] = {}
    for sample in samples:
        by_kind.setdefault((sample.status, (sample.err or "")[:40]), []).append(sample)
    chosen: list[Sample] = []
    for members in by_kind.values():  # kinds in order of first appearance
        if len(chosen) >= n:
            break
        chosen.append(next((s for s in members if s.rid in marked), members[0]))
    for wanted_marked in (True, False):
        picked = {s.rid for s in chosen}
        rest = [s for s in samples if s.rid not in picked and (s.rid in marked) == wanted_marked]
        chosen += _spread(rest, n - len(chosen))
    return sorted(chosen, key=lambda s: s.t)


def request_paths(
    access_dir: Path,
    samples: Sequence[Sample],
    phases: Sequence[PhaseWindow],
    *,
    failed: int = 5,
    succeeded: int = 2,
) -> list[RequestPath]:
    """A few requests rebuilt hop by hop from every proxy's log, by ``x-request-id``.

    Up to ``failed`` requests the client saw fail (different kinds first, spread over the
    run) and ``succeeded`` successful ones, preferably ones the mesh saved (a retry, an
    injected fault on the way). Only requests started inside a phase are chosen. Hops are
    in start order (on the same millisecond: the enclosing hop first). Two passes over the
    logs; memory stays bounded by :data:`MARKED_RIDS_LIMIT`.
    """
    windows = sorted(phases, key=lambda w: w.start)
    starts = [w.start for w in windows]

    def phase_of(t: float) -> str | None:
        index = bisect.bisect_right(starts, t) - 1
        if index >= 0 and t < windows[index].end:
            return windows[index].name
        return None

    phase = {s.rid: name for s in samples if s.rid and (name := phase_of(s.t)) is not None}
    in_run = sorted((s for s in samples if s.rid in phase), key=lambda s: s.t)
    if not in_run:
        return []
    marked = _marked_rids(access_dir)
    chosen = _choose([s for s in in_run if not s.ok], marked, failed)
    chosen += _choose([s for s in in_run if s.ok], marked, succeeded)
    wanted = {s.rid for s in chosen}
    hops: dict[str, list[AccessEntry]] = {rid: [] for rid in wanted}
    for entry in read_access_logs(access_dir):
        if entry.rid in wanted:
            hops[entry.rid].append(entry)
    paths = []
    for sample in sorted(chosen, key=lambda s: s.t):
        entries = sorted(
            hops[sample.rid],
            key=lambda e: (e.start, -e.ms, _DIRECTION_ORDER.get(e.direction, 3), e.proxy),
        )
        paths.append(
            RequestPath(
                rid=sample.rid,
                status=sample.status,
                phase=phase[sample.rid],
                hops=[entry.hop() for entry in entries],
            )
        )
    return paths


__all__ = [
    "AccessEntry",
    "ResponseSummary",
    "access_log_files",
    "edge_of",
    "read_access_log",
    "read_access_logs",
    "request_paths",
    "response_flags",
    "status_class",
    "summarize_responses",
]
