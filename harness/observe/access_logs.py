"""Envoy's JSON access logs: response flags per mesh edge and requests rebuilt hop by hop.

Every proxy writes one JSON object per request to ``<run_dir>/access/<proxy>.jsonl`` in the
format of :data:`harness.mesh.envoy.ACCESS_LOG_FORMAT`; ``dir`` says which listener logged
it (``ingress``, ``inbound`` at the callee's sidecar, ``outbound`` at the caller's). The
``x-request-id`` (``rid``) is the same on every hop, so a request's path through the mesh
can be put back together::

    access = analyze_access_logs(run_dir / "access", service_of, samples, journal.phases)
    access.flags["frontend→catalog"]          # {"URX": 3}: set by the caller's sidecar
    access.callee_flags["frontend→catalog"]   # {"FI": 12}: set by the callee's sidecar
    access.codes["frontend→catalog"]          # {"200": 950, "503": 3, "504": 1}
    access.paths                              # a few requests rebuilt hop by hop

:func:`analyze_access_logs` parses every line once (JSON, only the fields it needs) and
then pulls the few chosen requests' lines back by a byte search for their ids, parsing
only those; files are streamed (memory does not grow with the run's length). A line cut
short (the proxy killed mid-write, or still writing) is skipped.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.journal import Hop, PhaseWindow, RequestPath
from harness.load.driver import Sample, SampleColumns, as_columns
from harness.slo.share import SubsetTimings

INGRESS = "ingress"
UNKNOWN = "unknown"
NO_FLAGS = "-"
MARKED_RIDS_LIMIT = 20_000
"""At most this many interesting request ids are remembered while choosing paths."""
_DIRECTION_ORDER = {"ingress": 0, "inbound": 1, "outbound": 2}
_MISSING = "\x00missing"  # not an edge name: a cache miss
# The C scanner behind json.loads (``JSONDecoder.scan_once``, set in its __init__ and not
# in the type stubs): (object, end) from a string and an offset.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


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
        return _cluster_service(entry.cluster)
    return entry.authority.rsplit(":", 1)[0] if entry.authority else UNKNOWN


def _cluster_service(cluster: str) -> str:
    """``outbound|8080||catalog`` → ``catalog``; istiod's stat name ends with its tag
    delimiter (``outbound|8080||catalog;``), which %UPSTREAM_CLUSTER% prints too."""
    return cluster.rsplit("|", 1)[-1].rstrip(";")


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


def status_label(status: int) -> str:
    """The status as the journal keeps it: ``"503"``, or ``"0"`` when no response was sent."""
    return str(status) if status >= 100 else "0"


@dataclass
class ResponseSummary:
    """Per edge ``"caller→callee"``: the response flags each side's sidecar set, kept apart
    (``flags`` from the caller's outbound or ingress entries: ``URX``, ``UO``, ``UT``…;
    ``callee_flags`` from the callee's inbound entries: ``FI``, ``DI``…), and the status
    codes as the caller's sidecar answered them (one per request; ``"0"``: no response)."""

    flags: dict[str, dict[str, int]] = field(default_factory=dict)
    callee_flags: dict[str, dict[str, int]] = field(default_factory=dict)
    codes: dict[str, dict[str, int]] = field(default_factory=dict)


def summarize_responses(access_dir: Path, service_of: Mapping[str, str]) -> ResponseSummary:
    """Flags per side and status codes per edge, in one pass over every log (see
    :func:`analyze_access_logs`, which also rebuilds request paths in the same pass).
    Every edge seen appears, with an empty flag map when no request on it had a flag."""
    return analyze_access_logs(access_dir, service_of, [], []).responses


def response_flags(access_dir: Path, service_of: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """``{"caller→callee": {flag: count}}`` of both sides together (for a quick look; the
    journal keeps them apart, see :func:`summarize_responses`)."""
    summary = summarize_responses(access_dir, service_of)
    merged: dict[str, dict[str, int]] = {}
    for table in (summary.flags, summary.callee_flags):
        for edge, counts in table.items():
            into = merged.setdefault(edge, {})
            for flag, count in counts.items():
                into[flag] = into.get(flag, 0) + count
    return {edge: dict(sorted(counts.items())) for edge, counts in sorted(merged.items())}


# --------------------------------------------------------------------------- request paths


def _spread(rows: npt.NDArray[np.int64], n: int) -> list[int]:
    """``n`` rows evenly spaced over ``rows`` (all of them when there are fewer)."""
    if n <= 0:
        return []
    if len(rows) <= n:
        return [int(row) for row in rows]
    step = len(rows) / n
    return [int(rows[int(i * step + step / 2)]) for i in range(n)]


def _kinds(samples: SampleColumns) -> npt.NDArray[np.int64]:
    """A number per row for its kind: status and the first 40 characters of the error."""
    prefixes: dict[str, int] = {"": 0}
    codes = [prefixes.setdefault(error[:40], len(prefixes)) for error in samples.errors]
    prefix = np.array([0, *codes], dtype=np.int64)[samples.err.astype(np.int64) + 1]
    kinds: npt.NDArray[np.int64] = samples.status.astype(np.int64) * (len(prefixes) + 1) + prefix
    return kinds


def _choose(samples: SampleColumns, marked: npt.NDArray[np.bool_], n: int) -> list[int]:
    """Up to ``n`` rows: one of each kind (status, error) first, then spread over the rest.

    Within a kind, and for the rest, requests with a marked hop (a flag, a retry, an error)
    come before unmarked ones. ``samples`` are in start order, ``marked`` is per row.
    """
    if n <= 0 or not len(samples):
        return []
    kinds = _kinds(samples)
    values, firsts = np.unique(kinds, return_index=True)
    chosen: list[int] = []
    for kind in values[np.argsort(firsts)]:  # kinds in order of first appearance
        if len(chosen) >= n:
            break
        members = np.flatnonzero(kinds == kind)
        flagged = members[marked[members]]
        chosen.append(int(flagged[0] if flagged.size else members[0]))
    for wanted_marked in (True, False):
        picked = np.isin(samples.rid, samples.rid[chosen])
        rest = np.flatnonzero(~picked & (marked == wanted_marked))
        chosen += _spread(rest, n - len(chosen))
    return sorted(chosen, key=lambda row: float(samples.t[row]))


@dataclass
class AccessAnalysis:
    """What :func:`analyze_access_logs` found: responses per edge, request paths, and the
    timings of the requests routed to each DestinationRule subset."""

    responses: ResponseSummary
    paths: list[RequestPath]
    subset_timings: dict[tuple[str, str], SubsetTimings] = field(default_factory=dict)


def subset_of_cluster(cluster: str) -> str:
    """``outbound|8080|v2|reviews`` → ``v2``; ``""`` for a cluster without a subset."""
    parts = cluster.split("|")
    return parts[2] if len(parts) == 4 and parts[0] == "outbound" else ""


class _Tally:
    """The one parsing pass: flags, codes and marked request ids, line by line."""

    def __init__(self, service_of: Mapping[str, str]) -> None:
        self.service_of = service_of
        self.flags: dict[str, dict[str, int]] = {}
        self.callee_flags: dict[str, dict[str, int]] = {}
        self.codes: dict[str, dict[str, int]] = {}
        self.marked: set[str] = set()
        self.timings: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
        self._edges: dict[tuple[object, ...], str | None] = {}
        self._subsets: dict[object, str] = {}

    def edge(
        self, proxy: str, direction: str, cluster: str, authority: str, source: str
    ) -> str | None:
        """``"caller→callee"`` of a line, or ``None`` for a direction this does not know."""
        callee = (
            _cluster_service(cluster)
            if cluster.startswith("outbound|")
            else authority.rsplit(":", 1)[0]
            if authority
            else UNKNOWN
        )
        if direction == "outbound":
            return f"{self.service_of.get(proxy, proxy)}→{callee}"
        if direction == "ingress":
            return f"{INGRESS}→{callee}"
        if direction == "inbound":
            return f"{source or UNKNOWN}→{self.service_of.get(proxy, proxy)}"
        return None

    def read(self, path: Path) -> None:
        proxy = path.stem
        scan = _SCAN  # the C scanner behind json.loads, without its per-call wrappers
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                text = line.decode("utf-8", "replace").strip()
                if not text.startswith("{"):
                    continue
                try:
                    raw, end = scan(text, 0)
                except (StopIteration, ValueError):
                    continue  # a torn line
                if end != len(text):
                    continue
                try:
                    self._count(proxy, raw)
                except (TypeError, ValueError):
                    continue

    def _count(self, proxy: str, raw: dict[str, Any]) -> None:
        # The hot loop of the pass: plain lookups, one cached edge per field combination.
        get = raw.get
        direction = get("dir")
        key = (proxy, direction, get("cluster"), get("authority"), get("source"))
        edge = self._edges.get(key, _MISSING)
        if edge is _MISSING:
            edge = self.edge(proxy, _text(key[1]), _text(key[2]), _text(key[3]), _text(key[4]))
            self._edges[key] = edge
        if edge is None:
            return
        status = get("status")
        if type(status) is not int:
            status = _int(status)
        flags = get("flags")
        flagged = type(flags) is str and flags != NO_FLAGS and flags != ""
        inbound = direction == "inbound"
        if flagged:
            table = (self.callee_flags if inbound else self.flags).setdefault(edge, {})
            for flag in str(flags).split(","):
                if flag and flag != NO_FLAGS:
                    table[flag] = table.get(flag, 0) + 1
        elif edge not in (self.callee_flags if inbound else self.flags):
            (self.callee_flags if inbound else self.flags)[edge] = {}
        if not inbound:
            codes = self.codes.get(edge)
            if codes is None:
                codes = self.codes[edge] = {}
            label = str(status) if status >= 100 else "0"
            codes[label] = codes.get(label, 0) + 1
        if not inbound:
            self._time_subset(edge, get("cluster"), get("start"), get("ms"), status)
        attempts = get("attempts")
        if type(attempts) is not int:
            attempts = _int(attempts)
        if (flagged or status >= 400 or status == 0 or attempts > 1) and len(
            self.marked
        ) < MARKED_RIDS_LIMIT:
            rid = get("rid")
            if type(rid) is str and rid and rid != "-":
                self.marked.add(rid)

    def _time_subset(
        self, edge: str, cluster: object, start: object, ms: object, status: int
    ) -> None:
        """Note a request routed to a subset: its start, duration and status."""
        subset = self._subsets.get(cluster)
        if subset is None:
            subset = self._subsets[cluster] = subset_of_cluster(_text(cluster))
        if not subset:
            return
        try:
            when, took = float(_text(start)), float(_int(ms))
        except ValueError:
            return  # no start time: nothing to place in a phase
        self.timings.setdefault((edge, subset), []).append((when, took, status))

    def summary(self) -> ResponseSummary:
        def ordered(table: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
            return {edge: dict(sorted(counts.items())) for edge, counts in sorted(table.items())}

        edges = set(self.flags) | set(self.callee_flags)
        for edge in edges:  # every edge seen appears on both sides
            self.flags.setdefault(edge, {})
            self.callee_flags.setdefault(edge, {})
        return ResponseSummary(
            flags=ordered(self.flags),
            callee_flags=ordered(self.callee_flags),
            codes=ordered(self.codes),
        )


def _hops_of(files: Sequence[Path], rids: set[str]) -> dict[str, list[AccessEntry]]:
    """Every line of the given request ids, found by a byte search for each id (no JSON
    parsing of the other lines); each match is parsed and its ``rid`` checked."""
    hops: dict[str, list[AccessEntry]] = {rid: [] for rid in rids}
    needles = {rid: json.dumps(rid).encode() for rid in rids if rid}
    for path in files:
        try:
            with (
                path.open("rb") as handle,
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
            ):
                for rid, needle in needles.items():
                    position = data.find(needle)
                    while position >= 0:
                        begin = data.rfind(b"\n", 0, position) + 1
                        end = data.find(b"\n", position)
                        end = len(data) if end < 0 else end
                        try:
                            raw = json.loads(data[begin:end])
                            if isinstance(raw, dict) and raw.get("rid") == rid:
                                hops[rid].append(AccessEntry.from_json(path.stem, raw))
                        except (ValueError, TypeError, KeyError):
                            pass  # a torn line
                        position = data.find(needle, end)
        except (FileNotFoundError, ValueError):  # ValueError: an empty file cannot be mapped
            continue
    return hops


def analyze_access_logs(
    access_dir: Path,
    service_of: Mapping[str, str],
    samples: SampleColumns | Iterable[Sample],
    phases: Sequence[PhaseWindow],
    *,
    failed: int = 5,
    succeeded: int = 2,
) -> AccessAnalysis:
    """Flags and status codes per edge (:class:`ResponseSummary`) and a few requests rebuilt
    hop by hop, parsing each access-log line once.

    Paths: up to ``failed`` requests the client saw fail (different kinds first, spread over
    the run) and ``succeeded`` successful ones, preferably ones the mesh saved (a retry, an
    injected fault on the way: "marked" in the pass, at most :data:`MARKED_RIDS_LIMIT`
    ids remembered). Only requests started inside a phase are chosen. Hops are in start
    order (on the same millisecond: the enclosing hop first); the chosen requests' lines
    are pulled back by a byte search for their ids.
    """
    files = access_log_files(access_dir)
    tally = _Tally(service_of)
    for path in files:
        tally.read(path)
    return AccessAnalysis(
        responses=tally.summary(),
        paths=_paths(files, tally.marked, as_columns(samples), phases, failed, succeeded),
        subset_timings={key: SubsetTimings.of(rows) for key, rows in tally.timings.items()},
    )


def _paths(
    files: Sequence[Path],
    marked: set[str],
    samples: SampleColumns,
    phases: Sequence[PhaseWindow],
    failed: int,
    succeeded: int,
) -> list[RequestPath]:
    windows = sorted(phases, key=lambda w: w.start)
    if not windows or not len(samples):
        return []
    starts = np.array([w.start for w in windows], dtype=np.float64)
    ends = np.array([w.end for w in windows], dtype=np.float64)
    index = np.searchsorted(starts, samples.t, side="right") - 1
    in_run = (index >= 0) & (samples.t < ends[np.maximum(index, 0)]) & samples.has_rid()
    run = samples.rows(in_run)  # still in start order
    phase_index = index[in_run]
    if not len(run):
        return []
    is_marked = run.rid_in(marked)
    rows: list[int] = []
    for wanted_ok, n in ((False, failed), (True, succeeded)):
        subset = np.flatnonzero(run.ok == wanted_ok)
        rows += [int(subset[i]) for i in _choose(run.rows(subset), is_marked[subset], n)]
    chosen = [run.sample(row) for row in sorted(rows, key=lambda row: float(run.t[row]))]
    phase_of = {row: windows[int(phase_index[row])].name for row in rows}
    hops = _hops_of(files, {s.rid for s in chosen})
    paths = []
    for row, sample in zip(sorted(rows, key=lambda row: float(run.t[row])), chosen, strict=True):
        entries = sorted(
            hops[sample.rid],
            key=lambda e: (e.start, -e.ms, _DIRECTION_ORDER.get(e.direction, 3), e.proxy),
        )
        paths.append(
            RequestPath(
                rid=sample.rid,
                status=sample.status,
                phase=phase_of[row],
                hops=[entry.hop() for entry in entries],
            )
        )
    return paths


def request_paths(
    access_dir: Path,
    samples: SampleColumns | Iterable[Sample],
    phases: Sequence[PhaseWindow],
    *,
    failed: int = 5,
    succeeded: int = 2,
) -> list[RequestPath]:
    """The request paths of :func:`analyze_access_logs` alone."""
    return analyze_access_logs(
        access_dir, {}, samples, phases, failed=failed, succeeded=succeeded
    ).paths


__all__ = [
    "AccessAnalysis",
    "AccessEntry",
    "ResponseSummary",
    "access_log_files",
    "analyze_access_logs",
    "edge_of",
    "read_access_log",
    "read_access_logs",
    "request_paths",
    "response_flags",
    "status_class",
    "status_label",
    "summarize_responses",
]
