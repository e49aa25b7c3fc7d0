"""Access-log parsing speed: one pass now, side by side with the base's three passes.

Usage: ``python bench/access_logs.py [REQUESTS] [BASE_COMMIT]`` from the repository root.

Writes a synthetic access directory shaped like a shop run (per request: the ingress
line, frontend's inbound and two outbound lines, and one inbound line at catalog and at
pricing: 6 lines, about 2.6 KB; 2% of the requests fail with 503 UO, 1% retried), then
times, in the same process and round, ``harness.observe.access_logs`` at ``BASE_COMMIT``
(default ``a2e6254``: ``summarize_responses`` + ``request_paths``, three full passes)
and this tree's ``analyze_access_logs`` (one parsing pass, then a byte search for the
chosen requests). Goal (issue 15): at most 20 µs per line. Times are for this shared,
noisy machine: read the ratio.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.journal import PhaseWindow
from harness.load.driver import Sample
from harness.observe.access_logs import analyze_access_logs

T0 = 1_700_000_000.0
SERVICE_OF = {"frontend-0": "frontend", "catalog-0": "catalog", "pricing-0": "pricing"}


def line(direction: str, rid: str, start: float, **fields: object) -> str:
    record = {
        "start": f"{start:.3f}",
        "dir": direction,
        "method": "GET",
        "path": "/product/42",
        "authority": "frontend",
        "status": 200,
        "flags": "-",
        "details": "via_upstream",
        "ms": 3,
        "upstream_ms": "2",
        "attempts": 1,
        "cluster": "outbound|8080||frontend",
        "upstream": "198.18.0.12:15006",
        "downstream": "198.18.0.2:51234",
        "rid": rid,
        "source": "ingress",
    }
    record.update(fields)
    return json.dumps(record, separators=(",", ":"))


def write_logs(directory: Path, requests: int) -> tuple[list[Sample], int]:
    rng = random.Random(15)
    files = {name: [] for name in ("ingress", "frontend-0", "catalog-0", "pricing-0")}
    samples = []
    for i in range(requests):
        rid = f"{rng.getrandbits(128):032x}"
        start = T0 + i * 0.002
        shed = rng.random() < 0.02
        retried = not shed and rng.random() < 0.01
        status = 503 if shed else 200
        flags = "UO" if shed else "-"
        files["ingress"].append(line("ingress", rid, start, status=status))
        files["frontend-0"].append(
            line("inbound", rid, start, status=status, cluster="inbound|8080||")
        )
        files["frontend-0"].append(
            line(
                "outbound",
                rid,
                start,
                status=status,
                flags=flags,
                authority="catalog",
                cluster="outbound|8080||catalog",
                source="frontend",
                attempts=2 if retried else 1,
            )
        )
        files["frontend-0"].append(
            line(
                "outbound",
                rid,
                start,
                authority="pricing",
                cluster="outbound|8080||pricing",
                source="frontend",
            )
        )
        if not shed:
            files["catalog-0"].append(
                line(
                    "inbound",
                    rid,
                    start,
                    authority="catalog",
                    cluster="inbound|8080||",
                    source="frontend",
                )
            )
        files["pricing-0"].append(
            line(
                "inbound",
                rid,
                start,
                authority="pricing",
                cluster="inbound|8080||",
                source="frontend",
            )
        )
        samples.append(
            Sample(
                t=start,
                ms=4.0,
                status=status,
                ok=not shed,
                err=None if not shed else "503",
                rid=rid,
            )
        )
    lines = 0
    for name, content in files.items():
        (directory / f"{name}.jsonl").write_text("\n".join(content) + "\n")
        lines += len(content)
    return samples, lines


def base_module(commit: str):  # type: ignore[no-untyped-def]
    source = subprocess.run(
        ["git", "show", f"{commit}:harness/observe/access_logs.py"],
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-base-")) / "base_access_logs.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("base_access_logs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_access_logs"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    commit = sys.argv[2] if len(sys.argv) > 2 else "a2e6254"
    directory = Path(tempfile.mkdtemp(prefix="bench-access-"))
    samples, lines = write_logs(directory, requests)
    size = sum(p.stat().st_size for p in directory.iterdir())
    phases = [PhaseWindow(name="only", start=T0, end=T0 + requests * 0.002 + 1)]
    base = base_module(commit)

    start = time.perf_counter()  # the floor: reading and decoding every line, nothing else
    for path in sorted(directory.glob("*.jsonl")):
        with path.open("rb") as handle:
            for raw in handle:
                json.loads(raw)
    floor_s = time.perf_counter() - start

    start = time.perf_counter()
    base.summarize_responses(directory, SERVICE_OF)
    old_paths = base.request_paths(directory, samples, phases)
    old_s = time.perf_counter() - start

    start = time.perf_counter()
    found = analyze_access_logs(directory, SERVICE_OF, samples, phases)
    new_s = time.perf_counter() - start

    same = [p.rid for p in old_paths] == [p.rid for p in found.paths] and [
        len(p.hops) for p in old_paths
    ] == [len(p.hops) for p in found.paths]
    print(f"{requests:,} requests, {lines:,} lines, {size / requests / 1000:.2f} KB per request")
    print(
        f"  base {commit} (3 passes): {old_s:6.2f} s  {old_s / lines * 1e6:5.1f} µs/line  "
        f"{old_s / requests * 1e3:.3f} ms/request"
    )
    print(
        f"  this tree (1 pass):     {new_s:6.2f} s  {new_s / lines * 1e6:5.1f} µs/line  "
        f"{new_s / requests * 1e3:.3f} ms/request"
    )
    print(f"  floor (json.loads only): {floor_s:6.2f} s  {floor_s / lines * 1e6:5.1f} µs/line")
    print(
        f"  ratio base/this {old_s / new_s:.2f}x, this/floor {new_s / floor_s:.2f}x, "
        f"same paths chosen: {same}"
    )


if __name__ == "__main__":
    main()
