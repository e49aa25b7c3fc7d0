"""The vectorised reader of the locustfile's sample lines (``harness.load.sample_lines``).

Its contract: for any block of bytes it returns either None (the caller then reads the
block with ``json``, line by line where needed) or exactly the columns the line-by-line
reader (:meth:`Sample.from_line`) gives, and never a result for a block that reader
refuses. The properties below check that contract against the line-by-line reader on
generated lines in the locustfile's layout, on other number forms, and on every kind of
one-byte damage; and that the locustfile's real layout is taken by the fast path.
"""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from harness.errors import LoadError
from harness.load.sample_lines import parse_block, rid_key
from harness.load.samples import Sample

T0 = 1_764_623_456.0


def line(t: str, ms: str, status: str, ok: str, err: str, rid: str, intended: str) -> bytes:
    """A line in the locustfile's layout, each field's JSON text given as is."""
    return (
        f'{{"t":{t},"ms":{ms},"status":{status},"ok":{ok},"err":{err},'
        f'"rid":{rid},"intended":{intended}}}\n'
    ).encode()


def locustfile_line(sample: Sample) -> bytes:
    """As ``locustfile.sample_line`` formats it (checked against the real one in
    ``test_load_driver``: the locustfile cannot be imported outside Locust)."""
    return line(
        f"{sample.t:.6f}",
        f"{sample.ms:.3f}",
        str(sample.status),
        "true" if sample.err is None else "false",
        "null" if sample.err is None else json.dumps(sample.err),
        json.dumps(sample.rid),
        "null" if sample.intended is None else f"{sample.intended:.6f}",
    )


def reference(block: bytes) -> list[Sample] | None:
    """What the line-by-line reader makes of the block (None: it refuses a line)."""
    try:
        return [
            Sample.from_line(text.decode(), f"block:{number}")
            for number, text in enumerate(block.split(b"\n")[:-1], 1)
        ]
    except (LoadError, UnicodeDecodeError):
        return None


def as_samples(columns: dict[str, object]) -> list[Sample]:
    t, ms, status, ok, intended, rid = (
        np.asarray(columns[key]) for key in ("t", "ms", "status", "ok", "intended", "rid")
    )
    errors = columns["err"]
    assert isinstance(errors, list)
    assert t.dtype == ms.dtype == intended.dtype == np.float64 and status.dtype == np.int32
    return [
        Sample(
            t=float(t[i]),
            ms=float(ms[i]),
            status=int(status[i]),
            ok=bool(ok[i]),
            err=errors[i],
            rid=_rid(rid[i]),
            intended=None if math.isnan(intended[i]) else float(intended[i]),
        )
        for i in range(t.size)
    ]


def _rid(key: bytes) -> str:
    from harness.load.samples import rid_text

    return rid_text(key)


def agrees(block: bytes) -> bool:
    """The contract: None, or exactly the line-by-line reader's samples."""
    fast = parse_block(block)
    if fast is None:
        return True
    expected = reference(block)
    assert expected is not None, f"the fast path read a block the reader refuses: {block!r}"
    assert as_samples(fast) == expected
    return False


uuids = st.integers(0, 16**12 - 1).map(lambda n: f"5f0c2a1e-9b3d-4c6e-8f00-{n:012x}")
rids = uuids | st.text(min_size=0, max_size=40)
errors = st.none() | st.sampled_from(["HTTP 503", "TimeoutError", "no response"]) | st.text()
samples = st.builds(
    Sample,
    t=st.floats(T0, T0 + 86_400),
    ms=st.floats(0, 60_000),
    status=st.sampled_from([0, 200, 404, 503]),
    ok=st.booleans(),
    err=errors,
    rid=rids,
    intended=st.none() | st.floats(T0, T0 + 86_400),
)


def rounded(sample: Sample) -> Sample:
    """The sample as written and read back: to the microsecond, ``ok`` from ``err``."""
    return Sample(
        t=float(f"{sample.t:.6f}"),
        ms=float(f"{sample.ms:.3f}"),
        status=sample.status,
        ok=sample.err is None,
        err=sample.err,
        rid=sample.rid,
        intended=None if sample.intended is None else float(f"{sample.intended:.6f}"),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(samples, min_size=1, max_size=40))
