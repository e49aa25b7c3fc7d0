"""``harness cluster up|down|status`` on the kind path, and kind-config.yaml.

Where kind can create a cluster (Docker with privileged containers) the live test brings one
up; elsewhere it skips with the exact reason :func:`harness.cluster.kind.kind_problem` finds
(on the project's CI machines: no CAP_SYS_RESOURCE, so no privileged container). The other
tests need no Docker: ``--dry-run`` must run nothing (a recording ``kind`` stands in for the
real one to prove it), and where kind cannot run, ``up`` must fail clearly, naming ``--local``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness import toolchain
from harness.cli import app
from harness.cluster import kind
from harness.cluster.istio_install import INGRESS_NODE_PORT
from harness.errors import ExitCode
from harness.toolchain import TOOLCHAIN_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recording_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A FAKE `kind` on $HARNESS_KIND that only records its arguments; returns the log."""
    calls = tmp_path / "kind-calls.jsonl"
    script = tmp_path / "kind"
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("HARNESS_KIND", str(script))
    # The real toolchain (helm and Istio's charts render the plan) stays where it is.
    monkeypatch.setenv(TOOLCHAIN_DIR_ENV, str(toolchain.default_directory()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls


def test_kind_config_at_the_root_is_the_one_cluster_up_uses() -> None:
    text = (ROOT / "kind-config.yaml").read_text()
    assert text == kind.kind_config_yaml()
    config = yaml.safe_load(text)
    (node,) = config["nodes"]
    assert node["image"].startswith("kindest/node:v1.35.")
    assert "@sha256:" in node["image"] and len(node["image"].split("@sha256:")[1]) == 64
    assert node["extraPortMappings"] == [
        {
            "containerPort": INGRESS_NODE_PORT,
            "hostPort": INGRESS_NODE_PORT,
            "listenAddress": "127.0.0.1",
            "protocol": "TCP",
        }
    ]


def test_dry_run_prints_every_command_and_object_and_runs_nothing(recording_kind: Path) -> None:
    result = CliRunner().invoke(app, ["cluster", "up", "--dry-run"])

    assert result.exit_code == 0, result.output
    out = result.output
    assert "kind create cluster --config" in out
    assert out.count("kind load image-archive") == 3
    assert out.count("/bin/helm template ") == 3  # base, istiod, gateway
    documents = [
        d for d in yaml.safe_load_all(out.split("then istiod and")[1].split("\n", 1)[1]) if d
    ]
    kinds = {d["kind"] for d in documents}
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "Service"} <= kinds
    assert "image: harness.local/proxyv2:<digest>" in out
    assert not recording_kind.exists(), "a dry run must not run kind"
    assert not (recording_kind.parent / "cache" / "harness" / "clusters").exists()


def test_up_where_kind_cannot_run_fails_clearly_naming_local(recording_kind: Path) -> None:
    problem = kind.kind_problem()
    if problem is None:
        pytest.skip("kind can create a cluster here: test_kind_live covers `cluster up`")

    result = CliRunner().invoke(app, ["cluster", "up"])

    assert result.exit_code == ExitCode.ERROR
    assert "kind cannot create a cluster here" in result.output
    assert "harness cluster up --local" in result.output
    assert not recording_kind.exists()  # refused before kind ran


def test_down_leaves_a_cluster_the_harness_did_not_make(recording_kind: Path) -> None:
    result = CliRunner().invoke(app, ["cluster", "down"])

    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert not recording_kind.exists()


@pytest.mark.slow
def test_kind_live_cluster_up_is_idempotent_and_down_removes_it() -> None:
    problem = kind.kind_problem()
    if problem is not None:
        pytest.skip(f"kind cannot create a cluster here: {problem}")
    runner = CliRunner()
    try:
        first = runner.invoke(app, ["cluster", "up"])
        assert first.exit_code == 0, first.output
        assert "Istio ready" in first.output
        second = runner.invoke(app, ["cluster", "up"])
        assert second.exit_code == 0, second.output
        assert "exists, reused" in second.output
        status = runner.invoke(app, ["cluster", "status"])
        assert status.exit_code == 0 and "made by the harness: True" in status.output
    finally:
        down = runner.invoke(app, ["cluster", "down"])
    assert down.exit_code == 0, down.output
    state = kind.state_directory() / "state.json"
    assert not state.exists(), json.dumps(str(state))
