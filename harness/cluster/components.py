"""The local cluster's components: credentials, files on disk and each one's command line.

Identities are static bearer tokens (``pki/tokens.csv``, mode 0600), one per component with
the user Kubernetes' bootstrap RBAC policy already binds: ``system:kube-controller-manager``
(with per-controller ServiceAccount credentials, as kubeadm runs it),
``system:kube-scheduler``, ``system:kube-proxy``, and the kubelet as
``system:node:harness-local`` in ``system:nodes`` (the Node authorizer); the harness's admin
user is in ``system:masters``.
"""

from __future__ import annotations

import re
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.cluster.dns import DNS_USER, corefile
from harness.cluster.namespaces import NodeNamespaces
from harness.cluster.node import (
    API_PORT,
    CNI_BIN_DIR,
    CRI_NAMESPACE,
    KUBELET_CLIENT,
    KUBELET_ROOT,
    NODE_IP,
    NODE_NAME,
    NodePaths,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubeconfig,
    kubelet_config,
)
from harness.cluster.state import ClusterState
from harness.controlplane.certs import write_client_certificate
from harness.controlplane.kube import ADMIN_USER, _apiserver_argv, _etcd_argv
from harness.errors import ClusterError, ToolMissingError
from harness.toolchain import Toolchain

__all__ = [
    "admin_token",
    "check_host_tools",
    "choose_snapshotter",
    "write_files",
]

ETCD_PORT, ETCD_PEER_PORT = 2379, 2380  # inside the node's namespace
APT_HINT = "apt-get install -y containerd runc containernetworking-plugins"
HOST_TOOLS = {
    "containerd": APT_HINT,
    "containerd-shim-runc-v2": APT_HINT,
    "runc": APT_HINT,
    "ctr": APT_HINT,
    "nsenter": "apt-get install -y util-linux",
    "unshare": "apt-get install -y util-linux",
    "ip": "apt-get install -y iproute2",
    "nft": "apt-get install -y nftables",
}
KUBE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "etcd",
)
# user name → groups, for tokens.csv
IDENTITIES = {
    ADMIN_USER: ("system:masters",),
    "system:kube-controller-manager": (),
    "system:kube-scheduler": (),
    "system:kube-proxy": (),
    f"system:node:{NODE_NAME}": ("system:nodes",),
    DNS_USER: (),  # read-only RBAC applied once the API is up (harness.cluster.dns)
}


def check_host_tools(toolchain: Toolchain) -> None:
    """Every binary the cluster needs, or :class:`ToolMissingError` naming how to get it."""
    missing = [f"{tool} ({hint})" for tool, hint in HOST_TOOLS.items() if not shutil.which(tool)]
    for plugin in ("bridge", "host-local"):
        if not (Path(CNI_BIN_DIR) / plugin).is_file():
            missing.append(f"{CNI_BIN_DIR}/{plugin} ({APT_HINT})")
    if missing:
        raise ToolMissingError(
            "the local cluster needs these host tools, which are missing: " + "; ".join(missing)
        )
    for name in KUBE_BINARIES:
        toolchain.path(name)  # raises, naming `harness toolchain install`


def choose_snapshotter(namespaces: NodeNamespaces, paths: NodePaths) -> str:
    """``overlayfs`` when an overlay mount works inside the node's mount namespace, else
    ``native`` (full copies: slower, more disk, works anywhere)."""
    probe = paths.containerd / "overlay-probe"
    dirs = {name: probe / name for name in ("lower", "upper", "work", "merged")}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}"
    script = f"mount -t overlay overlay -o {options} {dirs['merged']} && umount {dirs['merged']}"
    try:
        namespaces.run(["sh", "-c", script], "overlay probe")
        chosen = "overlayfs"
    except ClusterError:
        chosen = "native"
    shutil.rmtree(probe, ignore_errors=True)
    return chosen


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def _write_tokens(paths: NodePaths) -> dict[str, str]:
    tokens = {user: secrets.token_urlsafe(32) for user in IDENTITIES}
    lines = []
    for user, groups in IDENTITIES.items():
        group_field = f',"{",".join(groups)}"' if groups else ""
        lines.append(f"{tokens[user]},{user},{user}{group_field}")
    _write_private(paths.pki / "tokens.csv", "\n".join(lines) + "\n")
    return tokens


def admin_token(paths: NodePaths) -> str:
    """The admin user's token from ``tokens.csv``."""
    try:
        for line in (paths.pki / "tokens.csv").read_text().splitlines():
            token, user, *_ = line.split(",")
            if user == ADMIN_USER:
                return token
    except OSError as exc:
        raise ClusterError(f"cannot read the cluster's tokens: {exc}") from None
    raise ClusterError(f"{paths.pki / 'tokens.csv'} has no {ADMIN_USER} token")


def _component_kubeconfigs(paths: NodePaths, tokens: dict[str, str]) -> dict[str, Path]:
    """A kubeconfig per in-node component (server inside the namespace)."""
    ca = (paths.pki / "apiserver-ca.crt").read_bytes()
    server = f"https://127.0.0.1:{API_PORT}"
    files = {}
    for key, user in (
        ("kube-controller-manager", "system:kube-controller-manager"),
        ("kube-scheduler", "system:kube-scheduler"),
        ("kube-proxy", "system:kube-proxy"),
        ("kubelet", f"system:node:{NODE_NAME}"),
        ("coredns", DNS_USER),
    ):
        files[key] = paths.config / f"{key}.kubeconfig"
        _write_private(files[key], kubeconfig(server, ca, tokens[user], name="local", user=user))
    return files


