"""``state.json`` of a local cluster: what runs, where, and how to stop exactly that.

Written after every process starts, so ``down`` can take apart a cluster that was only
half brought up. ``"made_by": "harness"`` marks the directory (and the kubeconfig beside it)
as the harness's own: the kube context guard checks it without an API call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from harness.cluster.namespaces import RecordedProcess
from harness.errors import ClusterError

__all__ = ["CLUSTER_DIR_ENV", "DEFAULT_NAME", "ClusterState", "ProcessRecord", "state_directory"]

CLUSTER_DIR_ENV = "HARNESS_CLUSTER_DIR"
DEFAULT_NAME = "harness-local"
STATE_FILE = "state.json"


def state_directory(name: str = DEFAULT_NAME) -> Path:
    """``$HARNESS_CLUSTER_DIR`` (the state directory itself), else
    ``$XDG_CACHE_HOME/harness/clusters/<name>`` (default ``~/.cache/...``)."""
    explicit = os.environ.get(CLUSTER_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(cache) / "harness" / "clusters" / name).resolve()


class ProcessRecord(BaseModel):
    """One process of the cluster: PID + start time identify it (see ``namespaces``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int
    start_ticks: int
    log: str

    @classmethod
    def of(cls, process: RecordedProcess) -> ProcessRecord:
        return cls(pid=process.pid, start_ticks=process.start_ticks, log=process.log)

    def recorded(self, name: str) -> RecordedProcess:
        return RecordedProcess(name, self.pid, self.start_ticks, self.log)


class ClusterState(BaseModel):
    """The contents of ``state.json``."""

    model_config = ConfigDict(extra="forbid")

    made_by: Literal["harness"] = "harness"
    name: str
    directory: str
    kubeconfig: str
    context: str
    server: str  # https://127.0.0.1:<api_port> on the host (through the forwarder)
    api_port: int
    ingress_port: int  # host 127.0.0.1:<ingress_port> → the node's NodePort below
    ingress_node_port: int
    node_name: str
    node_ip: str
    pod_cidr: str
    netns: str  # file holding the node's network namespace (nsenter --net=...)
    mountns: str
    snapshotter: str = ""
    sandbox_image: str
    containerd_socket: str  # inside the node's mount namespace (nsenter --mount=<mountns>)
    coredns: str = ""  # the CoreDNS binary serving the cluster's DNS; "" without DNS
    processes: dict[str, ProcessRecord] = {}
    timings: dict[str, float] = {}

    def write(self) -> Path:
        path = Path(self.directory) / STATE_FILE
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        os.replace(partial, path)
        return path

    @classmethod
    def read(cls, directory: Path) -> ClusterState | None:
        """The state in ``directory``; None when there is none. A file that is not ours
        (no ``made_by: harness``) is an error: nothing there is touched."""
        path = directory / STATE_FILE
        if not path.is_file():
            return None
        try:
            return cls.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as exc:
            raise ClusterError(
                f"{path} is not a local cluster's state written by the harness ({exc}); "
                f"nothing was touched: remove the directory by hand if it is yours"
            ) from None
