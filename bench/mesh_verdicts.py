"""Verdict agreement: every shipped scenario under ``--mesh envoy`` and ``--mesh istio``.

Usage: ``python bench/mesh_verdicts.py [SCENARIO ...] [--out FILE]`` from the repository root
(default: every file in ``scenarios/``). Runs each scenario once under each mesh, one run at
a time (a run under ``--mesh istio`` brings up its own etcd, kube-apiserver and istiod), and
prints a Markdown table: per scenario and mesh the exit code, the run's verdict and the
SLO × phase pairs that did not pass; then whether the run verdicts agree and which
SLO × phase verdicts differ. ``--out`` also writes the rows as JSON; ``--table FILE``
prints the table of such a file again.

About 20 runs × 50 s on this machine: too long for CI, which runs the differential config
test (tests/test_fidelity.py) on every change and the pairs that differ most in a slow test
(tests/test_mesh_verdicts.py). Record the table in docs/istio-semantics.md with the date and
the load average.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.platforms.local.platform import Mesh
from harness.runner import RunOptions, run_scenario
from harness.scenario.loader import load_scenario
from harness.slo.judge import verdict_of

REPO = Path(__file__).resolve().parent.parent


def run_once(path: Path, mesh: Mesh, reports: Path) -> dict[str, Any]:
    began = time.monotonic()
    result = run_scenario(
        load_scenario(path),
        options=RunOptions(reports_dir=reports, mesh=mesh, handle_signals=False),
    )
    journal = result.journal
    verdict, code = verdict_of(journal)
    return {
        "scenario": path.stem,
        "mesh": mesh.value,
        "exit": int(code),
        "verdict": verdict,
        "slos": {f"{r.slo}@{r.phase}": r.verdict for r in journal.slos},
        "error": (journal.error or "")[:160],
        "seconds": round(time.monotonic() - began, 1),
    }


def slo_differences(envoy: dict[str, Any], istio: dict[str, Any]) -> list[str]:
    """The SLO × phase pairs whose verdicts differ between the meshes."""
    keys = sorted(set(envoy["slos"]) | set(istio["slos"]))
    return [
        f"{key}: {envoy['slos'].get(key, '-')} / {istio['slos'].get(key, '-')}"
        for key in keys
        if envoy["slos"].get(key) != istio["slos"].get(key)
    ]


def cell(row: dict[str, Any]) -> str:
    """Exit code, run verdict, and the SLO × phase pairs that did not pass."""
    text = f"exit {row['exit']} {row['verdict']}"
    others = [f"{k} {v}" for k, v in sorted(row["slos"].items()) if v != "PASS"]
    if others:
        text += f" ({', '.join(others)})"
    if row["error"] and not row["slos"]:
        text += f": {row['error']}"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | --mesh envoy | --mesh istio | run verdicts agree | SLO × phase differing |",
        "|---|---|---|---|---|",
    ]
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["scenario"], {})[row["mesh"]] = row
    for name, pair in by_name.items():
        envoy, istio = pair.get("envoy"), pair.get("istio")
        if envoy is None or istio is None:
            continue
        same = "yes" if envoy["verdict"] == istio["verdict"] else "**no**"
        differing = "; ".join(slo_differences(envoy, istio)) if istio["slos"] else "-"
        lines.append(f"| {name} | {cell(envoy)} | {cell(istio)} | {same} | {differing or 'none'} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--table"] and len(argv) == 2:
        return render(Path(argv[1]))
    out: Path | None = None
    if "--out" in argv:
        at = argv.index("--out")
        out = Path(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    paths = [Path(a) for a in argv] or sorted((REPO / "scenarios").glob("*.yaml"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mesh-verdicts-") as reports:
        for path in paths:
            for mesh in (Mesh.ENVOY, Mesh.ISTIO):
                row = run_once(path, mesh, Path(reports))
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table(rows))
    if out is not None:
        out.write_text(json.dumps(rows, indent=1))
    return 0


def render(path: Path) -> int:
    """``--table FILE``: print the table of rows a previous ``--out FILE`` wrote."""
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
