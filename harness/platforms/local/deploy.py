"""Pick and deploy the local platform's deployment: the harness's own Envoy bootstraps
(``--mesh envoy``) or sidecars programmed by a real istiod (``--mesh istio``).

Its own module so that neither deployment imports the other: ``istio.py`` builds on
``platform.py``, and only this chooser names both (the istio one on first use, so the
default path never imports the Kubernetes client).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import PlatformError, ScenarioError
from harness.files import redact_secrets
from harness.mesh.rbac import envoy_security_problems
from harness.platforms.local.platform import LocalDeployment, Mesh, find_envoy
from harness.platforms.local.sandbox import Isolation, Sandbox
from harness.scenario.models import Scenario

__all__ = ["LocalPlatform", "check_mesh_support"]


def check_mesh_support(scenario: Scenario, mesh: Mesh) -> None:
    """Refuse (exit 2) what ``mesh`` cannot run, before anything exists. ``--mesh envoy``
    has no control plane: a scenario that faults one or measures its configuration pushes
    is refused (:class:`PlatformError`), and so is mesh policy the translation does not
    cover (:class:`ScenarioError`, each field located)."""
    if mesh is not Mesh.ENVOY:
        return
    uses = scenario.control_plane_uses()
    if uses:
        where = "; ".join(f"{'.'.join(map(str, path))}: {what}" for path, what in uses)
        raise PlatformError(
            f"scenario {scenario.metadata.name!r} needs a real control plane, which --mesh "
            f"envoy does not run (the harness writes each Envoy's configuration itself): "
            f"{where}. Run it with --mesh istio, or remove these."
        )
    services = scenario.app.topology.service_names
    problems = envoy_security_problems(scenario.mesh.peer_authentication, services)
    if problems:
        raise ScenarioError(f"scenario {scenario.metadata.name!r} under --mesh envoy", problems)


class LocalPlatform:
    """``with LocalPlatform().deploy(scenario, run_dir) as deployment: ...``"""

    name = "local"

    def __init__(
        self,
        isolation: Isolation = Isolation.AUTO,
        mesh: Mesh = Mesh.ENVOY,
        seed: int | None = None,
    ) -> None:
        self.isolation = isolation
        self.mesh = mesh
        self.seed = seed  # of the app processes' random draws

    @contextmanager
    def deploy(self, scenario: Scenario, run_dir: Path) -> Iterator[LocalDeployment]:
        check_mesh_support(scenario, self.mesh)
        envoy = find_envoy()
        sock_dir = Path(tempfile.mkdtemp(prefix="hrn-"))
        sandbox: Sandbox | None = None
        deployment: LocalDeployment | None = None
        try:
            sandbox = Sandbox.start(run_dir.name, run_dir / "logs", self.isolation, sock_dir)
            if self.mesh is Mesh.ISTIO:
                from harness.platforms.local.istio import IstioDeployment

                deployment = IstioDeployment(scenario, run_dir, sandbox, sock_dir, envoy)
            else:
                deployment = LocalDeployment(scenario, run_dir, sandbox, sock_dir, envoy)
            deployment.app_seed = self.seed
            deployment.start()
            yield deployment
        finally:
            if deployment is not None:
                deployment.close()
            if sandbox is not None:
                sandbox.close()
            shutil.rmtree(sock_dir, ignore_errors=True)
            # Every process is gone: no certificate, key or token stays in the run's logs.
            redact_secrets(run_dir / "logs")
