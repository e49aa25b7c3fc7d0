"""The local cluster's own logic, without a cluster: its files, its state, its refusals.

Fast: no process is started. The real cluster is tested in tests/test_cluster_local.py.
"""

from __future__ import annotations

import base64
import json
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

from harness.cluster import local
from harness.cluster.dns import corefile
from harness.cluster.forwarder import parse_mapping
from harness.cluster.node import (
    NodePaths,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubeconfig,
    kubelet_config,
)
from harness.cluster.state import CLUSTER_DIR_ENV, ClusterState, state_directory
from harness.errors import ClusterError


def test_forwarder_mappings_parse_and_bad_ones_are_refused() -> None:
    assert parse_mapping("127.0.0.1:30080=198.18.0.1:30080") == (
        ("127.0.0.1", 30080),
        ("198.18.0.1", 30080),
    )
    with pytest.raises(ValueError, match="LISTEN_HOST:PORT=TARGET_HOST:PORT"):
        parse_mapping("127.0.0.1:30080")
    with pytest.raises(ValueError):
        parse_mapping("127.0.0.1:http=198.18.0.1:80")


def test_containerd_config_keeps_everything_in_the_state_directory(tmp_path: Path) -> None:
    paths = NodePaths(tmp_path)
    config = tomllib.loads(containerd_config(paths, "harness.local/pause:abc", "native"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]

    assert config["root"].startswith(str(tmp_path))
    assert config["state"].startswith(str(tmp_path))
    assert config["grpc"]["address"] == str(paths.containerd_socket)
    assert cri["sandbox_image"] == "harness.local/pause:abc"
    assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["snapshotter"] == "native"
    assert cri["cni"]["conf_dir"] == str(paths.cni / "net.d")


def test_cni_config_is_a_bridge_with_leases_in_the_state_directory(tmp_path: Path) -> None:
    config = json.loads(cni_config(NodePaths(tmp_path)))
    bridge = config["plugins"][0]

    assert bridge["type"] == "bridge"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "198.18.0.0/24", "gateway": "198.18.0.1"}]]
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path))


def test_kubelet_and_kube_proxy_configs_carry_what_this_machine_needs(tmp_path: Path) -> None:
    kubelet = yaml.safe_load(kubelet_config(NodePaths(tmp_path)))
    proxy = yaml.safe_load(kube_proxy_config(tmp_path / "proxy.kubeconfig"))

    assert {key: kubelet[key] for key in ("failCgroupV1", "cgroupsPerQOS", "failSwapOn")} == {
        "failCgroupV1": False,
        "cgroupsPerQOS": False,
        "failSwapOn": False,
    }
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["enforceNodeAllocatable"] == []
    assert kubelet["localStorageCapacityIsolation"] is False
    assert kubelet["imageGCHighThresholdPercent"] == 100  # imported images must stay
    assert kubelet["authentication"]["anonymous"] == {"enabled": False}
    assert kubelet["authorization"] == {"mode": "Webhook"}
    assert proxy["mode"] == "nftables"
    assert proxy["nodePortAddresses"] == ["198.18.0.1/32"]


def test_the_host_kubeconfig_is_marked_as_the_harnesss_and_stands_alone() -> None:
    text = kubeconfig(
        "https://127.0.0.1:41000",
        b"-----BEGIN CERTIFICATE-----\n",
        "secret-token",
        name="harness-local",
        user="harness-admin",
        extensions={"harness": {"made-by": "harness", "state": "/x"}},
    )
    config = yaml.safe_load(text)
    cluster = config["clusters"][0]["cluster"]
    context = config["contexts"][0]

    assert config["current-context"] == context["name"] == "harness-local"
    assert base64.b64decode(cluster["certificate-authority-data"]).startswith(b"-----BEGIN")
    marker = [{"name": "harness", "extension": {"made-by": "harness", "state": "/x"}}]
    assert cluster["extensions"] == marker
    assert context["context"]["extensions"] == marker


def test_state_directory_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLUSTER_DIR_ENV, str(tmp_path / "mine"))
    assert state_directory() == tmp_path / "mine"
    monkeypatch.delenv(CLUSTER_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert state_directory("other") == tmp_path / "harness" / "clusters" / "other"


def test_a_state_file_the_harness_did_not_write_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"made_by": "someone", "name": "x"}))

    with pytest.raises(ClusterError, match="not a local cluster's state written by the harness"):
        local.down(directory=tmp_path)
    assert (tmp_path / "state.json").exists()


def test_down_without_a_cluster_is_a_no_op(tmp_path: Path) -> None:
    assert local.down(directory=tmp_path / "nothing") is False
    status = local.status(directory=tmp_path / "nothing")
    assert not status.exists and not status.healthy


def test_up_refuses_a_directory_with_files_that_are_not_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")

    with pytest.raises(ClusterError, match=r"holds no state\.json of the harness"):
        local.up(directory=tmp_path)
    assert [entry.name for entry in tmp_path.iterdir()] == ["notes.txt"]


def test_state_round_trips(tmp_path: Path) -> None:
    state = ClusterState(
        name="harness-local",
        directory=str(tmp_path),
        kubeconfig=str(tmp_path / "kubeconfig"),
        context="harness-local",
        server="https://127.0.0.1:41000",
        api_port=41000,
        ingress_port=30080,
        ingress_node_port=30080,
        node_name="harness-local",
        node_ip="198.18.0.1",
        pod_cidr="198.18.0.0/24",
        netns=str(tmp_path / "ns" / "net"),
        mountns=str(tmp_path / "ns" / "mnt"),
        sandbox_image="harness.local/pause:abc",
        containerd_socket=str(tmp_path / "containerd.sock"),
    )
    state.write()

    assert ClusterState.read(tmp_path) == state
    assert json.loads((tmp_path / "state.json").read_text())["made_by"] == "harness"


def test_the_pods_dns_is_coredns_on_the_node_address_and_can_be_left_out(tmp_path: Path) -> None:
    with_dns = yaml.safe_load(kubelet_config(NodePaths(tmp_path)))
    without = yaml.safe_load(kubelet_config(NodePaths(tmp_path), cluster_dns=False))
    text = corefile(tmp_path / "dns.kubeconfig")

    assert with_dns["clusterDNS"] == ["198.18.0.1"]
    assert "clusterDNS" not in without
    assert "bind 198.18.0.1" in text
    assert f"kubeconfig {tmp_path / 'dns.kubeconfig'} local" in text
    assert "forward" not in text  # no upstream: nothing outside the cluster resolves


def test_up_refuses_an_ingress_port_that_is_taken_before_starting_anything(
    tmp_path: Path,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        with pytest.raises(ClusterError, match=f"ingress port 127.0.0.1:{port} is taken"):
            local.up(directory=tmp_path / "state", ingress_port=port)
    assert not (tmp_path / "state").exists()
