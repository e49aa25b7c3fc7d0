"""The local cluster's node: a persistent network + mount namespace pair, and its processes.

Both namespaces are held by bind mounts in the cluster's state directory (``ns/net``,
``ns/mnt``), so they outlive the command that made them and every node process enters them
with ``nsenter`` (not ``ip netns exec``: that remounts ``/sys`` and hides the cgroup mounts
the kubelet needs). The mount namespace is a *slave* of the host's: containerd and the
kubelet see the host's files, but their mounts (container root filesystems, pod network
namespaces, secret volumes) stay inside it and vanish with it. Teardown is therefore: stop
the processes, unmount the two files, and the kernel releases everything else.

Processes are started detached (their own session; they outlive the command) and recorded
with their start time, so a later ``down`` stops exactly those processes: a PID whose start
time differs is someone else's and is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ClusterError

__all__ = [
    "NodeNamespaces",
    "RecordedProcess",
    "alive",
    "descendants",
    "members_of_mount_namespace",
    "mount_points_under",
    "spawn_detached",
    "stop_processes",
]

# The cluster is thrown away whole: nothing worth a long grace (CoreDNS's graceful shutdown
# alone takes 5 s).
STOP_GRACE_S = 2.0
KILL_WAIT_S = 10.0
POLL_S = 0.05


def _run(argv: Sequence[str], what: str, timeout_s: float = 60.0) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{what}: `{' '.join(argv)}` took over {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise ClusterError(
            f"{what}: `{' '.join(argv)}` failed with exit {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


def mount_points_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    prefix = str(directory.resolve())
    found = []
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda path: len(path.parts), reverse=True)


@dataclass(frozen=True)
class NodeNamespaces:
    """The node's network and mount namespaces, held by files under ``directory``."""

    directory: Path  # <state>/ns: a private bind mount of itself (a mount namespace can only
    # be held by a file on a mount that does not propagate back into it)

    @property
    def net(self) -> Path:
        return self.directory / "net"

    @property
    def mnt(self) -> Path:
        return self.directory / "mnt"

    def nsenter(self) -> list[str]:
        """The argv prefix that runs a command inside both namespaces."""
        return ["nsenter", f"--net={self.net}", f"--mount={self.mnt}", "--"]

    def create(self) -> None:
        """Make both namespaces (lo up inside the network one). Raises
        :class:`ClusterError` naming the command that failed (e.g. no CAP_SYS_ADMIN)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.directory not in mount_points_under(self.directory):
            _run(["mount", "--bind", str(self.directory), str(self.directory)], "namespaces")
        _run(["mount", "--make-private", str(self.directory)], "namespaces")
        for path, flag in ((self.net, "--net"), (self.mnt, "--mount")):
            if path in mount_points_under(path):
                continue
            path.touch()
            extra = ["--propagation", "slave"] if flag == "--mount" else []
            _run(["unshare", f"{flag}={path}", *extra, "true"], f"namespace {path.name}")
        self.run(["ip", "link", "set", "lo", "up"], "loopback")

    def run(self, argv: Sequence[str], what: str, timeout_s: float = 60.0) -> str:
        """Run a command inside the namespaces; its stdout."""
        return _run([*self.nsenter(), *argv], what, timeout_s)

    def mount_inode(self) -> int | None:
        """The inode of the held mount namespace (unique while it is held), None if gone."""
        try:
            return os.stat(self.mnt).st_ino if self.mnt in mount_points_under(self.mnt) else None
        except OSError:
            return None

    def destroy(self) -> None:
        """Unmount both namespace files and the directory's bind mount (deepest first);
        idempotent. The namespaces die with their last process."""
        for point in mount_points_under(self.directory):
            subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
        left = mount_points_under(self.directory)
        if left:
            raise ClusterError(f"could not unmount {', '.join(map(str, left))}")


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class RecordedProcess:
    """A process the cluster started: its PID, start time (clock ticks since boot, field 22
    of ``/proc/<pid>/stat``) and its log."""

    name: str
    pid: int
    start_ticks: int
    log: str


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    return [str(pid), "comm", *text[text.rindex(")") + 2 :].split()]


def start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[21]) if fields else None


def alive(process: RecordedProcess) -> bool:
    """The recorded process still runs (same PID *and* start time; a zombie is dead)."""
    fields = _stat_fields(process.pid)
    return fields is not None and fields[2] != "Z" and int(fields[21]) == process.start_ticks


def spawn_detached(
    name: str, argv: Sequence[str], log: Path, environment: Mapping[str, str]
) -> RecordedProcess:
    """Start ``argv`` in its own session with output appended to ``log``; it outlives us."""
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **environment},
            start_new_session=True,
        )
    # Detached on purpose: `down` stops it by PID. Forget the Popen without the warning its
    # finaliser gives for a child still running (we reap it in `down` if we are its parent).
    popen.returncode = 0
    ticks = start_ticks(popen.pid)
    if ticks is None:
        raise ClusterError(f"{name} exited at once (log {log}):\n{tail(log)}")
    return RecordedProcess(name, popen.pid, ticks, str(log))


def tail(log: Path | str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _gone(pids: Iterable[tuple[int, int]]) -> bool:
    for pid, ticks in pids:
        _reap(pid)
        fields = _stat_fields(pid)
        if fields is not None and fields[2] != "Z" and int(fields[21]) == ticks:
            return False
    return True


def stop_processes(targets: Iterable[tuple[int, int]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each ``(pid, start_ticks)`` that is still that process, wait ``grace_s``, then
    SIGKILL what remains; returns once all are gone (or raises :class:`ClusterError`)."""
    pending = [(pid, ticks) for pid, ticks in targets if start_ticks(pid) == ticks]
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, KILL_WAIT_S)):
        for pid, ticks in pending:
            if start_ticks(pid) == ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not _gone(pending):
            time.sleep(POLL_S)
        if _gone(pending):
            return
    left = [pid for pid, ticks in pending if start_ticks(pid) == ticks]
    raise ClusterError(f"processes {left} did not exit after SIGKILL")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def members_of_mount_namespace(inode: int) -> list[tuple[int, int]]:
    """``(pid, start_ticks)`` of every process in the mount namespace with ``inode``."""
    found = []
    for pid in _all_pids():
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino != inode:
                continue
        except OSError:
            continue
        ticks = start_ticks(pid)
        if ticks is not None:
            found.append((pid, ticks))
    return found


def descendants(roots: Iterable[int]) -> list[tuple[int, int]]:
    """``(pid, start_ticks)`` of every descendant of ``roots`` (containers under their shim)."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[3]), []).append(pid)
    found, stack = [], list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            ticks = start_ticks(child)
            if ticks is not None:
                found.append((child, ticks))
                stack.append(child)
    return found
