"""Bring-up of the local deployment (``--mesh envoy``): the shop app and 40 instances,
this tree against a base commit, side by side in one run.

Usage: ``python bench/bringup.py [ROUNDS] [BASE_COMMIT]`` from the repository root (default
3 rounds, base ``e2cfa42``: processes spawned one after the other, readiness polled one
process at a time).

Each round, alternating base and this tree, deploys (in the run's namespaces, no load):

* ``shop``: the shop app as ``scenarios/retries-mask-transient-errors.yaml`` has it
  (frontend, catalog x3, inventory x2, pricing: 7 instances, 8 Envoys);
* ``40``: every service at 10 replicas (40 instances, 41 Envoys, 81 processes);

each in a fresh Python process (imports not counted: the clock starts at ``deploy()``), until
a request has crossed the mesh from the ingress, then tears it down. Goal (issue 15):
bring-up of 40 instances within 5 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
from harness.platforms.local.deploy import LocalPlatform
from harness.platforms.local.platform import Mesh
from harness.platforms.local.sandbox import Isolation
from harness.scenario import load_scenario_text

text, run_dir = sys.argv[1], Path(sys.argv[2])
scenario = load_scenario_text(text)
begun = time.monotonic()
with LocalPlatform(Isolation.NAMESPACE, Mesh.ENVOY).deploy(scenario, run_dir) as deployment:
    up = time.monotonic() - begun
    count = len(deployment.instances)
    closing = time.monotonic()
down = time.monotonic() - closing
print(json.dumps({"up": up, "down": down, "instances": count}))
"""

SHOP = (ROOT / "scenarios" / "retries-mask-transient-errors.yaml").read_text()
FORTY = SHOP.replace(
    "replicas: {catalog: 3, inventory: 2}",
    "replicas: {frontend: 10, catalog: 10, inventory: 10, pricing: 10}",
)


def base_tree(commit: str) -> Path:
    archive = subprocess.run(
        ["git", "archive", commit, "harness"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="bench-bringup-base-"))
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def bring_up(tree: Path, scenario: str, run_dir: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(  # cwd: "-c" puts it first on sys.path
        [sys.executable, "-c", CHILD, scenario, str(run_dir)],
        env=env,
        cwd=tree,
        capture_output=True,
        timeout=180,
    )
    if done.returncode:
        raise SystemExit(f"bring-up with {tree} failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    commit = sys.argv[2] if len(sys.argv) > 2 else "e2cfa42"
    base = base_tree(commit)
    work = Path(tempfile.mkdtemp(prefix="bench-bringup-"))
    trees = {f"base {commit}": base, "this tree": ROOT}
    times: dict[tuple[str, str], list[float]] = {}
    print(f"load average at start: {os.getloadavg()}")
    try:
        for index in range(rounds):
            for name, scenario in (("shop", SHOP), ("40", FORTY)):
                for label, tree in trees.items():
                    run_dir = work / f"{index}-{name}-{label.split()[0]}"
                    result = bring_up(tree, scenario, run_dir)
                    times.setdefault((name, label), []).append(result["up"])
                    print(
                        f"round {index + 1} {name:4s} {label:14s} {result['instances']:2.0f} "
                        f"instances: up {result['up']:5.2f} s, down {result['down']:4.2f} s "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n| deployment | base {commit} (median of {rounds}) | this tree | ratio |")
    print("|---|---|---|---|")
    for name in ("shop", "40"):
        old = statistics.median(times[(name, f"base {commit}")])
        new = statistics.median(times[(name, "this tree")])
        print(f"| {name} | {old:.2f} s | {new:.2f} s | {old / new:.2f}x |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
