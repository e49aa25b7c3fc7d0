"""Find what a run left on this machine: processes tagged with its run id, its namespaces.

Every process the local platform starts carries ``HARNESS_RUN_ID=<run id>`` in its
environment, so leftovers are found by reading ``/proc`` — no matching on names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Every process a run starts carries this variable; its value is the run id.
RUN_ID_ENV = "HARNESS_RUN_ID"


@dataclass(frozen=True)
class RunProcess:
    pid: int
    argv: tuple[str, ...]


def _environ(pid_dir: Path) -> bytes:
    try:
        return (pid_dir / "environ").read_bytes()
    except OSError:
        return b""


def environ_value(pid: int, name: str) -> str | None:
    """The value of ``name`` in the environment ``pid`` started with (None if absent)."""
    prefix = f"{name}=".encode()
    for entry in _environ(PROC / str(pid)).split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def run_processes(run_id: str) -> list[RunProcess]:
    """Live processes whose environment carries this run's id (zombies excluded)."""
    marker = f"{RUN_ID_ENV}={run_id}".encode()
    found = []
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        if marker not in _environ(pid_dir).split(b"\0"):
            continue
        try:
            state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = tuple(
                part.decode(errors="replace")
                for part in (pid_dir / "cmdline").read_bytes().split(b"\0")
                if part
            )
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(RunProcess(int(pid_dir.name), argv))
    return found


def namespace_members(namespace: str, run_id: str | None = None) -> list[int]:
    """PIDs of processes inside a namespace given as ``net:[4026532…]``.

    The kernel reuses a freed namespace's inode number for new namespaces (another run's,
    another program's), so with ``run_id`` only members carrying that run's id count.
    """
    kind = namespace.split(":", 1)[0]
    marker = f"{RUN_ID_ENV}={run_id}".encode() if run_id else None
    members = []
    for pid_dir in PROC.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if os.readlink(pid_dir / "ns" / kind) != namespace:
                continue
        except OSError:
            continue
        if marker is None or marker in _environ(pid_dir).split(b"\0"):
            members.append(int(pid_dir.name))
    return members


def child_namespaces(parent_pid: int) -> dict[str, str]:
    """The namespaces of ``parent_pid``'s first child (the supervisor under ``unshare``)."""
    try:
        children = (PROC / str(parent_pid) / "task" / str(parent_pid) / "children").read_text()
        child = children.split()[0]
    except (OSError, IndexError):
        return {}
    result = {}
    for kind in ("net", "pid", "user"):
        try:
            result[kind] = os.readlink(PROC / child / "ns" / kind)
        except OSError:
            continue
    return result
