"""The toolchain installer's logic: pins, manifest, idempotence, missing Go, failed builds.

A real build takes about 20 CPU-minutes, so these tests drive the installer with a fake
``go`` (tests/fake_go.py) that writes placeholder binaries; the real build is exercised by
``.ci/run`` (``harness toolchain install``) and the ``controlplane`` tests that use it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from harness import toolchain
from harness.errors import ExitCode, ToolchainError, ToolMissingError

FAKE_GO = Path(__file__).resolve().parent / "fake_go.py"
PINNED = {
    "pilot-discovery",
    "pilot-agent",
    "envoy_bootstrap_tmpl.json",
    "crd-all.gen.yaml",
    *toolchain.KUBE_COMMANDS,
    "etcd",
    "helm",
    *toolchain.ISTIO_CHARTS,
}


@pytest.fixture
def fake_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `go` on $HARNESS_GO; returns the file its calls are logged to."""
    script = tmp_path / "go"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_GO}" "$@"\n')
    script.chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("HARNESS_GO", str(script))
    monkeypatch.setenv("FAKE_GO_CALLS", str(calls))
    monkeypatch.setenv("FAKE_GO_MODCACHE", str(tmp_path / "modcache"))
    monkeypatch.setenv(toolchain.TOOLCHAIN_DIR_ENV, str(tmp_path / "toolchain"))
    return calls


def go_calls(calls: Path) -> list[list[str]]:
    if not calls.exists():
        return []
    return [json.loads(line)["args"] for line in calls.read_text().splitlines()]


