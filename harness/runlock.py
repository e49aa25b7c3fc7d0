"""Whether a run's runner is still alive: a lock it holds for its lifetime, and its PID.

The runner takes an exclusive ``flock`` on ``<run dir>/runner.lock`` before it writes its
first journal and holds it until it returns; the kernel drops the lock when the process
dies, however it dies (``kill -9`` included). The journal also records the runner's PID and
its start time (``/proc/<pid>/stat``, clock ticks since boot), because a PID alone can be
reused by an unrelated process.

``harness cleanup`` touches a run only when it can *prove* the runner is gone: it takes the
lock itself (and holds it while it cleans, so two cleanups never race), and the recorded
PID is not alive with the recorded start time.

>>> lock = RunnerLock.acquire(run_dir)    # the runner, before its first journal write
>>> claim = claim_dead_run(run_dir, pid, start)   # cleanup: a RunnerLock, or why not
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from harness.errors import OutputError

LOCK_NAME = "runner.lock"
# Set in the environment of every process a run starts: "<runner pid>:<its start time>".
RUNNER_ENV = "HARNESS_RUNNER"


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def runner_marker(pid: int) -> str:
    """``"<pid>:<start time>"``, the value of :data:`RUNNER_ENV` for a runner."""
    return f"{pid}:{process_start(pid)}"


def marker_alive(marker: str) -> bool:
    """Whether the runner a :func:`runner_marker` names is still alive (same PID and start)."""
    pid, _, start = marker.partition(":")
    if not pid.isdigit() or not start.isdigit():
        return False
    return process_start(int(pid)) == int(start)


class RunnerLock:
    """An exclusive ``flock`` on a run directory's lock file, held until :meth:`release`."""

    def __init__(self, fd: int | None, path: Path) -> None:
        self._fd = fd  # None: nothing to hold (a dead run without a lock file)
        self.path = path

    @classmethod
    def acquire(cls, run_dir: Path) -> RunnerLock:
        """Create and lock ``run_dir/runner.lock`` (the runner; the directory is new)."""
        path = run_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise OutputError(f"{path}: cannot create the runner's lock: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{path}: another process holds this run's lock") from None
        return cls(fd, path)

    def release(self) -> None:
        """Drop the lock (closing the file does; a dead process drops it too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunnerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_dead_run(run_dir: Path, pid: int | None, start: int | None) -> RunnerLock | str:
    """The run's lock when its runner is provably dead, else why the run must be left alone.

    Proof: the lock file exists and can be locked, or (no lock file) the journal names the
    runner's PID and start time and no such process lives. A held lock, a live recorded
    runner, or no evidence at all (neither lock nor PID) each return a reason instead.
    """
    path = run_dir / LOCK_NAME
    claimed: RunnerLock | None = None
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        return f"its lock file {path} cannot be opened ({exc.strerror}); not touching it"
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return f"its runner is alive (it holds {path}{f', pid {pid}' if pid else ''})"
        claimed = RunnerLock(fd, path)
    if pid is not None and start is not None and process_start(pid) == start:
        if claimed is not None:
            claimed.release()
        return f"its runner is alive (pid {pid}, started at tick {start})"
    if claimed is None:
        if pid is None or start is None:
            return (
                "no runner lock and no runner PID in its journal: cannot prove that its runner "
                "is dead; not touching it"
            )
        claimed = RunnerLock(None, path)
    return claimed