def test_the_locustfiles_layout_is_read_vectorised_and_exactly(batch: list[Sample]) -> None:
    block = b"".join(locustfile_line(sample) for sample in batch)
    fast = parse_block(block)
    if all(sample.rid.isascii() and "\\" not in json.dumps(sample.rid) for sample in batch):
        assert fast is not None  # the layout the locustfile writes takes the fast path
    if fast is not None:
        assert as_samples(fast) == [rounded(sample) for sample in batch] == reference(block)


def number_texts() -> st.SearchStrategy[str]:
    """JSON numbers in every form, and texts that are not JSON numbers."""
    valid = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(-(10**20), 10**20).map(str),
        st.floats(0, 1e6).map(lambda x: f"{x:.3f}"),
        st.floats(0, 1e6).map(lambda x: f"{x:.6e}"),
    )
    broken = st.sampled_from(["01", "1.", ".5", "-", "+1", "1e", "0x1", "1..2", "NaN", "", "1 "])
    return valid | broken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(number_texts(), number_texts(), number_texts(), number_texts()),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 3),
)
@example([("1.5", "2.25", "200", "1.25")] * 9 + [("1", "2", "200.0", "null")], 0)
@example([("1764623456.123456", "8.761", "200", "null")] * 20 + [("-1.0", "1e3", "0", "1")], 0)
def test_any_number_form_is_read_as_json_reads_it_or_left_to_it(
    fields: list[tuple[str, str, str, str]], _: int
) -> None:
    block = b"".join(
        line(t, ms, status, "true", "null", '"r"', intended) for t, ms, status, intended in fields
    )
    agrees(block)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(samples, min_size=1, max_size=8), st.data())
def test_one_damaged_byte_is_never_read_as_something_else(
    batch: list[Sample], data: st.DataObject
) -> None:
    block = bytearray(b"".join(locustfile_line(sample) for sample in batch))
    where = data.draw(st.integers(0, len(block) - 1))
    byte = data.draw(st.sampled_from(list(b'{}[]":,.-+eE0123456789 \\\nntrufalsx\x00\xff')))
    assume(block[where] != byte)
    block[where] = byte
    if not block.endswith(b"\n"):
        block += b"\n"
    agrees(bytes(block))


def test_other_layouts_are_left_to_json() -> None:
    sample = Sample(t=T0, ms=1.5, status=200, ok=True, err=None, rid="r", intended=None)
    written = locustfile_line(sample)
    assert parse_block(written) is not None
    for other in (
        json.dumps(json.loads(written)).encode() + b"\n",  # spaces after separators
        written.replace(b'"intended":null}', b'"intended":null,"name":"cart"}'),  # a name
        written + b"\n",  # a blank line
        written.rstrip(b"\n"),  # no newline at the end
        written.replace(b'"r"', b'"r\\u00e9"'),  # an escape in the request id
        written.replace(b"\n", b"\r\n"),
        written.replace(b'"status":200', b'"status":'),  # an empty number
        written.replace(b'"ms":1.500', b'"ms":'),
        b"",
    ):
        assert parse_block(other) is None, other


def test_request_ids_are_stored_as_the_reader_stores_them() -> None:
    rids = ["5f0c2a1e-9b3d-4c6e-8f00-00000000002a", "", "rid-7", "x" * 80, "ünï"]
    block = b"".join(
        line("1.0", "2.0", "200", "true", "null", json.dumps(rid, ensure_ascii=False), "null")
        for rid in rids
    )
    fast = parse_block(block)
    assert fast is not None
    stored = np.array([rid_key(rid) for rid in rids])  # as numpy keeps them (no trailing NULs)
    assert np.asarray(fast["rid"]).tolist() == stored.tolist()
    assert [s.rid for s in as_samples(fast)] == rids
