"""The real single-node cluster of ``harness cluster up --local``: up → a pod serves HTTP →
down leaves nothing.

Needs the pinned toolchain (kubelet, controller-manager, scheduler, kube-proxy) and Debian's
containerd, runc and CNI plugins; ``.ci/run`` installs all of them. These tests FAIL (never
skip) when something is missing.

The image is built here from a few lines of Go (``go build``, static) into a one-layer
docker-archive tarball: one binary that waits for SIGTERM without arguments (the sandbox
image) and serves HTTP with ``serve``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
import pytest

from harness.cluster import components, local
from harness.cluster.namespaces import alive, mount_points_under
from harness.cluster.node import NodePaths
from harness.errors import ClusterError, ToolMissingError
from harness.ports import free_port
from harness.toolchain import Toolchain

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

IMAGE = "harness.local/tiny:test"
GO_PROGRAM = """package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		name, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "tiny %s\\n", name)
		})
		http.HandleFunc("/resolve", func(w http.ResponseWriter, r *http.Request) {
			addresses, err := net.LookupHost(r.URL.Query().Get("name"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			fmt.Fprint(w, strings.Join(addresses, ","))
		})
		fmt.Println("serving on :8080")
		panic(http.ListenAndServe(":8080", nil))
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
"""
WAIT_S = 180.0


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def build_tiny_image(directory: Path) -> Path:
    """``go build`` the program above and pack it as a docker-archive image tarball."""
    (directory / "main.go").write_text(GO_PROGRAM)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "", "GO111MODULE": "off"}
    subprocess.run(
        ["go", "build", "-o", "tiny", "main.go"], cwd=directory, env=env, check=True, timeout=600
    )
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as archive:
        _tar_member(archive, "tiny", (directory / "tiny").read_bytes(), 0o755)
    layer_bytes = layer.getvalue()
    layer_digest = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/tiny"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [
        {"Config": config_name, "RepoTags": [IMAGE], "Layers": [f"{layer_digest}/layer.tar"]}
    ]
    path = directory / "tiny.tar"
    with tarfile.open(path, mode="w") as archive:
        _tar_member(archive, f"{layer_digest}/layer.tar", layer_bytes)
        _tar_member(archive, config_name, config)
        _tar_member(archive, "manifest.json", json.dumps(manifest).encode())
    return path


def _net_namespace_holders(inode: int) -> list[int]:
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    holders.append(int(entry))
            except OSError:
                continue
    return holders


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local.LocalCluster]:
    scratch = tmp_path_factory.mktemp("cluster")
    image = build_tiny_image(scratch)
    directory = scratch / "state"
    try:
        up = local.up(
            directory=directory,
            sandbox_image=IMAGE,
            images=[image],
            ingress_port=free_port(),
            log=print,
        )
    except ToolMissingError as exc:
        pytest.fail(f"{exc}\n(the cluster tests need the toolchain and apt packages: .ci/run)")
    try:
        yield up
    finally:
        local.down(directory=directory)


def _wait_pod(core: kubernetes.client.CoreV1Api, name: str) -> str:
    deadline = time.monotonic() + WAIT_S
    phase = None
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, "default")
        phase = pod.status.phase if pod.status else None
        if phase == "Running" and pod.status and pod.status.pod_ip:
            return str(pod.status.pod_ip)
        time.sleep(1.0)
    raise AssertionError(f"pod {name} not Running within {WAIT_S:.0f} s (phase {phase})")


def _get(url: str) -> str:
    deadline = time.monotonic() + 60.0
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5.0) as answer:
                return answer.read().decode()
        except OSError as exc:  # kube-proxy may not have written the rules yet
            last = exc
            time.sleep(1.0)
    raise AssertionError(f"{url}: no answer within 60 s ({last})")


def _curl_in_node(cluster: local.LocalCluster, url: str) -> str:
    """``url`` from inside the node, again until it answers: a Service's address answers
    only once kube-proxy has written its rules, which follows the pod's readiness (CI: the
    ClusterIP still refused right after the pod was Running)."""
    deadline = time.monotonic() + 60.0
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return cluster.in_node(["curl", "-sS", "--max-time", "10", url])
        except ClusterError as exc:
            last = exc
            time.sleep(1.0)
    raise AssertionError(f"{url}: no answer from inside the node within 60 s ({last})")


@dataclass(frozen=True)
class Tiny:
    """The serving pod and its NodePort Service (the ingress port)."""

    pod_ip: str
    cluster_ip: str


@pytest.fixture(scope="module")
def tiny(cluster: local.LocalCluster) -> Tiny:
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    labels = {"app": "tiny"}
    container = {
        "name": "tiny",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": ["/tiny", "serve"],
        "ports": [{"containerPort": 8080}],
    }
    core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "tiny", "labels": labels}, "spec": {"containers": [container]}},
    )
    service = {
        "metadata": {"name": "echo"},
        "spec": {
            "type": "NodePort",
            "selector": labels,
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": local.INGRESS_NODE_PORT}],
        },
    }
    created = core.create_namespaced_service("default", service)
    return Tiny(_wait_pod(core, "tiny"), created.spec.cluster_ip)


def test_a_pod_serves_on_its_pod_ip_its_cluster_ip_and_the_host_ingress_port(
    cluster: local.LocalCluster, tiny: Tiny
) -> None:
    assert tiny.pod_ip.startswith("198.18.0.")
    inside = cluster.in_node(["curl", "-sS", "--max-time", "10", f"http://{tiny.pod_ip}:8080/"])
    assert inside == "tiny tiny\n"
    via_service = _curl_in_node(cluster, f"http://{tiny.cluster_ip}/")
    assert via_service == "tiny tiny\n"
    assert _get(f"http://127.0.0.1:{cluster.state.ingress_port}/") == "tiny tiny\n"


def test_pod_logs_and_the_pod_proxy_come_through_the_api_server(
    cluster: local.LocalCluster, tiny: Tiny
) -> None:
    core = kubernetes.client.CoreV1Api(cluster.api_client())

    # the API server's pod proxy: how the host reaches a port of any pod (an admin API)
    proxied = core.connect_get_namespaced_pod_proxy_with_path("tiny:8080", "default", "")
    assert proxied == "tiny tiny\n"

    assert core.read_namespaced_pod_log("tiny", "default") == "serving on :8080\n"
    # the kubelet itself answers only the API server (its client certificate) or a token the
    # API server vouches for: an anonymous request from inside the node is refused
    anonymous = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}"]
    assert cluster.in_node([*anonymous, "https://198.18.0.1:10250/pods"]) == "401"


def test_pods_resolve_services_through_the_cluster_dns(
    cluster: local.LocalCluster, tiny: Tiny
) -> None:
    def resolve(name: str) -> str:
        url = f"http://{tiny.pod_ip}:8080/resolve?name={name}"
        return cluster.in_node(["curl", "-sS", "--max-time", "10", url])

    assert resolve("echo.default.svc.cluster.local") == tiny.cluster_ip
    assert resolve("echo") == tiny.cluster_ip  # the pod's search domains
    assert resolve("kubernetes.default") == "10.96.0.1"
    assert "no such host" in resolve("nothing-here.default.svc.cluster.local")


def test_up_again_reuses_the_running_cluster(cluster: local.LocalCluster) -> None:
    again = local.up(directory=cluster.directory, sandbox_image=IMAGE)

    assert again.state.processes == cluster.state.processes
    status = local.status(directory=cluster.directory)
    assert status.healthy
    assert set(status.processes) >= {"kubelet", "containerd", "kube-apiserver", "forwarder"}


def test_down_leaves_no_process_mount_or_namespace(tmp_path: Path) -> None:
    image = build_tiny_image(tmp_path)
    directory = tmp_path / "state"
    cluster = local.up(
        directory=directory, sandbox_image=IMAGE, images=[image], ingress_port=free_port()
    )
    core = kubernetes.client.CoreV1Api(cluster.api_client())
    container = {"name": "tiny", "image": IMAGE, "imagePullPolicy": "Never"}
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "idle"}, "spec": {"containers": [container]}}
    )
    _wait_pod(core, "idle")
    net_inode = os.stat(cluster.namespaces.net).st_ino
    processes = [record.recorded(name) for name, record in cluster.state.processes.items()]
    containers = components.running_containers(NodePaths(directory))
    cgroups = [path for id in containers for path in Path("/sys/fs/cgroup").glob(f"*/k8s.io/{id}")]
    assert len(containers) == 2 and cgroups  # the pod's sandbox and container, in cgroups

    assert local.down(directory=directory)

    assert not directory.exists()
    assert mount_points_under(tmp_path) == []
    assert _net_namespace_holders(net_inode) == []
    assert [process for process in processes if alive(process)] == []
    assert [path for path in cgroups if path.exists()] == []
    # runc's state and the shims' sockets were on the node's own /run/containerd
    assert [id for id in containers if Path(f"/run/containerd/runc/k8s.io/{id}").exists()] == []
    assert not local.down(directory=directory)  # idempotent


def _live_processes_naming(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (a zombie's is empty)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(directory).encode() in cmdline:
                found.append(int(entry))
    return found


def test_a_component_that_fails_takes_down_everything_started_and_keeps_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_path = Toolchain.path

    def kubelet_is_false(self: Toolchain, name: str) -> Path:
        return Path("/bin/false") if name == "kubelet" else real_path(self, name)

    monkeypatch.setattr(Toolchain, "path", kubelet_is_false)
    directory = tmp_path / "state"

    with pytest.raises(ClusterError, match="kubelet exited") as caught:
        local.up(directory=directory, sandbox_image=IMAGE, ingress_port=free_port())

    assert not directory.exists()
    assert mount_points_under(tmp_path) == []
    assert _live_processes_naming(directory) == []
    kept = re.search(r"logs kept in (\S+)\)", str(caught.value))
    assert kept is not None
    assert (Path(kept[1]) / "kube-apiserver.log").is_file()
    shutil.rmtree(kept[1])
