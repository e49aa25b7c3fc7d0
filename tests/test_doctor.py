"""`harness doctor`: real checks on this machine (it has every tool after .ci/run), and fake
probes or a stripped PATH for the "missing" paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.doctor import CHECKS, Check, Probe, binary, diagnose
from harness.platforms.local.toxiproxy import TOXIPROXY_INSTALL

# What .ci/run installs: everything but Docker and kind.
INSTALLED = (
    "envoy",
    "locust",
    "user namespaces",
    "nft",
    "toxiproxy",
    "chromium",
    "go",
    "control-plane toolchain",
)


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_real_machine_can_run_the_local_envoy_path() -> None:
    """This machine has what .ci/run installs: every local check passes, exit 0."""
    done = doctor("--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] is True and report["exit_code"] == 0
    findings = {finding["name"]: finding for finding in report["findings"]}
    assert set(findings) == {check.name for check in CHECKS}
    for name in INSTALLED:
        assert findings[name]["ok"], findings[name]
    assert findings["envoy"]["detail"].startswith("Envoy 1.")
    assert "works in a user+net namespace" in findings["nft"]["detail"]
    assert findings["toxiproxy"]["detail"].startswith("toxiproxy-server version")
    assert findings["go"]["detail"].startswith("go1.")
    assert "pinned artifacts installed in" in findings["control-plane toolchain"]["detail"]
    for finding in report["findings"]:
        assert finding["ok"] or finding["fix"], f"{finding['name']} is missing without a fix"


def test_real_docker_check_answers_without_starting_anything() -> None:
    """Docker may or may not run here; either way the answer comes with a reason, and a
    missing daemon comes with the command that fixes it."""
    (finding,) = [f for f in diagnose([c for c in CHECKS if c.name == "docker daemon"]).findings]
    if finding.ok:
        assert finding.detail.startswith("Docker ")
    else:
        assert finding.detail and "docker" in finding.fix


def test_real_text_output_names_every_check() -> None:
    done = doctor()
    assert done.returncode == 0, done.stdout + done.stderr
    for check in CHECKS:
        assert f"{check.name}: " in done.stdout
    assert done.stdout.rstrip().endswith("the local --mesh envoy path can run here")


def fake(name: str, ok: bool, *, required: bool = False) -> Check:
    return Check(name, f"what {name} enables", required, lambda: Probe(ok, f"{name} detail", ""))


def test_fake_probes_a_missing_required_piece_makes_the_machine_not_ready() -> None:
    missing = Check("envoy", "sidecars", True, lambda: Probe(False, "gone", "pip install envoy"))
    diagnosis = diagnose([fake("a", True, required=True), missing, fake("b", False)])
    assert not diagnosis.ready and diagnosis.exit_code == 1
    report = json.loads(diagnosis.to_json())
    assert report["ready"] is False
    assert report["findings"][1] == {
        "name": "envoy",
        "needed_for": "sidecars",
        "required": True,
        "ok": False,
        "detail": "gone",
        "fix": "pip install envoy",
    }


def test_fake_probes_optional_pieces_missing_still_ready() -> None:
    diagnosis = diagnose([fake("a", True, required=True), fake("kind", False)])
    assert diagnosis.ready and diagnosis.exit_code == 0


def test_fake_probe_that_raises_is_a_finding_not_a_crash() -> None:
    def broken() -> Probe:
        raise RuntimeError("boom")

    (finding,) = diagnose([Check("broken", "x", True, broken)]).findings
    assert not finding.ok and "boom" in finding.detail
    assert not diagnose([Check("broken", "x", True, broken)]).ready


def test_missing_binary_gives_its_fix() -> None:
    probe = binary("harness-no-such-tool", ["--version"], "apt-get install no-such-tool")()
    assert probe == Probe(
        False, "'harness-no-such-tool' is not on PATH", "apt-get install no-such-tool"
    )


def test_binary_that_fails_its_version_command_is_missing(tmp_path: Path) -> None:
    tool = tmp_path / "broken-tool"
    tool.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    tool.chmod(0o755)
    probe = binary(str(tool), ["--version"], "reinstall it")()
    assert not probe.ok and "cannot start" in probe.detail and probe.fix == "reinstall it"


def test_stripped_path_reports_every_system_tool_with_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine without unshare, chromium, go, docker, kind, toxiproxy or the control-plane
    toolchain (an empty PATH, no Go bin directories, an empty toolchain directory): each is
    missing, with the command that installs it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOBIN", raising=False)
    monkeypatch.delenv("HARNESS_TOXIPROXY", raising=False)
    monkeypatch.delenv("HARNESS_GO", raising=False)
    monkeypatch.setenv("HARNESS_TOOLCHAIN_DIR", str(tmp_path / "no-toolchain"))
    names = {"user namespaces", "chromium", "docker daemon", "kind", "toxiproxy", "go"}
    names.add("control-plane toolchain")
    findings = {f.name: f for f in diagnose([c for c in CHECKS if c.name in names]).findings}
    assert {name: f.ok for name, f in findings.items()} == dict.fromkeys(names, False)
    assert findings["user namespaces"].fix == "apt-get install util-linux"
    assert findings["chromium"].fix.startswith("apt-get install chromium")
    assert findings["docker daemon"].fix.startswith("apt-get install docker.io")
    assert findings["kind"].fix.startswith("go install sigs.k8s.io/kind@")
    assert findings["toxiproxy"].fix == TOXIPROXY_INSTALL
    assert "install Go 1.26+" in findings["go"].fix
    assert findings["control-plane toolchain"].fix.startswith("harness toolchain install")
    assert "pilot-discovery (missing)" in findings["control-plane toolchain"].detail


def test_fake_status_without_capabilities_refuses_privileged_containers(tmp_path: Path) -> None:
    from harness.doctor import _privileged_containers

    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t000001fffeffffff\n")  # no CAP_SYS_RESOURCE (bit 24)
    probe = _privileged_containers(status)
    assert not probe.ok and "CAP_SYS_RESOURCE" in probe.detail and probe.fix
    status.write_text("CapBnd:\t000001ffffffffff\n")
    assert _privileged_containers(status).ok
