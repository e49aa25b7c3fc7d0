"""The local cluster's configuration files and command lines (pure: paths in, text out).

Every setting here was needed on the machines this project runs on (issue 11, "What was
measured"): a sandbox without CAP_SYS_RESOURCE (containerd's ``restrict_oom_score_adj``),
cgroup v1 (the kubelet's ``failCgroupV1: false``, ``cgroupfs``, no per-QoS cgroups, nothing
enforced on node allocatable), no registry (images imported; image GC off so they stay).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "API_PORT",
    "BRIDGE",
    "KUBELET_CLIENT",
    "KUBELET_ROOT",
    "NODE_IP",
    "NODE_NAME",
    "NODE_RUN",
    "POD_CIDR",
    "NodePaths",
    "cni_config",
    "containerd_config",
    "kube_proxy_config",
    "kubeconfig",
    "kubelet_config",
]

NODE_NAME = "harness-local"
POD_CIDR = "198.18.0.0/24"  # inside the node's network namespace only
NODE_IP = "198.18.0.1"  # the bridge's address: the node's InternalIP, the pods' gateway
BRIDGE = "cni0"
API_PORT = 6443  # inside the namespace; the host reaches it through the forwarder
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# Inside the node's mount namespace a tmpfs covers /run/containerd, where containerd's
# shims and runc keep their sockets and state whatever containerd's own config says: they
# stay off the host and vanish with the namespace. Sockets live there too (short paths: a
# Unix socket path has at most 108 bytes, a state directory may be deep), and the kubelet's
# root directory is bind-mounted there for the same reason.
NODE_RUN = Path("/run/containerd")
KUBELET_ROOT = NODE_RUN / "harness-kubelet"
CRI_NAMESPACE = "k8s.io"  # containerd's namespace of the CRI plugin (and ctr -n)
KUBELET_CLIENT = "apiserver-kubelet-client"  # the API server's certificate towards the kubelet
UNUSED_SNAPSHOTTERS = ("aufs", "btrfs", "zfs", "devmapper")


@dataclass(frozen=True)
class NodePaths:
    """Where each component keeps its files, all under the cluster's state directory."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        """Inside the node's mount namespace only (see :data:`NODE_RUN`)."""
        return NODE_RUN / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        """The kubelet's root directory, on disk (bind-mounted at :data:`KUBELET_ROOT`)."""
        return self.kubelet / "root"

    @property
    def tasks(self) -> Path:
        """One directory per container (or pod sandbox) containerd runs, named by its id."""
        return self.containerd / "state" / "io.containerd.runtime.v2.task" / CRI_NAMESPACE

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni(self) -> Path:
        return self.root / "cni"

    @property
    def config(self) -> Path:
        return self.root / "config"

    def make(self) -> None:
        for directory in (self.logs, self.pki, self.containerd, self.kubelet_root, self.config):
            directory.mkdir(parents=True, exist_ok=True)
        (self.cni / "net.d").mkdir(parents=True, exist_ok=True)
        (self.kubelet / "pod-logs").mkdir(parents=True, exist_ok=True)


def containerd_config(paths: NodePaths, sandbox_image: str, snapshotter: str) -> str:
    """containerd 1.6's config (version 2): its own root, state and socket; the CRI plugin
    with our CNI directory, the local sandbox image and the settings this sandbox needs."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            # snapshotters that cannot work here: skip them instead of logging why at start
            "disabled_plugins = ["
            + ", ".join(f'"io.containerd.snapshotter.v1.{name}"' for name in UNUSED_SNAPSHOTTERS)
            + "]",
            f'root = "{paths.containerd / "root"}"',
            f'state = "{paths.containerd / "state"}"',
            "[grpc]",
            f'  address = "{paths.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{NODE_RUN / "containerd.sock.ttrpc"}"',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            # the sandbox cannot lower oom_score_adj: runc fails with "can't get final
            # child's PID from pipe: EOF" unless containerd leaves it alone
            "  restrict_oom_score_adj = true",
            # pod network namespaces under containerd's state (inside our mount namespace),
            # not /var/run/netns on the host
            "  netns_mounts_under_state_dir = true",
            "  disable_apparmor = true",
            f"[{cri}.containerd]",
            f'  snapshotter = "{snapshotter}"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{paths.cni / "net.d"}"',
            "",
        ]
    )


def cni_config(paths: NodePaths) -> str:
    """A bridge network with host-local addresses from :data:`POD_CIDR` (leases kept in our
    state directory, not /var/lib/cni)."""
    bridge = {
        "type": "bridge",
        "bridge": BRIDGE,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": str(paths.cni / "ipam"),
        },
    }
    return json.dumps({"cniVersion": "0.4.0", "name": "harness", "plugins": [bridge]}, indent=2)


def kubelet_config(paths: NodePaths, *, cluster_dns: bool = True) -> str:
    """The kubelet's standalone configuration file (pods' DNS: the node's address, where
    CoreDNS listens, when ``cluster_dns``)."""
    config: dict[str, Any] = {
        **({"clusterDNS": [NODE_IP]} if cluster_dns else {}),
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # what this machine needs (cgroup v1, no CAP_SYS_RESOURCE, swap may be on)
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "localStorageCapacityIsolation": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "podLogsDir": str(paths.kubelet / "pod-logs"),
        # no registry: imported images must never be garbage-collected; a busy shared disk
        # must not evict the run's pods
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        # Logs, exec and port-forward: the API server's client certificate (its own CA), or
        # a token the API server vouches for; every request authorized by the API server.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(paths.pki / f"{KUBELET_CLIENT}-ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "clusterDomain": "cluster.local",
        "serializeImagePulls": False,
    }
    return yaml.safe_dump(config, sort_keys=False)


def kube_proxy_config(kubeconfig_path: Path) -> str:
    """kube-proxy in nftables mode; masquerade everything (the pods share one bridge and no
    br_netfilter: a reply must come back through the node to be un-NATed)."""
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(kubeconfig_path)},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nftables": {"masqueradeAll": True},
        "conntrack": {"maxPerCore": 0},  # leave the host's conntrack sysctls alone
    }
    return yaml.safe_dump(config, sort_keys=False)


def kubeconfig(
    server: str,
    ca_pem: bytes,
    token: str,
    *,
    name: str,
    user: str,
    extensions: dict[str, Any] | None = None,
) -> str:
    """A kubeconfig with one cluster, user and context named ``name`` (token auth, the CA
    embedded so the file stands alone). ``extensions`` go on the context and the cluster."""
    cluster: dict[str, Any] = {
        "server": server,
        "certificate-authority-data": base64.b64encode(ca_pem).decode(),
    }
    context: dict[str, Any] = {"cluster": name, "user": user}
    if extensions:
        listed = [{"name": key, "extension": value} for key, value in extensions.items()]
        cluster["extensions"] = listed
        context["extensions"] = listed
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    return yaml.safe_dump(config, sort_keys=False)
