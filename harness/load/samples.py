"""Locust's per-request samples: one as an object (:class:`Sample`), many as columns.

``locustfile.py`` appends one JSON line per request to a samples file (a run may have
several: one per Locust process, merged here). The harness reads them back two ways:

* :class:`SampleTail` while Locust runs (the live guard), a few objects at a time;
* :func:`read_sample_columns` after the run, streamed block by block into numpy columns
  (:class:`SampleColumns`, about 60 bytes per request instead of about 600 for objects),
  sorted by start, which is what the timeline, the SLO verdicts and the access-log paths
  read::

    columns = read_sample_columns([run_dir / "samples.jsonl"])
    fault = columns.window(phase.start, phase.end)      # a view, no copy
    latencies_ms = fault.latency_ms[fault.ok]           # coordinated omission corrected

:func:`read_samples` (a list of :class:`Sample`) stays for small files and tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np
import numpy.typing as npt

from harness.errors import LoadError
from harness.load.sample_lines import parse_block, rid_key, rid_keys

_SAMPLE_KEYS = frozenset({"t", "ms", "status", "ok", "err", "rid"})
_OPTIONAL_SAMPLE_KEYS = frozenset({"intended", "name"})
BLOCK_BYTES = 1 << 19
"""Samples are read in blocks of about this many bytes (512 KiB: about 3,500 lines)."""

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Sample:
    """One request as Locust saw it.

    ``t`` is its actual start (epoch seconds), ``ms`` its raw service time (from ``t`` to
    the response), ``status`` the HTTP status (0 for a transport error: refused, reset,
    timeout), ``ok`` whether it counted as a success (2xx), ``err`` a short reason when it
    did not, ``rid`` its ``x-request-id``, ``intended`` the start its arrival schedule
    asked for (``None`` without a schedule: concurrency mode, or a file written before
    schedules existed). Verdicts use :attr:`latency_ms`, measured from the intended start.
    ``name`` is Locust's request name, written only by a user's own locustfile
    (``load.locustfile``, several request types); ``None`` for the built-in load.
    """

    t: float
    ms: float
    status: int
    ok: bool
    err: str | None
    rid: str
    intended: float | None = None
    name: str | None = None

    @property
    def intended_start(self) -> float:
        """When the request should have started: ``intended``, else ``t``."""
        return self.t if self.intended is None else self.intended

    @property
    def lag_ms(self) -> float:
        """How late the request started against its schedule (0 when on time or early)."""
        return max(0.0, (self.t - self.intended_start) * 1000.0)

    @property
    def latency_ms(self) -> float:
        """Latency from the intended start (coordinated omission corrected): ``ms + lag``."""
        return self.ms + self.lag_ms

    @classmethod
    def from_line(cls, line: str, where: str) -> Sample:
        """Parse one JSON line; ``where`` (``file:line``) goes into the error message."""
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as error:
            raise LoadError(f"{where}: not a JSON sample ({error}): {line[:120]!r}") from None
        if not isinstance(raw, dict) or not (
            _SAMPLE_KEYS <= set(raw) <= _SAMPLE_KEYS | _OPTIONAL_SAMPLE_KEYS
        ):
            found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise LoadError(
                f"{where}: a sample needs exactly the keys {sorted(_SAMPLE_KEYS)} "
                f"(and optionally {sorted(_OPTIONAL_SAMPLE_KEYS)}), found {found}"
            )
        t, ms, status, ok, err, rid = (raw[k] for k in ("t", "ms", "status", "ok", "err", "rid"))
        intended = raw.get("intended")
        name = raw.get("name")
        if not (
            _is_number(t)
            and _is_number(ms)
            and isinstance(status, int)
            and not isinstance(status, bool)
            and isinstance(ok, bool)
            and (err is None or isinstance(err, str))
            and isinstance(rid, str)
            and (intended is None or _is_number(intended))
            and (name is None or isinstance(name, str))
        ):
            raise LoadError(f"{where}: a sample field has the wrong type: {line[:200]!r}")
        return cls(
            t=float(t),
            ms=float(ms),
            status=status,
            ok=ok,
            err=err,
            rid=rid,
            intended=None if intended is None else float(intended),
            name=name,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_samples(path: Path | str) -> list[Sample]:
    """Every sample in ``path``; a last line cut short (Locust killed mid-write) is skipped.

    A missing file means no request was recorded and gives ``[]``. A malformed line
    anywhere else raises :class:`LoadError` naming ``file:line``.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    samples = [
        Sample.from_line(line.decode(), f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if tail.strip():
        with contextlib.suppress(LoadError):  # cut short by a kill in the middle of a write
            samples.append(Sample.from_line(tail.decode(errors="replace"), f"{path}:last"))
    return samples


class SampleTail:
    """Reads the samples file while Locust is still writing it (for live guards).

    ``poll()`` returns the samples completed since the last call; a line still being
    written waits for the next call. The file may appear only after the first flush::

        with SampleTail(plan.samples_path) as tail:
            while running():
                guard.observe(tail.poll())
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None
        self._partial = b""
        self._line = 0

    def poll(self) -> list[Sample]:
        """The samples whose lines were completed since the last call (maybe none)."""
        if self._file is None:
            try:
                self._file = self.path.open("rb")
            except FileNotFoundError:
                return []
        chunk = self._file.read()
        if not chunk:
            return []
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        samples: list[Sample] = []
        for line in lines:
            self._line += 1
            if line.strip():
                samples.append(Sample.from_line(line.decode(), f"{self.path}:{self._line}"))
        return samples

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- columns


@dataclass(frozen=True, eq=False)
class SampleColumns:
    """Many samples as numpy columns, sorted by actual start ``t`` (stable).

    Row ``i`` is one :class:`Sample`: ``intended`` is NaN where the sample had none,
    ``err`` indexes :attr:`errors` (-1: no error), ``rid`` holds the request ids in the
    compact form of :func:`rid_key` (:meth:`sample` and :meth:`rid_in` translate),
    ``name`` indexes :attr:`names` (-1: no request name, the built-in load's samples).
    :meth:`window` cuts by start without copying; :attr:`latency_ms` is computed exactly
    as :attr:`Sample.latency_ms` is, element by element.
    """

    t: Floats
    ms: Floats
    status: npt.NDArray[np.int32]
    ok: npt.NDArray[np.bool_]
    intended: Floats
    err: npt.NDArray[np.int32]
    errors: tuple[str, ...]
    rid: npt.NDArray[np.bytes_]
    name: npt.NDArray[np.int32]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.t.size)

    @classmethod
    def empty(cls) -> SampleColumns:
        return cls.from_samples([])

    @classmethod
    def from_samples(cls, samples: Iterable[Sample]) -> SampleColumns:
        """Columns of ``samples`` (sorted by start; the input's order breaks ties)."""
        block = _Block()
        for sample in samples:
            block.add(sample.t, sample.ms, sample.status, sample.ok, sample.err, sample.rid,
                      sample.intended, sample.name)  # fmt: skip
        return _merge([block.columns()])

    @property
    def lag_ms(self) -> Floats:
        """How late each request started against its schedule (0 when on time or early).

        In place on one new array (a million samples: 8 MB, no further temporaries);
        without an intended start the lag is 0, as ``(t - t) * 1000`` is."""
        lag: Floats = np.subtract(self.t, self.intended)
        lag *= 1000.0
        np.maximum(lag, 0.0, out=lag)  # NaN (no intended start) stays NaN ...
        lag[np.isnan(lag)] = 0.0  # ... and becomes 0
        return lag

    @property
    def latency_ms(self) -> Floats:
        """Latency from the intended start (coordinated omission corrected): ``ms + lag``."""
        latency = self.lag_ms
        latency += self.ms
        return latency

    @property
    def scheduled(self) -> npt.NDArray[np.bool_]:
        """Which samples carry an intended start."""
        return ~np.isnan(self.intended)

    def bounds(self, start: float, end: float) -> tuple[int, int]:
        """The row range ``[lo, hi)`` of the samples that started in ``[start, end)``."""
        lo, hi = np.searchsorted(self.t, [start, end], side="left")
        return int(lo), int(hi)

    def window(self, start: float, end: float) -> SampleColumns:
        """The samples that started in ``[start, end)`` (views, no copy)."""
        lo, hi = self.bounds(start, end)
        return self.rows(slice(lo, hi))

    def rows(self, which: slice | npt.NDArray[Any]) -> SampleColumns:
        """The rows ``which`` selects (a slice: views; a mask or indices: copies)."""
        return SampleColumns(
            t=self.t[which],
            ms=self.ms[which],
            status=self.status[which],
            ok=self.ok[which],
            intended=self.intended[which],
            err=self.err[which],
            errors=self.errors,
            rid=self.rid[which],
            name=self.name[which],
            names=self.names,
        )

    def has_rid(self) -> npt.NDArray[np.bool_]:
        """Which samples carry a request id (not empty)."""
        present: npt.NDArray[np.bool_] = self.rid != b""
        return present

    def rid_in(self, rids: Iterable[str]) -> npt.NDArray[np.bool_]:
        """Which samples' request ids are among ``rids``."""
        keys = [rid_key(rid) for rid in rids]
        if not keys:
            return np.zeros(len(self), dtype=np.bool_)
        found: npt.NDArray[np.bool_] = np.isin(self.rid, np.array(keys))
        return found

    def named(self, name: str) -> npt.NDArray[np.bool_]:
        """Which samples have the Locust request name ``name``."""
        if name not in self.names:
            return np.zeros(len(self), dtype=np.bool_)
        found: npt.NDArray[np.bool_] = self.name == self.names.index(name)
        return found

    def error_text(self, row: int) -> str | None:
        code = int(self.err[row])
        return None if code < 0 else self.errors[code]

    def sample(self, row: int) -> Sample:
        """Row ``row`` as a :class:`Sample` (for the few a report shows)."""
        intended = float(self.intended[row])
        return Sample(
            t=float(self.t[row]),
            ms=float(self.ms[row]),
            status=int(self.status[row]),
            ok=bool(self.ok[row]),
            err=self.error_text(row),
            rid=rid_text(self.rid[row]),
            intended=None if np.isnan(intended) else intended,
            name=None if self.name[row] < 0 else self.names[int(self.name[row])],
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self.sample(row) for row in range(len(self)))


def as_columns(samples: SampleColumns | Iterable[Sample]) -> SampleColumns:
    """``samples`` as columns (already columns: returned as they are)."""
    if isinstance(samples, SampleColumns):
        return samples
    return SampleColumns.from_samples(samples)


class _Block:
    """Column lists for one block of lines, then arrays (errors by text, per block)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.ms: list[float] = []
        self.status: list[int] = []
        self.ok: list[bool] = []
        self.err: list[str | None] = []
        self.rid: list[str] = []
        self.intended: list[float | None] = []
        self.name: list[str | None] = []

    def add(self, t: float, ms: float, status: int, ok: bool, err: str | None, rid: str,
            intended: float | None, name: str | None = None) -> None:  # fmt: skip
        self.t.append(t)
        self.ms.append(ms)
        self.status.append(status)
        self.ok.append(ok)
        self.err.append(err)
        self.rid.append(rid)
        self.intended.append(intended)
        self.name.append(name)

    def columns(self) -> dict[str, Any]:
        return {
            "t": np.array(self.t, dtype=np.float64),
            "ms": np.array(self.ms, dtype=np.float64),
            "status": np.array(self.status, dtype=np.int32),
            "ok": np.array(self.ok, dtype=np.bool_),
            "intended": np.array(self.intended, dtype=np.float64),  # None → NaN
            "err": self.err,
            "rid": rid_keys(self.rid),
            "name": self.name,
        }


def rid_text(key: bytes) -> str:
    """The request id back from :func:`rid_key` (numpy drops trailing NULs: padded back)."""
    if not key:
        return ""
    if key[0] == 1:
        digits = key[1:].ljust(16, b"\x00").hex()
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    return key[1:].decode()


_KEY_ORDERS: dict[tuple[str, ...], bool] = {}  # a key order seen → whether it is valid
_NUMBER: set[type] = {float, int}


def _valid_keys(keys: tuple[str, ...]) -> bool:
    if keys not in _KEY_ORDERS:
        found = set(keys)
        _KEY_ORDERS[keys] = len(found) == len(keys) and (
            _SAMPLE_KEYS <= found <= _SAMPLE_KEYS | _OPTIONAL_SAMPLE_KEYS
        )
    return _KEY_ORDERS[keys]


def _fast_block(lines: Sequence[bytes]) -> dict[str, Any] | None:
    """The block's columns when every line is a well-formed sample, else None.

    One ``json.loads`` for the whole block, then type checks per column by the set of
    types found (``bool`` is not a number here, as in :meth:`Sample.from_line`).
    """
    try:
        raws = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        return None
    if not all(type(raw) is dict and _valid_keys(tuple(raw)) for raw in raws):
        return None
    column = {key: [raw[key] for raw in raws] for key in _SAMPLE_KEYS}
    column["intended"] = [raw.get("intended") for raw in raws]
    column["name"] = [raw.get("name") for raw in raws]
    allowed: dict[str, set[type]] = {
        "t": _NUMBER,
        "ms": _NUMBER,
        "status": {int},
        "ok": {bool},
        "err": {type(None), str},
        "rid": {str},
        "intended": _NUMBER | {type(None)},
        "name": {type(None), str},
    }
    if not all({type(value) for value in column[key]} <= allowed[key] for key in allowed):
        return None
    block = _Block()
    block.t, block.ms, block.status, block.ok = (
        column["t"],
        column["ms"],
        column["status"],
        column["ok"],
    )
    block.err, block.rid, block.intended = column["err"], column["rid"], column["intended"]
    block.name = column["name"]
    return block.columns()


def _file_blocks(path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """The columns of ``path``, block by block; a cut-short last line is skipped.

    A block in the locustfile's own layout is read by :func:`parse_block` (vectorised);
    any other block by ``json`` (:func:`_fast_block`), or line by line to name the line
    that is wrong."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return
    with file:
        partial, line_number = b"", 1
        while chunk := file.read(BLOCK_BYTES):
            buffer = partial + chunk
            cut = buffer.rfind(b"\n") + 1
            whole, partial = buffer[:cut], buffer[cut:]
            if not whole:
                continue
            vectorised = parse_block(whole)
            if vectorised is not None:
                line_number += len(vectorised["t"])
                yield vectorised, len(whole)
                continue
            lines = whole.split(b"\n")
            lines.pop()  # b"": the block ends with a newline
            numbered = [(n, line) for n, line in enumerate(lines, line_number) if line.strip()]
            line_number += len(lines)
            if numbered:
                texts = [line for _, line in numbered]
                fast = _fast_block(texts)
                block = fast if fast is not None else _numbered_block(numbered, path)
                yield block, sum(len(line) + 1 for line in texts)
        if partial.strip():
            with contextlib.suppress(LoadError):  # cut short by a kill in mid-write
                last = Sample.from_line(partial.decode(errors="replace"), f"{path}:last")
                tail = _Block()
                tail.add(last.t, last.ms, last.status, last.ok, last.err, last.rid,
                         last.intended, last.name)  # fmt: skip
                yield tail.columns(), len(partial)


def _numbered_block(numbered: Sequence[tuple[int, bytes]], path: Path) -> dict[str, Any]:
    block = _Block()
    for number, line in numbered:
        sample = Sample.from_line(line.decode(), f"{path}:{number}")
        block.add(sample.t, sample.ms, sample.status, sample.ok, sample.err, sample.rid,
                  sample.intended, sample.name)  # fmt: skip
    return block.columns()


_COLUMNS = ("t", "ms", "status", "ok", "intended", "err", "rid", "name")


class _Columns:
    """Growing column buffers: blocks are copied in as they are parsed.

    Nothing small outlives a block (numpy buffers are allocated outside Python's small-object
    heap), so the parsing garbage of every block is freed whole instead of pinning heap
    arenas; and the first block's line length sizes the buffers for all the bytes to come,
    so they rarely grow."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.size = 0
        self.arrays: dict[str, Any] = {}
        self.errors: dict[str, int] = {}
        self.names: dict[str, int] = {}

    def add(self, block: dict[str, Any], block_bytes: int) -> None:
        count = len(block["t"])
        block["err"] = np.array(
            [
                -1 if e is None else self.errors.setdefault(e, len(self.errors))
                for e in block["err"]
            ],
            dtype=np.int32,
        )
        block["name"] = np.array(
            [-1 if n is None else self.names.setdefault(n, len(self.names)) for n in block["name"]],
            dtype=np.int32,
        )
        if not self.arrays:
            per_line = max(1.0, block_bytes / max(count, 1))
            capacity = max(count, int(self.total_bytes / per_line * 1.02) + 64)
            self.arrays = {key: np.empty(capacity, dtype=block[key].dtype) for key in _COLUMNS}
        capacity = self.arrays["t"].size
        if self.size + count > capacity:
            capacity = max(self.size + count, int(capacity * 1.25))
            for key in _COLUMNS:  # one column at a time: the peak is one column's copy
                grown = np.empty(capacity, dtype=self.arrays[key].dtype)
                grown[: self.size] = self.arrays[key][: self.size]
                self.arrays[key] = grown
        if block["rid"].dtype.itemsize > self.arrays["rid"].dtype.itemsize:  # longer ids
            self.arrays["rid"] = self.arrays["rid"].astype(block["rid"].dtype)
        for key in _COLUMNS:
            self.arrays[key][self.size : self.size + count] = block[key]
        self.size += count

    def result(self) -> SampleColumns:
        """The columns sorted by start (stable: file order breaks ties)."""
        if not self.arrays:
            return SampleColumns.from_samples([])
        merged = {key: self.arrays.pop(key)[: self.size] for key in _COLUMNS}
        starts = merged["t"]
        if self.size > 1 and not bool(np.all(starts[1:] >= starts[:-1])):  # several files
            order = np.argsort(starts, kind="stable")
            for key in _COLUMNS:  # one at a time: the peak is one column's copy
                merged[key] = merged[key][order]
        return SampleColumns(errors=tuple(self.errors), names=tuple(self.names), **merged)


def _merge(blocks: Iterable[dict[str, Any]]) -> SampleColumns:
    """Blocks (already in memory) as one set of columns, sorted by start."""
    columns = _Columns(0)
    for block in blocks:
        columns.add(block, 0)
    return columns.result()


def read_sample_columns(paths: Path | str | Sequence[Path | str]) -> SampleColumns:
    """Every sample of ``paths`` (one samples file, or several: one per Locust process),
    merged into columns sorted by start; streamed in blocks of :data:`BLOCK_BYTES`.

    As :func:`read_samples`: a missing file holds no samples, a last line cut short is
    skipped, and a malformed line anywhere else raises :class:`LoadError` naming
    ``file:line``.
    """
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    total = 0
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    columns = _Columns(total)
    for path in files:
        for block, size in _file_blocks(path):
            columns.add(block, size)
    return columns.result()


__all__ = [
    "BLOCK_BYTES",
    "Sample",
    "SampleColumns",
    "SampleTail",
    "as_columns",
    "read_sample_columns",
    "read_samples",
    "rid_key",
    "rid_text",
]