def test_fake_go_install_builds_every_pin_and_records_versions_and_hashes(
    fake_go: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    result = toolchain.install(log=lines.append)

    directory = tmp_path / "toolchain"
    assert result.made == ["istio", "kubernetes", "etcd", "helm"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == PINNED
    assert manifest["go_version"] == "go1.26.8"
    for name, record in manifest["artifacts"].items():
        path = Path(record["path"])
        path = path if path.is_absolute() else directory / path
        assert toolchain.sha256_of(path) == record["sha256"], name
    assert manifest["artifacts"]["pilot-discovery"]["version"] == toolchain.ISTIO_VERSION
    assert manifest["artifacts"]["kube-apiserver"]["version"] == toolchain.KUBERNETES_VERSION
    assert manifest["artifacts"]["etcd"]["version"] == toolchain.ETCD_VERSION
    assert (directory / "istio" / "envoy_bootstrap_tmpl.json").read_text() == '{"node": {}}\n'
    # Istio: the same single `go install` of both commands that warms Go's build cache.
    installs = [args for args in go_calls(fake_go) if args[0] == "install"]
    assert installs == [
        ["install"]
        + [
            f"istio.io/istio/pilot/cmd/{c}@{toolchain.ISTIO_VERSION}"
            for c in toolchain.ISTIO_COMMANDS
        ],
        ["install", f"helm.sh/helm/v3/cmd/helm@{toolchain.HELM_VERSION}"],
    ]
    # The charts: packed from the istio module, byte-identical when packed again.
    chart = directory / "istio" / "charts" / "chart-istiod.tgz"
    with tarfile.open(chart) as tar:
        assert tar.getnames() == ["istio-discovery", "istio-discovery/Chart.yaml"]
    again = tmp_path / "again.tgz"
    toolchain.pack_chart(
        tmp_path
        / "modcache"
        / f"istio.io/istio@{toolchain.ISTIO_VERSION}"
        / "manifests/charts/istio-control/istio-discovery",
        again,
    )
    assert again.read_bytes() == chart.read_bytes()
    # Progress: one line per component, and where the manifest went.
    assert any(line.startswith("kubernetes v1.37.2: making kube-apiserver") for line in lines)
    assert lines[-1] == f"manifest: {directory / 'manifest.json'}"


def test_fake_go_kube_module_replaces_each_staging_module_with_its_published_version(
    fake_go: Path, tmp_path: Path
) -> None:
    toolchain.install()

    go_mod = (tmp_path / "toolchain" / "kube" / "go.mod").read_text()
    assert "require k8s.io/kubernetes v1.37.2" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.37.2" in go_mod
    assert "\tk8s.io/apiserver => k8s.io/apiserver v0.37.2" in go_mod
    assert "godebug default=go1.26" in go_mod
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver" in go_mod
    assert "./staging" not in go_mod
    # Stamped like a release build, or /version would say v0.0.0-master.
    (build,) = [args for args in go_calls(fake_go) if args[0] == "build"]
    assert "-X k8s.io/component-base/version.gitVersion=v1.37.2" in build[1]
    assert "-X k8s.io/client-go/pkg/version.gitMinor=37" in build[1]
    assert "-X k8s.io/component-base/version.buildDate=2026-10-27T12:01:04Z" in build[1]


def test_fake_go_second_install_does_nothing_and_says_so(fake_go: Path) -> None:
    toolchain.install()
    before = go_calls(fake_go)

    lines: list[str] = []
    result = toolchain.install(log=lines.append)

    assert result.made == []
    assert result.up_to_date == ["istio", "kubernetes", "etcd", "helm"]
    assert go_calls(fake_go) == before  # not even `go env`
    assert "nothing to do" in lines[-1]


def test_fake_go_a_changed_binary_is_rebuilt_and_nothing_else(
    fake_go: Path, tmp_path: Path
) -> None:
    toolchain.install()
    (tmp_path / "toolchain" / "bin" / "kube-apiserver").write_text("tampered\n")
    fake_go.unlink()

    result = toolchain.install()

    assert result.made == ["kubernetes"]
    assert [args[0] for args in go_calls(fake_go)] == ["env", "mod", "build"]
    assert all(row.state == "installed" for row in toolchain.status())


def test_fake_go_a_failed_build_quotes_the_compiler_and_keeps_the_finished_steps(
    fake_go: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_FAIL", "build")

    with pytest.raises(ToolchainError, match="undefined: app") as caught:
        toolchain.install()

    assert "kubernetes" in str(caught.value) and "exit 1" in str(caught.value)
    states = {row.name: row.state for row in toolchain.status()}
    assert states["pilot-discovery"] == "installed"  # the istio step finished first
    assert states["kube-apiserver"] == "missing"


def test_an_old_go_is_refused_with_the_version_needed(
    fake_go: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_GO_VERSION", "go1.22.4")

    with pytest.raises(ToolMissingError, match=r"go1\.22\.4; the toolchain needs Go 1\.26"):
        toolchain.install()


def harness_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_missing_go_exits_2_saying_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in {"HARNESS_GO", "PATH"}}
    env.update(PATH=str(empty), HARNESS_TOOLCHAIN_DIR=str(tmp_path / "toolchain"))

    done = harness_cli("toolchain", "install", env=env)

    assert done.returncode == ExitCode.ERROR, done.stderr
    assert "`go` is not on PATH" in done.stderr
    assert "Go 1.26 or newer" in done.stderr
    assert not (tmp_path / "toolchain" / "manifest.json").exists()


def test_fake_go_status_lists_versions_and_hashes_and_exits_by_completeness(
    fake_go: Path, tmp_path: Path
) -> None:
    env = dict(os.environ)
    missing = harness_cli("toolchain", "status", env=env)
    assert missing.returncode == ExitCode.FAILED
    assert "missing" in missing.stdout and "harness toolchain install" in missing.stdout

    installed = toolchain.install()
    done = harness_cli("toolchain", "status", env=env)

    assert done.returncode == ExitCode.PASSED, done.stdout
    apiserver = installed.manifest.artifacts["kube-apiserver"]
    row = next(line for line in done.stdout.splitlines() if "kube-apiserver" in line)
    assert "v1.37.2" in row and f"sha256:{apiserver.sha256}" in row and "installed" in row


def test_a_toolchain_that_is_not_installed_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError, match="run `harness toolchain install`"):
        toolchain.installed(tmp_path / "nothing-here")


def test_kube_go_mod_refuses_a_layout_without_staging_replaces() -> None:
    with pytest.raises(ToolchainError, match=r"replaces no \./staging modules"):
        toolchain.kube_go_mod("module k8s.io/kubernetes\n\ngo 1.26.0\n", "v1.37.2", ("x",))
