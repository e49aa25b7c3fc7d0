"""``harness cluster up --local`` end to end: a real single-node cluster, Istio from its Helm
charts, a scenario's app behind the ingress gateway at 127.0.0.1:30080, then down.

One slow test (about 2–3 minutes on a loaded 2-core machine): the cluster (kubelet,
containerd, the toolchain's control plane), the images, istiod and the gateway Ready, the
rendered objects of a shipped scenario applied through the guard-admitted context, requests
through the gateway answered by the app, the run's namespace deleted, the cluster removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.cluster.istio_install import INGRESS_NODE_PORT
from harness.kube.render import RenderOptions, render, run_namespace
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import pin_context
from harness.scenario import load_scenario

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios/retries-mask-transient-errors.yaml"
REQUESTS = 20


def ask_ingress() -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{INGRESS_NODE_PORT}/", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


@pytest.fixture
def cluster_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short state directory: the kubelet's Unix sockets live under it (108-byte limit)."""
    directory = Path(tempfile.mkdtemp(prefix="hcl-"))
    monkeypatch.setenv("HARNESS_CLUSTER_DIR", str(directory / "c"))
    yield directory / "c"
    shutil.rmtree(directory, ignore_errors=True)


def test_cluster_up_local_serves_a_scenario_through_istio(cluster_dir: Path) -> None:
    local = pytest.importorskip(
        "harness.cluster.local",
        reason="harness.cluster.local (the local cluster) is not in this tree",
    )
    images = pytest.importorskip(
        "harness.cluster.images",
        reason="harness.cluster.images (the image builder) is not in this tree",
    )
    runner = CliRunner()
    run_id = "20261202T000000Z-live01"
    try:
        up = runner.invoke(app, ["cluster", "up", "--local"])
        assert up.exit_code == 0, up.output
        assert "Istio ready on context 'harness-local'" in up.output
        again = runner.invoke(app, ["cluster", "up", "--local"])  # idempotent: reused
        assert again.exit_code == 0, again.output

        context = pin_context(cluster_dir / "kubeconfig")
        assert context.admitted == "harness"
        app_image = images.build_images(names=("app",))["app"].ref
        options = RenderOptions(
            namespace=run_namespace(run_id), run_id=run_id, image=app_image,
            image_pull_policy="Never",
        )  # fmt: skip
        objects = [m.to_dict() for m in render(load_scenario(SCENARIO), options)]
        client = KubeClient(context, run_id)
        try:
            client.apply(objects)
            pods = sum(o["spec"]["replicas"] for o in objects if o["kind"] == "Deployment")
            client.wait_pods_ready(run_namespace(run_id), count=pods, timeout_s=300)
            answers = []
            for _ in range(REQUESTS):  # bounded: 20 requests to loopback
                answers.append(ask_ingress())
                time.sleep(0.1)
            deleted = client.delete_owned()
        finally:
            client.close()
        served = [body for status, body in answers if status == 200]
        assert served, f"no request through the gateway succeeded: {answers}"
        assert {body["service"] for body in served} == {"frontend"}
        assert deleted.namespaces == [f"namespaces/{run_namespace(run_id)}"]
    finally:
        down = runner.invoke(app, ["cluster", "down", "--local"])
    assert down.exit_code == 0, down.output
    assert not local.status().exists
