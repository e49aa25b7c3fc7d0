"""Process and network faults on Kubernetes (``kill``, ``pause``, ``partition``): a helper
container in each targeted pod, driven through the API server's ``exec``.

A pod of a service that such a fault targets is created with one more container,
``harness-chaos`` (the app's image: its Python and ``nft``; root; idle in
``signal.pause()``), and, for ``kill`` / ``pause``, ``shareProcessNamespace: true``; for
``partition`` the helper alone gets ``NET_ADMIN`` (the pod's own network namespace, nothing
of the node's). The harness runs short programs in it through ``exec`` (a websocket to the
kubelet: any cluster, no node access, no privileged pod).

Process faults (:class:`ProcessTable`):

* the target container's processes are found by its container ID in ``/proc/<pid>/cgroup``
  (the ID comes from the pod's status; never by process name);
* ``SIGKILL`` / ``SIGSTOP`` / ``SIGCONT`` go to every process of the container (a sidecar is
  ``pilot-agent`` and its Envoy), and the program reads ``/proc`` back until they are gone or
  stopped.

What differs from the local platform, by Kubernetes' design: the kubelet restarts a killed
container by itself (``restartPolicy: Always``; the first restart at once, later ones after
its back-off), so ``restartAfter`` cannot hold an instance down; ``restart_process`` waits
until the kubelet's new container is Ready. A paused container fails its readiness probe
after a few seconds, and the mesh then stops sending it new requests, as it would in any
cluster.

PIDs in different pods are numbered in different namespaces, so the "PID" this module hands
the injectors is a handle: :class:`ProcessTable` maps it to (pod, container ID, PID).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from harness.errors import PlatformError
from harness.platforms.base import ProcessKind
from harness.platforms.kube.websocket import open_exec

__all__ = [
    "CHAOS_CONTAINER",
    "PROXY_CONTAINER",
    "PodPacketFilter",
    "PodProcess",
    "ProcessTable",
    "chaos_container",
    "container_of",
    "signal_program",
]

CHAOS_CONTAINER: Final = "harness-chaos"
PROXY_CONTAINER: Final = "istio-proxy"  # the sidecar's container (Istio's name)
PYTHON: Final = "/usr/local/bin/python3"  # the app image's interpreter (cluster/images.py)
NFT_PATH: Final = "/usr/sbin/nft"  # the app image's nft
EXEC_TIMEOUT_S: Final = 30.0
SIGNAL_WAIT_S: Final = 10.0

# Run in the chaos container: ``program <op> <container-id> [signal]``. Prints one JSON
# object: the container's processes {pid: state} after the operation.
PROGRAM: Final = r"""
import json, os, signal, sys, time
op, cid = sys.argv[1], sys.argv[2]
def found():
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cgroup") as f:
                cgroup = f.read()
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if cid in cgroup:
            fields = stat.rsplit(")", 1)[1].split()
            out[int(name)] = [fields[0], int(fields[1])]
    return out
