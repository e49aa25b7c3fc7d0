"""A real single-node Kubernetes cluster on this machine: ``harness cluster up --local``.

Where kind cannot start (no privileged containers), the harness brings up the cluster
itself from the pinned toolchain (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubelet, kube-proxy) and Debian's containerd, runc and CNI plugins, inside a
network + mount namespace pair it makes (:mod:`harness.cluster.namespaces`). Pods get
addresses from 198.18.0.0/24 on a bridge inside that namespace, reachable only there; the
host reaches the API server and the ingress NodePort through a forwarder on host loopback
(:mod:`harness.cluster.forwarder`).

Usage::

    from harness.cluster import local

    cluster = local.up(sandbox_image="harness.local/pause:0123abcd4567", images=[pause_tar])
    local.load_image(cluster, app_tar)          # ctr -n k8s.io images import
    # kubectl --kubeconfig cluster.kubeconfig ...; pods use imagePullPolicy: Never
    local.down()                                 # every process, mount, namespace, file

Every process is detached (it outlives ``up``) and recorded in ``state.json`` with its start
time; ``down`` stops exactly those, then every process still inside the node's mount
namespace (containerd's shims) and their descendants (the containers), then unmounts the
namespace files, and removes the state directory.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from harness.cluster import components, dns
from harness.cluster.namespaces import (
    NodeNamespaces,
    alive,
    descendants,
    members_of_mount_namespace,
    spawn_detached,
    stop_processes,
    tail,
)
from harness.cluster.node import (
    BRIDGE,
    KUBELET_ROOT,
    NODE_IP,
    NODE_NAME,
    NODE_RUN,
    POD_CIDR,
    NodePaths,
)
from harness.cluster.state import (
    CLUSTER_DIR_ENV,
    DEFAULT_NAME,
    ClusterState,
    ProcessRecord,
    state_directory,
)
from harness.controlplane.kube import SERVICE_CIDR, _client, _close
from harness.controlplane.process import http_probe
from harness.errors import ClusterError
from harness.ports import free_port
from harness.toolchain import Toolchain, installed

__all__ = [
    "DEFAULT_SANDBOX_IMAGE",
    "INGRESS_NODE_PORT",
    "ClusterStatus",
    "LocalCluster",
    "down",
    "load_image",
    "status",
    "up",
]

INGRESS_NODE_PORT = 30080  # kind-config.yaml maps the same port
DEFAULT_SANDBOX_IMAGE = "harness.local/pause:latest"
READY_TIMEOUT_S = 300.0  # a cold start on a loaded 2-core machine
POLL_S = 0.5
IMPORT_TIMEOUT_S = 600.0  # hundreds of MB (the sidecar image) on a loaded machine
Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class LocalCluster:
    """A running local cluster, as its ``state.json`` records it."""

    state: ClusterState

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def kubeconfig(self) -> Path:
        return Path(self.state.kubeconfig)

    @property
    def namespaces(self) -> NodeNamespaces:
        return NodeNamespaces(self.directory / "ns")

    def api_client(self) -> kubernetes.client.ApiClient:
        """An admin client through the host forwarder (close it when done)."""
        paths = NodePaths(self.directory)
        return _client(
            self.state.server, paths.pki / "apiserver-ca.crt", components.admin_token(paths)
        )

    def in_node(self, argv: Sequence[str], what: str = "command in the node") -> str:
        """Run a short command inside the node's namespaces (e.g. ``curl`` a pod IP)."""
        return self.namespaces.run(argv, what)


@dataclass(frozen=True)
class ClusterStatus:
    """What :func:`status` found."""

    directory: Path
    exists: bool
    processes: dict[str, bool]  # name → still the recorded process
    api_ready: bool
    state: ClusterState | None

    @property
    def healthy(self) -> bool:
        return self.exists and self.api_ready and all(self.processes.values())

    def lines(self) -> list[str]:
        """A human summary (``harness cluster status``)."""
        if self.state is None:
            return [f"no local cluster in {self.directory}"]
        state = self.state
        condition = "up" if self.healthy else "DEGRADED (run `harness cluster down`, then up)"
        lines = [
            f"cluster {state.name}: {condition}",
            f"  kubeconfig {state.kubeconfig} (context {state.context}, server {state.server})",
            f"  ingress    127.0.0.1:{state.ingress_port} -> NodePort {state.ingress_node_port}",
            f"  API ready  {'yes' if self.api_ready else 'no'}",
        ]
        for key, running in self.processes.items():
            record = state.processes[key]
            lines.append(f"  {key:<24} pid {record.pid:<8} {'running' if running else 'GONE'}")
        return lines


# --------------------------------------------------------------------------- status


