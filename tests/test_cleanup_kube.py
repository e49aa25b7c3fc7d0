"""``harness cleanup`` of dead ``--platform kube`` runs, on the real kube-apiserver.

A dead run is stood in for by a journal (status running, an unheld runner lock) whose
``kube`` record names the toolchain API server's kubeconfig, and by the objects such a run
leaves: its labelled namespace with a ConfigMap inside, a labelled ClusterRole. Cleanup must
delete exactly those, and never a namespace the harness did not make, another run's objects,
or a live run's namespace (even when a forged journal names that run). No namespace
controller runs here, so a deleted namespace stays ``Terminating``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
import yaml
from journals import new_journal
from typer.testing import CliRunner

from harness.cli import app
from harness.controlplane import KubeControlPlane, kube_control_plane
from harness.errors import ExitCode, ToolMissingError
from harness.journal import Journal
from harness.kube.render import run_namespace
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import ALLOW_ENV, pin_context
from harness.runlock import RunnerLock, runner_marker

pytestmark = pytest.mark.controlplane

DEAD_RUNNER = "999999999:1"  # no such PID


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeControlPlane]:
    try:
        with kube_control_plane(istio_crds=False) as plane:
            yield plane
    except ToolMissingError as exc:
        pytest.fail(f"{exc}\n(the controlplane tests need the pinned toolchain: .ci/run)")


@pytest.fixture(autouse=True)
def allow_the_test_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_ENV, "harness")  # the toolchain's API server: no harness marker


def leave_run(kube: KubeControlPlane, run_id: str, runner: str) -> None:
    """What a run leaves in the cluster: its namespace (+ a ConfigMap) and a ClusterRole."""
    context = pin_context(kube.kubeconfig, environ={ALLOW_ENV: "harness"})
    client = KubeClient(context, run_id, runner=runner)
    namespace = run_namespace(run_id)
    try:
        client.create_namespace(namespace)
        client.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "leftover", "namespace": namespace},
                    "data": {"a": "b"},
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": f"{run_id}-reader"},
                    "rules": [],
                },
            ]
        )
    finally:
        client.close()


def dead_run_record(reports: Path, run_id: str, kube: KubeControlPlane, **record: str) -> Path:
    run_dir = reports / "victimized" / run_id
    run_dir.mkdir(parents=True)
    RunnerLock.acquire(run_dir).release()
    fields = {
        "kubeconfig": str(kube.kubeconfig),
        "context": "harness",
        "server": kube.server,
        "namespace": run_namespace(run_id),
        **record,
    }
    path = run_dir / "journal.json"
    new_journal(
        run_id=run_id, scenario_name="victimized", platform="kube", started_at=time.time(),
        kube=fields,
    ).write(path)  # fmt: skip
    return path


def cleanup(reports: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cleanup", "--reports", str(reports)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def phase(kube: KubeControlPlane, namespace: str) -> str:
    return str(kubernetes.client.CoreV1Api(kube.client).read_namespace(namespace).status.phase)


def cluster_roles(kube: KubeControlPlane) -> set[str]:
    roles = kubernetes.client.RbacAuthorizationV1Api(kube.client).list_cluster_role().items
    return {role.metadata.name for role in roles}


def test_a_dead_runs_namespace_and_labelled_objects_are_deleted_and_nothing_else(
    kube: KubeControlPlane, tmp_path: Path
) -> None:
    dead, other = "20261202T000000Z-dead01", "20261202T000000Z-other1"
    leave_run(kube, dead, DEAD_RUNNER)
    leave_run(kube, other, DEAD_RUNNER)  # another run, not cleaned in this call
    core = kubernetes.client.CoreV1Api(kube.client)
    core.create_namespace({"metadata": {"name": "precious"}})
    path = dead_run_record(tmp_path / "reports", dead, kube)

    code, output = cleanup(tmp_path / "reports")

    assert code == ExitCode.PASSED, output
    assert f"deleted namespaces/{run_namespace(dead)}" in output
    assert f"deleted clusterroles/{dead}-reader" in output
    assert phase(kube, run_namespace(dead)) == "Terminating"
    assert f"{dead}-reader" not in cluster_roles(kube)
    assert phase(kube, run_namespace(other)) == "Active"
    assert f"{other}-reader" in cluster_roles(kube)
    assert phase(kube, "precious") == "Active"
    assert Journal.read(path).status == "crashed"
    # Again: nothing left to do, and nothing else touched.
    assert cleanup(tmp_path / "reports")[0] == ExitCode.PASSED


def test_a_forged_journal_cannot_get_a_live_runs_namespace_deleted(
    kube: KubeControlPlane, tmp_path: Path
) -> None:
    live = "20261202T000000Z-live01"
    leave_run(kube, live, runner_marker(os.getpid()))  # this test process is its "runner"
    path = dead_run_record(tmp_path / "reports", live, kube)

    code, output = cleanup(tmp_path / "reports")

    assert code == ExitCode.FAILED, output
    assert "its runner is alive" in output
    assert phase(kube, run_namespace(live)) == "Active"
    assert Journal.read(path).status == "running"  # left open: not proven clean


def test_a_context_the_guard_refuses_is_not_touched(
    kube: KubeControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "20261202T000000Z-refus1"
    leave_run(kube, run_id, DEAD_RUNNER)
    monkeypatch.delenv(ALLOW_ENV)
    dead_run_record(tmp_path / "reports", run_id, kube)

    code, output = cleanup(tmp_path / "reports")

    assert code == ExitCode.FAILED, output
    assert "refusing kube context 'harness'" in output
    assert phase(kube, run_namespace(run_id)) == "Active"

    # A kubeconfig edited since the run to point elsewhere: not touched either.
    monkeypatch.setenv(ALLOW_ENV, "harness")
    moved = yaml.safe_load(kube.kubeconfig.read_text())
    moved["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    edited = tmp_path / "edited-kubeconfig"
    edited.write_text(yaml.safe_dump(moved))
    reports = tmp_path / "reports-2"
    dead_run_record(reports, run_id, kube, kubeconfig=str(edited))
    code, output = cleanup(reports)
    assert code == ExitCode.FAILED, output
    assert "not to the run's" in output
    assert phase(kube, run_namespace(run_id)) == "Active"