def write_files(
    state: ClusterState, paths: NodePaths, toolchain: Toolchain
) -> dict[str, list[str]]:
    """Write certificates, tokens, configs and kubeconfigs; each component's argv (without
    the ``nsenter`` prefix)."""
    tokens = _write_tokens(paths)
    apiserver = _apiserver_argv(
        toolchain.path("kube-apiserver"),
        paths.pki,
        API_PORT,
        ETCD_PORT,
        paths.pki / "tokens.csv",
        node=NODE_IP,
    )
    kubelet_client = write_client_certificate(
        paths.pki,
        name=KUBELET_CLIENT,
        user="kube-apiserver-kubelet-client",
        groups=("system:masters",),
    )
    apiserver += [
        "--allow-privileged=true",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={kubelet_client.certificate}",
        f"--kubelet-client-key={kubelet_client.key}",
    ]
    kubeconfigs = _component_kubeconfigs(paths, tokens)
    ca = (paths.pki / "apiserver-ca.crt").read_bytes()
    marker = {"harness": {"made-by": "harness", "state": str(Path(state.directory))}}
    host = kubeconfig(
        state.server,
        ca,
        tokens[ADMIN_USER],
        name=state.context,
        user=ADMIN_USER,
        extensions=marker,
    )
    _write_private(Path(state.kubeconfig), host)
    (paths.config / "containerd.toml").write_text(
        containerd_config(paths, state.sandbox_image, state.snapshotter)
    )
    (paths.cni / "net.d" / "10-harness.conflist").write_text(cni_config(paths))
    (paths.config / "kubelet.yaml").write_text(
        kubelet_config(paths, cluster_dns=bool(state.coredns))
    )
    argvs = {}
    if state.coredns:
        (paths.config / "Corefile").write_text(corefile(kubeconfigs["coredns"]))
        argvs["coredns"] = [state.coredns, "-conf", str(paths.config / "Corefile")]
    (paths.config / "kube-proxy.yaml").write_text(kube_proxy_config(kubeconfigs["kube-proxy"]))
    return {
        "etcd": _etcd_argv(toolchain.path("etcd"), paths.etcd, ETCD_PORT, ETCD_PEER_PORT),
        "kube-apiserver": apiserver,
        "containerd": ["containerd", f"--config={paths.config / 'containerd.toml'}"],
        **_node_argvs(paths, toolchain, kubeconfigs),
        **argvs,
    }


def _node_argvs(
    paths: NodePaths, toolchain: Toolchain, kubeconfigs: dict[str, Path]
) -> dict[str, list[str]]:
    pki = paths.pki
    return {
        "kube-controller-manager": [
            str(toolchain.path("kube-controller-manager")),
            f"--kubeconfig={kubeconfigs['kube-controller-manager']}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'service-accounts.key'}",
            f"--root-ca-file={pki / 'apiserver-ca.crt'}",
            f"--cluster-name={NODE_NAME}",
            "--secure-port=0",
            "--v=1",
        ],
        "kube-scheduler": [
            str(toolchain.path("kube-scheduler")),
            f"--kubeconfig={kubeconfigs['kube-scheduler']}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ],
        "kubelet": [
            str(toolchain.path("kubelet")),
            f"--config={paths.config / 'kubelet.yaml'}",
            f"--kubeconfig={kubeconfigs['kubelet']}",
            f"--root-dir={KUBELET_ROOT}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            "--v=1",
        ],
        "kube-proxy": [
            str(toolchain.path("kube-proxy")),
            f"--config={paths.config / 'kube-proxy.yaml'}",
            "--v=1",
        ],
    }


def forwarder_argv(state: ClusterState, namespaces: NodeNamespaces) -> list[str]:
    """The host forwarder (a Python process of this interpreter, on the host)."""
    return [
        sys.executable,
        "-m",
        "harness.cluster.forwarder",
        str(namespaces.net),
        f"127.0.0.1:{state.api_port}=127.0.0.1:{API_PORT}",
        f"127.0.0.1:{state.ingress_port}={NODE_IP}:{state.ingress_node_port}",
    ]


def python_path() -> str:
    """The directory holding this ``harness`` package: the forwarder's PYTHONPATH."""
    return str(Path(__file__).resolve().parent.parent.parent)


CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def running_containers(paths: NodePaths) -> list[str]:
    """Ids of the containers and sandboxes the node's containerd runs (its task state
    directories: readable whether containerd is up or not)."""
    if not paths.tasks.is_dir():
        return []
    return sorted(
        entry.name for entry in paths.tasks.iterdir() if CONTAINER_ID.fullmatch(entry.name)
    )


def remove_cgroups(container_ids: Sequence[str]) -> list[Path]:
    """Remove the cgroups runc made for ``container_ids`` (``/<hierarchy>/k8s.io/<id>``: the
    kubelet without per-QoS cgroups gives no parent, and containerd then uses its namespace)
    once their processes are gone; the ones that could not be removed."""
    left = []
    hierarchies = sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []
    for container in container_ids:
        if not CONTAINER_ID.fullmatch(container):
            raise ClusterError(f"{container!r} is not a container id")
        for hierarchy in hierarchies:
            path = hierarchy / CRI_NAMESPACE / container
            if path.is_dir():
                try:
                    path.rmdir()
                except OSError:
                    left.append(path)
    return left
