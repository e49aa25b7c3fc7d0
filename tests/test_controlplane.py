"""A real etcd + kube-apiserver from the pinned toolchain: ready, Istio's CRDs, validation.

These fail (never skip) when the toolchain is missing: ``.ci/run`` installs it with
``harness toolchain install``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from harness.controlplane import (
    ISTIO_NAMESPACE,
    KubeControlPlane,
    api_error,
    istiod,
    kube_control_plane,
)
from harness.errors import ControlPlaneError, ToolMissingError
from harness.toolchain import Toolchain, installed

pytestmark = pytest.mark.controlplane

NAMESPACE = "shop"
NETWORKING = ("networking.istio.io", "v1")


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeControlPlane]:
    with contextlib.ExitStack() as stack:
        try:
            plane = stack.enter_context(kube_control_plane())
        except ToolMissingError as exc:
            pytest.fail(
                f"{exc}\n(the controlplane tests need the pinned toolchain: .ci/run installs it)"
            )
        kubernetes.client.CoreV1Api(plane.client).create_namespace(
            {"metadata": {"name": NAMESPACE}}
        )
        yield plane


def custom(kube: KubeControlPlane) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(kube.client)


def create(kube: KubeControlPlane, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    group, version = NETWORKING
    kind = body["kind"]
    try:
        created: dict[str, Any] = custom(kube).create_namespaced_custom_object(
            group, version, NAMESPACE, plural, body
        )
    except ApiException as exc:
        raise api_error(exc, f"{kind} {NAMESPACE}/{body['metadata']['name']}") from None
    return created


def test_the_api_server_answers_as_the_pinned_kubernetes(kube: KubeControlPlane) -> None:
    version = kubernetes.client.VersionApi(kube.client).get_code()

    assert version.git_version == "v1.37.2"
    assert kube.server.startswith("https://127.0.0.1:")
    assert kube.timings.apiserver_ready_s > 0
    names = kubernetes.client.CoreV1Api(kube.client).list_namespace().items
    assert NAMESPACE in {item.metadata.name for item in names}


def test_every_istio_crd_is_established(kube: KubeControlPlane) -> None:
    crds = kubernetes.client.ApiextensionsV1Api(kube.client).list_custom_resource_definition()
    established = {
        item.metadata.name
        for item in crds.items
        if any(c.type == "Established" and c.status == "True" for c in item.status.conditions)
    }

    crd_file = installed().path("crd-all.gen.yaml").read_text()
    expected = {
        line.split(":", 1)[1].strip()
        for line in crd_file.splitlines()
        if line.startswith("  name: ") and line.strip().endswith(".istio.io")
    }
    assert len(expected) >= 15
    assert expected <= established
    timings = kube.timings
    assert timings.crds_established_s is not None and timings.crds_applied_s is not None
    assert timings.apiserver_ready_s <= timings.crds_applied_s <= timings.crds_established_s


def test_a_virtual_service_and_a_destination_rule_are_accepted(kube: KubeControlPlane) -> None:
    service = create(
        kube,
        "virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "catalog"},
            "spec": {
                "hosts": ["catalog"],
                "http": [
                    {
                        "route": [{"destination": {"host": "catalog"}}],
                        "timeout": "2s",
                        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx"},
                    }
                ],
            },
        },
    )
    rule = create(
        kube,
        "destinationrules",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "catalog"},
            "spec": {
                "host": "catalog",
                "trafficPolicy": {
                    "connectionPool": {"tcp": {"maxConnections": 10}},
                    "outlierDetection": {"consecutive5xxErrors": 5, "interval": "1s"},
                },
            },
        },
    )

    group, version = NETWORKING
    read = custom(kube).get_namespaced_custom_object(
        group, version, NAMESPACE, "virtualservices", "catalog"
    )
    assert read["spec"]["http"][0]["retries"]["attempts"] == 3
    assert service["metadata"]["uid"] == read["metadata"]["uid"]
    assert rule["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] == 10


def test_an_invalid_destination_rule_is_rejected_naming_the_field(kube: KubeControlPlane) -> None:
    bad = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "pricing"},
        "spec": {"host": "pricing", "trafficPolicy": {"connectionPool": {"tcp": {}}}},
    }
    bad["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["maxConnections"] = "lots"

    with pytest.raises(ControlPlaneError) as caught:
        create(kube, "destinationrules", bad)

    message = str(caught.value)
    assert "DestinationRule shop/pricing" in message
    assert "422" in message
    assert "spec.trafficPolicy.connectionPool.tcp.maxConnections" in message


def test_an_invalid_virtual_service_timeout_is_rejected_naming_the_field(
    kube: KubeControlPlane,
) -> None:
    bad = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "pricing"},
        "spec": {
            "hosts": ["pricing"],
            "http": [{"route": [{"destination": {"host": "pricing"}}], "timeout": "soon"}],
        },
    }

    with pytest.raises(ControlPlaneError) as caught:
        create(kube, "virtualservices", bad)

    assert "spec.http[0].timeout" in str(caught.value)


def test_leaving_the_context_stops_both_processes_and_removes_the_directory() -> None:
    with kube_control_plane(istio_crds=False) as kube:
        pids = dict(kube.pids)
        directory = kube.directory
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
        assert kube.timings.crds_established_s is None

    assert not directory.exists()
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still running"


def test_a_missing_toolchain_names_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"schema_version": 1, "artifacts": {}}')

    with (
        pytest.raises(
            ToolMissingError,
            match=r"kube-apiserver v1\.37\.2 is not installed.*harness toolchain install",
        ),
        kube_control_plane(installed(tmp_path)),
    ):
        pass


def wait_for(probe: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return probe()
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_istiod_becomes_ready_and_works_against_the_api_server(kube: KubeControlPlane) -> None:
    core = kubernetes.client.CoreV1Api(kube.client)

    with istiod(kube) as pilot:
        with urllib.request.urlopen(f"{pilot.http}/ready", timeout=5) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(f"{pilot.http}/debug/syncz", timeout=5) as syncz:
            assert json.load(syncz) == []  # no proxy connected yet
        # istiod's CA stored its key in the API and publishes its root to every namespace.
        secret = wait_for(lambda: core.read_namespaced_secret("istio-ca-secret", ISTIO_NAMESPACE))
        root = wait_for(lambda: core.read_namespaced_config_map("istio-ca-root-cert", "shop"))
        assert "BEGIN CERTIFICATE" in root.data["root-cert.pem"]
        assert "ca-cert.pem" in secret.data
        pid = pilot.pid
        assert pilot.timings.ready_s > 0

    assert not Path(f"/proc/{pid}").exists()


def processes_marked(mark: str) -> list[int]:
    """PIDs whose environment holds HARNESS_TEST_MARK=<mark>."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"HARNESS_TEST_MARK={mark}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def test_an_api_server_that_dies_fails_with_its_log_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    """The real etcd with a stand-in kube-apiserver that exits at once, as a bad flag would."""
    real = installed()
    dying = tmp_path / "kube-apiserver"
    dying.write_text('#!/bin/sh\necho "Error: unknown flag: --harness-test" >&2\nexit 1\n')
    dying.chmod(0o755)
    artifacts = dict(real.manifest.artifacts)
    artifacts["kube-apiserver"] = artifacts["kube-apiserver"].model_copy(
        update={"path": str(dying)}
    )
    toolchain = Toolchain(real.directory, real.manifest.model_copy(update={"artifacts": artifacts}))
    mark = tmp_path.name

    with (
        pytest.raises(ControlPlaneError) as caught,
        kube_control_plane(toolchain, environment={"HARNESS_TEST_MARK": mark}),
    ):
        pass

    message = str(caught.value)
    assert "kube-apiserver exited with 1" in message
    assert "unknown flag: --harness-test" in message
    log = re.search(r"\(log (\S+)\)", message)
    assert log is not None, message
    assert not Path(log[1]).parent.exists()  # the temporary directory is gone
    assert processes_marked(mark) == []  # etcd was stopped