def _api_ready(state: ClusterState) -> bool:
    paths = NodePaths(Path(state.directory))
    try:
        context = ssl.create_default_context(cafile=str(paths.pki / "apiserver-ca.crt"))
        token = components.admin_token(paths)
    except (OSError, ssl.SSLError, ClusterError):
        return False
    request = urllib.request.Request(
        f"{state.server}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    return http_probe(request, context) is None


def status(name: str = DEFAULT_NAME, *, directory: Path | None = None) -> ClusterStatus:
    """Which recorded processes still run, and whether the API answers ``/readyz``."""
    directory = directory or state_directory(name)
    state = ClusterState.read(directory)
    if state is None:
        return ClusterStatus(directory, False, {}, False, None)
    processes = {key: alive(record.recorded(key)) for key, record in state.processes.items()}
    ready = all(processes.values()) and _api_ready(state)
    return ClusterStatus(directory, True, processes, ready, state)


# --------------------------------------------------------------------------- up


def _wait(
    check: Callable[[], str | None],
    state: ClusterState,
    what: str,
    timeout_s: float,
) -> float:
    """Poll ``check`` (None: done; else what it saw) until done; fail early, with the log's
    tail, when a recorded process died. Returns the seconds waited."""
    started = time.monotonic()
    seen = "nothing yet"
    while time.monotonic() - started < timeout_s:
        for key, record in state.processes.items():
            if not alive(record.recorded(key)):
                raise ClusterError(
                    f"{key} exited while waiting for {what} (log {record.log}):\n{tail(record.log)}"
                )
        result = check()
        if result is None:
            return time.monotonic() - started
        seen = result
        time.sleep(POLL_S)
    raise ClusterError(f"{what} not within {timeout_s:.0f} s (last seen: {seen})")


def _start(
    state: ClusterState,
    name: str,
    argv: Sequence[str],
    paths: NodePaths,
    environment: dict[str, str] | None = None,
) -> None:
    extra = {"HARNESS_CLUSTER": state.name, **(environment or {})}
    record = spawn_detached(name, argv, paths.logs / f"{name}.log", extra)
    state.processes[name] = ProcessRecord.of(record)
    state.write()


def _node_ready(client: kubernetes.client.ApiClient) -> str | None:
    try:
        node = kubernetes.client.CoreV1Api(client).read_node(NODE_NAME)
    except ApiException as exc:
        return f"node {NODE_NAME}: {exc.status} {exc.reason}"
    conditions = node.status.conditions if node.status is not None else None
    for condition in conditions or []:
        if condition.type == "Ready":
            return (
                None
                if condition.status == "True"
                else f"Ready={condition.status}: " + (condition.message or "")
            )
    return "no Ready condition yet"


def _default_account(client: kubernetes.client.ApiClient) -> str | None:
    core = kubernetes.client.CoreV1Api(client)
    try:
        core.read_namespaced_service_account("default", "default")
        core.read_namespaced_config_map("kube-root-ca.crt", "default")
    except ApiException as exc:
        return f"default ServiceAccount / kube-root-ca.crt: {exc.status} {exc.reason}"
    return None


def _new_state(name: str, directory: Path, sandbox_image: str, ingress_port: int) -> ClusterState:
    paths = NodePaths(directory)
    api_port = free_port()
    namespaces = NodeNamespaces(directory / "ns")
    return ClusterState(
        name=name,
        directory=str(directory),
        kubeconfig=str(directory / "kubeconfig"),
        context=name,
        server=f"https://127.0.0.1:{api_port}",
        api_port=api_port,
        ingress_port=ingress_port,
        ingress_node_port=INGRESS_NODE_PORT,
        node_name=NODE_NAME,
        node_ip=NODE_IP,
        pod_cidr=POD_CIDR,
        netns=str(namespaces.net),
        mountns=str(namespaces.mnt),
        sandbox_image=sandbox_image,
        containerd_socket=str(paths.containerd_socket),
    )


def _prepare_node(state: ClusterState, paths: NodePaths, log: Log) -> NodeNamespaces:
    """Namespaces, the pods' bridge (the node's address lives on it), forwarding on."""
    namespaces = NodeNamespaces(paths.root / "ns")
    namespaces.create()
    NODE_RUN.mkdir(parents=True, exist_ok=True)  # a mount point; the host's stays untouched
    node_run = (
        f"mount -t tmpfs -o mode=0711 harness-node {NODE_RUN} && "
        f"mkdir {KUBELET_ROOT} && mount --bind {paths.kubelet_root} {KUBELET_ROOT}"
    )
    namespaces.run(["sh", "-c", node_run], "the node's /run/containerd")
    script = (
        f"ip link add {BRIDGE} type bridge && "
        f"ip addr add {NODE_IP}/{POD_CIDR.split('/')[1]} dev {BRIDGE} && "
        f"ip link set {BRIDGE} up && sysctl -qw net.ipv4.ip_forward=1 && "
        # Services' addresses need a route for the node's own connections (the API server
        # calling a webhook, a probe from the node): kube-proxy's output hook DNATs them
        f"ip route add {SERVICE_CIDR} dev {BRIDGE} src {NODE_IP}"
    )
    namespaces.run(["sh", "-c", script], "the node's bridge")
    state.snapshotter = components.choose_snapshotter(namespaces, paths)
    log(f"node namespaces ready; containerd snapshotter: {state.snapshotter}")
    state.write()
    return namespaces


def _start_components(
    state: ClusterState, paths: NodePaths, argvs: dict[str, list[str]], log: Log
) -> None:
    namespaces = NodeNamespaces(paths.root / "ns")
    prefix = namespaces.nsenter()
    for key in ("etcd", "kube-apiserver", "containerd"):
        _start(state, key, [*prefix, *argvs[key]], paths)
    forwarder = components.forwarder_argv(state, namespaces)
    _start(state, "forwarder", forwarder, paths, {"PYTHONPATH": components.python_path()})
    waited = _wait(
        lambda: None if _api_ready(state) else "no /readyz yet",
        state,
        "the API server",
        READY_TIMEOUT_S,
    )
    log(f"kube-apiserver ready through the host forwarder ({waited:.1f} s)")
    if "coredns" in argvs:
        client = LocalCluster(state).api_client()
        try:
            dns.allow_dns_reads(client)
        finally:
            _close(client)
    node = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns")
    for key in node:
        if key in argvs:
            _start(state, key, [*prefix, *argvs[key]], paths)


def _bring_up(
    state: ClusterState, toolchain: Toolchain, images: Sequence[Path], log: Log
) -> LocalCluster:
    started = time.monotonic()
    paths = NodePaths(Path(state.directory))
    paths.make()
    state.write()
    _prepare_node(state, paths, log)
    argvs = components.write_files(state, paths, toolchain)
    _start_components(state, paths, argvs, log)
    state.timings["api_ready_s"] = round(time.monotonic() - started, 1)
    cluster = LocalCluster(state)
    for tarball in images:
        load_image(cluster, tarball)
    client = cluster.api_client()
    try:
        _wait(lambda: _node_ready(client), state, f"node {NODE_NAME} Ready", READY_TIMEOUT_S)
        state.timings["node_ready_s"] = round(time.monotonic() - started, 1)
        _wait(lambda: _default_account(client), state, "the default ServiceAccount", 120.0)
    finally:
        _close(client)
    state.timings["up_s"] = round(time.monotonic() - started, 1)
    state.write()
    log(
        f"cluster {state.name} up in {state.timings['up_s']:.1f} s (node Ready at "
        f"{state.timings['node_ready_s']:.1f} s); kubeconfig {state.kubeconfig}"
    )
    return cluster


def _reusable(found: ClusterStatus, sandbox_image: str, cluster_dns: bool) -> bool:
    """A running cluster ``up`` may hand back as it is: healthy, same sandbox image, DNS as
    asked."""
    state = found.state
    return (
        found.healthy
        and state is not None
        and state.sandbox_image == sandbox_image
        and bool(state.coredns) == cluster_dns
    )


def up(
    name: str = DEFAULT_NAME,
    *,
    directory: Path | None = None,
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE,
    images: Sequence[Path] = (),
    ingress_port: int = INGRESS_NODE_PORT,
    cluster_dns: bool = True,
    toolchain: Toolchain | None = None,
    log: Log = _quiet,
) -> LocalCluster:
    """Bring the cluster up (or reuse a healthy one) and wait until its node is Ready and
    the ``default`` ServiceAccount exists; ``images`` (tarballs, e.g. the sandbox image) are
    imported before the kubelet's first pod. ``cluster_dns``: run CoreDNS for the pods
    (:mod:`harness.cluster.dns`; needs the pinned CoreDNS).

    Raises :class:`~harness.errors.ToolMissingError` naming the install command when a
    binary is missing, :class:`~harness.errors.ClusterError` (after taking down what was
    started) when a component fails, with its log's tail.
    """
    directory = (directory or state_directory(name)).resolve()
    found = status(name, directory=directory)
    if not found.exists and directory.exists() and any(directory.iterdir()):
        raise ClusterError(
            f"{directory} exists, is not empty and holds no state.json of the harness: "
            f"choose another directory ({CLUSTER_DIR_ENV}) or empty it"
        )
    toolchain = toolchain or installed()
    components.check_host_tools(toolchain)
    coredns = dns.find_coredns() if cluster_dns else ""
    if _reusable(found, sandbox_image, cluster_dns) and found.state is not None:
        log(f"cluster {name} is already up ({directory}): reusing it")
        cluster = LocalCluster(found.state)
        for tarball in images:
            load_image(cluster, tarball)
        return cluster
    if found.exists:
        log(f"cluster {name}: taking down what is left in {directory} first")
        down(name, directory=directory, log=log)
    _check_port_free(ingress_port)
    directory.mkdir(parents=True, exist_ok=True)
    state = _new_state(name, directory, sandbox_image, ingress_port)
    state.coredns = coredns
    try:
        return _bring_up(state, toolchain, images, log)
    except ClusterError as exc:
        kept = _keep_logs(directory)
        with contextlib.suppress(ClusterError):
            down(name, directory=directory, log=log)
        raise ClusterError(
            f"{exc}\n(everything started was taken down; logs kept in {kept})"
        ) from None
    except BaseException:
        with contextlib.suppress(ClusterError):
            down(name, directory=directory, log=log)
        raise


def _check_port_free(port: int) -> None:
    """Refuse, before anything starts, an ingress port another process holds (kind's
    extraPortMappings, another local cluster)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ClusterError(
                f"the ingress port 127.0.0.1:{port} is taken ({exc.strerror}): stop what holds "
                f"it (another cluster's ingress?) or choose another ingress port"
            ) from None


def _keep_logs(directory: Path) -> Path:
    """Move the logs of a failed bring-up out of the state directory ``down`` removes."""
    kept = Path(tempfile.mkdtemp(prefix=f"harness-cluster-logs-{directory.name}-"))
    logs = NodePaths(directory).logs
    if logs.is_dir():
        for log_file in logs.iterdir():
            shutil.move(str(log_file), kept / log_file.name)
    return kept


# --------------------------------------------------------------------------- images


def load_image(cluster: LocalCluster, tar_path: Path) -> list[str]:
    """Import an image tarball (docker-archive or OCI layout) into the node's containerd
    (``ctr -n k8s.io images import``, unpacked for the CRI's snapshotter); the image names it
    held. Pods then use them with ``imagePullPolicy: Never``."""
    if not Path(tar_path).is_file():
        raise ClusterError(f"image tarball {tar_path} does not exist")
    tar_path = Path(tar_path).resolve()  # read by ctr inside the node (the host's files)
    argv = [
        "ctr",
        f"--address={cluster.state.containerd_socket}",  # inside the node's mount namespace
        "--namespace=k8s.io",
        "images",
        "import",
        f"--snapshotter={cluster.state.snapshotter}",
        str(tar_path),
    ]
    output = cluster.namespaces.run(argv, f"importing {tar_path}", IMPORT_TIMEOUT_S)
    # "unpacking harness.local/app:0123abcd (sha256:...)...done"
    return [line.split()[1] for line in output.splitlines() if line.startswith("unpacking ")]


# --------------------------------------------------------------------------- down


def _stop_everything(state: ClusterState, namespaces: NodeNamespaces) -> None:
    """The kubelet first (it would restart containers), then every other recorded process
    at once, then every process still in the node's mount namespace (containerd's shims)
    with their descendants (the containers, which have mount namespaces of their own)."""
    records = dict(state.processes)
    first = [records.pop(key) for key in ("kubelet",) if key in records]
    for group in (first, list(records.values())):
        stop_processes([(record.pid, record.start_ticks) for record in group])
    inode = namespaces.mount_inode()
    if inode is not None:
        members = members_of_mount_namespace(inode)
        stop_processes(descendants(pid for pid, _ in members) + members, grace_s=1.0)


def down(name: str = DEFAULT_NAME, *, directory: Path | None = None, log: Log = _quiet) -> bool:
    """Stop every process of the cluster, release its namespaces and mounts, remove its
    state directory. Idempotent, and safe on a half-up cluster; False when there was
    nothing to take down."""
    directory = (directory or state_directory(name)).resolve()
    state = ClusterState.read(directory)
    if state is None:
        if directory.exists() and (directory / "ns").exists():
            raise ClusterError(f"{directory} has namespaces but no state.json: not touched")
        return False
    namespaces = NodeNamespaces(directory / "ns")
    containers = components.running_containers(NodePaths(directory))
    _stop_everything(state, namespaces)
    namespaces.destroy()
    left = components.remove_cgroups(containers)
    if left:
        raise ClusterError(f"cgroups still in use after every process stopped: {left}")
    shutil.rmtree(directory)
    log(f"cluster {name} is down ({directory} removed)")
    return True