procs = found()
if op == "signal":
    sig = getattr(signal, sys.argv[3])
    # The container's main process first (its parent is outside the container).
    for pid in sorted(procs, key=lambda p: (procs[p][1] in procs, p)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    want = {"SIGKILL": lambda s: s is None, "SIGSTOP": lambda s: s in ("T", "t"),
            "SIGCONT": lambda s: s not in ("T", "t")}[sys.argv[3]]
    deadline = time.monotonic() + float(sys.argv[4])
    while True:
        now = found()
        if all(want(now.get(pid, [None])[0]) for pid in procs) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    print(json.dumps({"before": procs, "after": now}))
else:
    print(json.dumps({"after": procs}))
"""


def signal_program() -> str:
    """The Python program run in the chaos container (exposed for tests)."""
    return PROGRAM


def chaos_container(image: str, pull_policy: str, *, net_admin: bool) -> dict[str, Any]:
    """The ``harness-chaos`` container: the app image's Python and nft, root (``net_admin``:
    with NET_ADMIN, for nft in the pod's network namespace), idle until it is told to act
    through ``exec`` (SIGTERM ends it with the pod)."""
    security: dict[str, Any] = {"runAsUser": 0, "runAsGroup": 0}
    if net_admin:
        security["capabilities"] = {"add": ["NET_ADMIN"]}
    return {
        "name": CHAOS_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": [PYTHON, "-c", "import signal; signal.pause()"],
        "securityContext": security,
        "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
    }


def exec_in(
    core: Any, namespace: str, pod: str, command: list[str], timeout: float = EXEC_TIMEOUT_S
) -> tuple[int, str, str]:
    """Run ``command`` in the pod's helper container: (exit code, stdout, stderr)."""
    client: Any = None
    try:
        client = open_exec(
            core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            container=CHAOS_CONTAINER,
            command=command,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
        )
        client.run_forever(timeout=timeout)
        out, err = client.read_stdout(), client.read_stderr()
        code = client.returncode
    except Exception as exc:  # the client's ApiException, websocket and OS errors
        raise PlatformError(
            f"cannot exec in {namespace}/{pod} container {CHAOS_CONTAINER}: {exc}"
        ) from exc
    finally:
        _close(client)
    if code is None:
        raise PlatformError(f"{namespace}/{pod}: {command[0]} did not finish within {timeout:g}s")
    return int(code), str(out), str(err)


def _close(client: Any) -> None:
    """Close an exec stream and its socket: once the server has closed the websocket,
    ``WSClient.close()`` leaves the TLS socket open (websocket-client only shuts down a
    connection it still considers connected)."""
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.close()
    sock = getattr(client, "sock", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.shutdown()


# ``program <nft> <script or ""> <arg>...``: nft with the script on its stdin (exec gives no
# way to close stdin), its exit code and output as one JSON object.
NFT_PROGRAM: Final = r"""
import json, subprocess, sys
nft, script, args = sys.argv[1], sys.argv[2], sys.argv[3:]
argv = [nft, "-f", "-"] if script else [nft, *args]
done = subprocess.run(argv, input=script or None, capture_output=True, text=True, timeout=20)
print(json.dumps([done.returncode, done.stdout, done.stderr]))
"""


class PodPacketFilter:
    """A :class:`~harness.platforms.base.PacketFilter` in one pod's network namespace: nft
    run by the pod's helper container (``argv[0]`` is replaced by the image's nft)."""

    def __init__(self, core: Any, namespace: str, pod: str) -> None:
        self.core, self.namespace, self.pod = core, namespace, pod

    def run(
        self, argv: list[str], *, timeout: float = 30.0, input_text: str | None = None
    ) -> tuple[int, str, str]:
        command = [PYTHON, "-c", NFT_PROGRAM, NFT_PATH, input_text or "", *argv[1:]]
        code, out, err = exec_in(self.core, self.namespace, self.pod, command, timeout + 5.0)
        if code != 0:
            raise PlatformError(f"nft in {self.namespace}/{self.pod} failed ({code}): {err}")
        try:
            nft_code, nft_out, nft_err = json.loads(out)
        except ValueError as exc:
            raise PlatformError(f"nft in {self.pod}: unreadable answer {out[:200]!r}") from exc
        return int(nft_code), str(nft_out), str(nft_err)


def container_of(process: ProcessKind) -> str:
    """The container that holds an instance's ``app`` or ``sidecar``."""
    return PROXY_CONTAINER if process == "sidecar" else "app"


@dataclass(frozen=True)
class PodProcess:
    """One process a fault acted on: its pod, its container's ID, its PID in the pod."""

    pod: str
    container: str
    container_id: str
    pid: int


class ProcessTable:
    """Process faults of one run's namespace, through ``exec`` into each pod's chaos
    container. ``core`` is a ``kubernetes.client.CoreV1Api`` of the run's pinned context."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self._handles: dict[int, PodProcess] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    def container_id(self, pod: str, container: str) -> str | None:
        """The ID of the container's current instance, when it runs (None while the kubelet
        restarts it)."""
        status = self.core.read_namespaced_pod(pod, self.namespace).status
        for entry in status.container_statuses or []:
            if entry.name == container and entry.state is not None and entry.state.running:
                raw = str(entry.container_id or "")
                return raw.split("://", 1)[-1] or None
        return None

    def ready(self, pod: str, container: str) -> bool:
        status = self.core.read_namespaced_pod(pod, self.namespace).status
        return any(e.name == container and e.ready for e in status.container_statuses or [])

    def _exec(self, pod: str, args: list[str]) -> dict[str, Any]:
        command = [PYTHON, "-c", PROGRAM, *args]
        code, out, err = exec_in(self.core, self.namespace, pod, command)
        if code != 0:
            raise PlatformError(
                f"the process program in {self.namespace}/{pod} exited with {code}: {err.strip()}"
            )
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError as exc:
            raise PlatformError(f"the process program in {pod} printed {out[:200]!r}") from exc
        return result

    def _processes(self, pod: str, container_id: str) -> dict[int, tuple[str, int]]:
        after = self._exec(pod, ["list", container_id])["after"]
        return {int(pid): (str(state), int(ppid)) for pid, (state, ppid) in after.items()}

    @staticmethod
    def _main(processes: dict[int, tuple[str, int]]) -> int:
        mains = [pid for pid, (_, ppid) in processes.items() if ppid not in processes]
        return min(mains or processes)

    def _handle(self, proc: PodProcess) -> int:
        with self._lock:
            handle = len(self._handles) + 1
            self._handles[handle] = proc
            return handle

    def current(self, pod: str, process: ProcessKind) -> int:
        """A handle on the main process of the pod's ``process`` container as it runs now."""
        container = container_of(process)
        cid = self.container_id(pod, container)
        if cid is None:
            raise PlatformError(f"{pod}: container {container} is not running")
        processes = self._processes(pod, cid)
        if not processes:
            raise PlatformError(f"{pod}: container {container} ({cid[:12]}) has no process")
        return self._handle(PodProcess(pod, container, cid, self._main(processes)))

    def state(self, handle: int) -> str | None:
        """The state letter of the process behind ``handle`` (``T``: stopped), None once it
        (or its container, or its pod) is gone."""
        proc = self._handles.get(handle)
        if proc is None:
            raise PlatformError(f"no process fault handle {handle}")
        try:
            processes = self._processes(proc.pod, proc.container_id)
        except PlatformError:
            if self._pod_gone(proc.pod):
                return None
            raise
        entry = processes.get(proc.pid)
        return None if entry is None else entry[0]

    def _pod_gone(self, pod: str) -> bool:
        try:
            self.core.read_namespaced_pod(pod, self.namespace)
        except Exception as exc:  # ApiException 404
            return getattr(exc, "status", None) == 404
        return False

    # ------------------------------------------------------------------ acting

    def signal(self, pod: str, process: ProcessKind, signame: str) -> int:
        """Send ``signame`` to every process of the container and wait until /proc shows it
        took (gone, stopped, running); a handle on the container's main process."""
        container = container_of(process)
        cid = self.container_id(pod, container)
        if cid is None:
            raise PlatformError(f"{pod}: container {container} is not running")
        result = self._exec(pod, ["signal", cid, signame, str(SIGNAL_WAIT_S)])
        before = {int(pid): (str(s), int(pp)) for pid, (s, pp) in result["before"].items()}
        if not before:
            raise PlatformError(f"{pod}: container {container} ({cid[:12]}) has no process")
        return self._handle(PodProcess(pod, container, cid, self._main(before)))

    def resume(self, handle: int) -> int:
        """SIGCONT every process of the container a pause stopped."""
        proc = self._handles[handle]
        self._exec(proc.pod, ["signal", proc.container_id, "SIGCONT", str(SIGNAL_WAIT_S)])
        return handle

    def await_restarted(self, handle: int, timeout_s: float) -> int:
        """Wait until the kubelet has replaced the killed container behind ``handle`` and the
        new one is Ready; a handle on its main process."""
        proc = self._handles[handle]
        deadline = time.monotonic() + timeout_s
        last = "not yet restarted"
        while time.monotonic() < deadline:
            cid = self.container_id(proc.pod, proc.container)
            if cid is not None and cid != proc.container_id:
                if self.ready(proc.pod, proc.container):
                    return self.current(proc.pod, "sidecar" if proc.container != "app" else "app")
                last = f"container {cid[:12]} not Ready"
            time.sleep(0.2)
        raise PlatformError(
            f"{proc.pod}: the kubelet did not restart container {proc.container} within "
            f"{timeout_s:g}s ({last})"
        )
