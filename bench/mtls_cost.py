"""The cost of mutual TLS between the proxies under ``--mesh envoy``: bring-up and request
latency with mTLS (the default, as istiod's auto-mTLS) and without (plain HTTP between
proxies, ``LocalDeployment.mtls = False``), side by side in one run.

Usage: ``python bench/mtls_cost.py [ROUNDS] [REQUESTS]`` from the repository root (default 3
rounds, 300 requests).

Each round, alternating mTLS on and off, a fresh Python process deploys the shop app as
``scenarios/retries-mask-transient-errors.yaml`` has it (7 instances, 8 Envoys, in the run's
namespaces; the app seeded, so both sides draw the same service times) and measures:

* ``up``: ``deploy()`` until a request has crossed the mesh (includes making the run CA and
  8 workload certificates when mTLS is on);
* request latency: ``REQUESTS`` sequential GETs to the ingress from inside the sandbox over
  one keep-alive connection (4 proxy hops, 3 of them sidecar → sidecar with mTLS on); median
  and p99 in ms, and the TLS handshakes the sidecars counted.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import LocalDeployment, Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario import load_scenario_text

PROBE = '''
import http.client, json, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection(host, port, timeout=10)
took = []
for i in range(count):
    start = time.perf_counter()
    conn.request("GET", f"/product/{i}")
    response = conn.getresponse()
    response.read()
    took.append((time.perf_counter() - start) * 1000)
    assert response.status in (200, 502), response.status
print(json.dumps(took))
'''

text, run_dir, mtls, count = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "on", sys.argv[4]
LocalDeployment.mtls = mtls
LocalDeployment.app_seed = 7
scenario = load_scenario_text(text)
begun = time.monotonic()
with LocalPlatform(Isolation.NAMESPACE, Mesh.ENVOY).deploy(scenario, run_dir) as deployment:
    up = time.monotonic() - begun
    host, port = deployment.ingress.host, str(deployment.ingress.port)
    code, out, err = deployment.sandbox.run(
        [sys.executable, "-c", PROBE, host, port, count], timeout=300
    )
    assert code == 0, err
    took = json.loads(out)
    handshakes = sum(
        value
        for name in deployment.proxy_names()
        for key, value in deployment.admin(name).counters().items()
        if key.endswith("ssl.handshake")
    )
print(json.dumps({"up": up, "took": took, "handshakes": handshakes}))
"""

SHOP = (ROOT / "scenarios" / "retries-mask-transient-errors.yaml").read_text()


def one(mtls: str, run_dir: Path, requests: int) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, SHOP, str(run_dir), mtls, str(requests)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    if done.returncode:
        raise SystemExit(f"mTLS {mtls} failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    work = Path(tempfile.mkdtemp(prefix="bench-mtls-"))
    ups: dict[str, list[float]] = {"off": [], "on": []}
    took: dict[str, list[float]] = {"off": [], "on": []}
    print(f"load average at start: {os.getloadavg()}")
    try:
        for index in range(rounds):
            for mtls in ("off", "on"):
                result = one(mtls, work / f"{index}-{mtls}", requests)
                up, times = float(result["up"]), list(result["took"])  # type: ignore[call-overload]
                ups[mtls].append(up)
                took[mtls].extend(times)
                print(
                    f"round {index + 1} mTLS {mtls:3s}: up {up:5.2f} s, median "
                    f"{statistics.median(times):5.2f} ms, p99 {p99(times):6.2f} ms, "
                    f"handshakes {result['handshakes']} (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n| measure (median of {rounds} rounds / all requests) | mTLS off | mTLS on | on/off |")
    print("|---|---|---|---|")
    rows = [
        ("bring-up", statistics.median(ups["off"]), statistics.median(ups["on"]), "s"),
        ("request, median", statistics.median(took["off"]), statistics.median(took["on"]), "ms"),
        ("request, p99", p99(took["off"]), p99(took["on"]), "ms"),
    ]
    for name, off, on, unit in rows:
        print(f"| {name} | {off:.2f} {unit} | {on:.2f} {unit} | {on / off:.2f} |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
