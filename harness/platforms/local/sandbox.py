"""The run's sandbox: a private user + network + PID namespace, or the host as a fallback.

:class:`Sandbox` starts :mod:`harness.platforms.local.supervisor` (inside ``unshare`` when the
system allows user namespaces) and sends it requests. Everything the local platform runs —
sidecars, app instances, Locust, ``nft`` — runs through it, so it all lives in the same
network namespace and dies with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from harness.errors import PlatformError
from harness.platforms.local.processes import RUN_ID_ENV, child_namespaces
from harness.runlock import RUNNER_ENV, runner_marker

SCRATCH_ENV = "HARNESS_SCRATCH_DIR"

# --mount-proc gives the namespace its own /proc, so processes inside (Locust's CPU monitor,
# psutil, the supervisor) see their own PIDs rather than unrelated host processes.
NAMESPACE_ARGV = [
    "unshare",
    "--user",
    "--map-root-user",
    "--net",
    "--pid",
    "--mount-proc",
    "--fork",
    "--kill-child",
]


class Isolation(StrEnum):
    AUTO = "auto"
    NAMESPACE = "namespace"
    HOST = "host"


ISOLATION_ENV = "HARNESS_ISOLATION"


def isolation_requested(default: Isolation = Isolation.AUTO) -> Isolation:
    """The isolation to use: ``HARNESS_ISOLATION`` when set, else ``default``.

    Raises :class:`~harness.errors.PlatformError` naming the valid values for anything else.
    """
    value = os.environ.get(ISOLATION_ENV)
    if value is None:
        return default
    try:
        return Isolation(value)
    except ValueError:
        valid = ", ".join(mode.value for mode in Isolation)
        raise PlatformError(f"{ISOLATION_ENV}={value!r} is not one of: {valid}") from None


def _no_follow(path: str, flags: int) -> int:
    """Open a log without following a symlink planted at its name."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


@dataclass(frozen=True)
class SpawnRequest:
    """One process for :meth:`Sandbox.spawn_many` (the fields of :meth:`Sandbox.spawn`)."""

    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    preload: str | None = None


class Sandbox:
    """A running supervisor and the channel to it. Use :meth:`start`; always :meth:`close`."""

    def __init__(
        self, proc: subprocess.Popen[str], mode: Isolation, run_id: str, note: str
    ) -> None:
        self._proc = proc
        self._lock = threading.Lock()
        self.mode = mode
        self.run_id = run_id
        self.note = note  # why this isolation was chosen, for the output and the journal
        self.supervisor_pid = proc.pid
        self.namespaces: dict[str, str] = {}  # e.g. {"net": "net:[4026532…]"}, for leak checks

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        run_id: str,
        log_dir: Path,
        isolation: Isolation = Isolation.AUTO,
        scratch_dir: Path | None = None,
    ) -> Sandbox:
        """Start the supervisor; with ``AUTO`` fall back to the host when namespaces fail.

        ``scratch_dir`` (a ``hrn-*`` temporary directory) is removed by the supervisor if the
        harness dies without tearing down.
        """
        log_dir.mkdir(parents=True, exist_ok=True)
        requested = isolation_requested(isolation)
        if requested in (Isolation.AUTO, Isolation.NAMESPACE):
            reason = ""
            if shutil.which("unshare") is None:
                reason = "the 'unshare' command (util-linux) is not installed"
            else:
                try:
                    return cls._launch(
                        run_id,
                        log_dir,
                        Isolation.NAMESPACE,
                        "private user+network+PID namespace",
                        scratch_dir,
                    )
                except PlatformError as exc:
                    reason = str(exc)
            if requested is Isolation.NAMESPACE:
                raise PlatformError(
                    f"cannot create the run's namespaces: {reason}. Allow unprivileged user "
                    "namespaces (sysctl kernel.unprivileged_userns_clone=1) or run with "
                    "HARNESS_ISOLATION=host."
                )
            note = (
                f"user namespaces unavailable ({reason}); running on the host's loopback "
                "with free ports — partitions are emulated with toxiproxy in this mode"
            )
            return cls._launch(run_id, log_dir, Isolation.HOST, note, scratch_dir)
        return cls._launch(
            run_id, log_dir, Isolation.HOST, "host loopback (HARNESS_ISOLATION=host)", scratch_dir
        )

    @classmethod
    def _launch(
        cls, run_id: str, log_dir: Path, mode: Isolation, note: str, scratch_dir: Path | None
    ) -> Sandbox:
        argv = [sys.executable, "-m", "harness.platforms.local.supervisor", mode.value]
        if mode is Isolation.NAMESPACE:
            argv = [*NAMESPACE_ARGV, *argv]
        env = dict(os.environ)
        env[RUN_ID_ENV] = run_id
        if scratch_dir is not None:
            env[SCRATCH_ENV] = str(scratch_dir)
        # Every process of the run names its runner, so cleanup can tell a live run from a
        # dead one by the processes themselves, whatever a journal says (harness.runlock).
        env[RUNNER_ENV] = runner_marker(os.getpid())
        stderr_path = log_dir / f"supervisor-{mode.value}.log"
        with open(stderr_path, "ab", opener=_no_follow) as stderr:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                start_new_session=True,  # a terminal Ctrl-C must not reach it
                bufsize=1,
            )
        sandbox = cls(proc, mode, run_id, note)
        try:
            hello = sandbox._read_reply(timeout=15.0)
        except PlatformError as exc:
            hello = {"error": str(exc)}
        if not hello.get("ready"):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            sandbox._close_pipes()
            detail = stderr_path.read_text(errors="replace").strip().splitlines()
            raise PlatformError(detail[-1] if detail else f"supervisor did not start: {hello}")
        if mode is Isolation.NAMESPACE:
            sandbox.namespaces = child_namespaces(proc.pid)
        return sandbox

    def close(self, grace: float = 2.0) -> None:
        """Stop every process of the run and the supervisor (and so the namespaces)."""
        if self._proc.poll() is None:
            with contextlib.suppress(PlatformError):
                self.request("shutdown", grace=grace, wait=grace + 10.0)
            try:
                self._proc.wait(timeout=grace + 5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    # ------------------------------------------------------------------ requests

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        stdout: IO[str] | None = self._proc.stdout
        assert stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive() or not result or not result[0]:
            code = self._proc.poll()
            raise PlatformError(
                "the run's supervisor stopped answering"
                + (f" (exited with {code})" if code is not None else f" within {timeout:g}s")
            )
        reply: dict[str, Any] = json.loads(result[0])
        return reply

    def request(self, op: str, *, wait: float = 30.0, **fields: Any) -> dict[str, Any]:
        with self._lock:
            stdin = self._proc.stdin
            if stdin is None or self._proc.poll() is not None:
                raise PlatformError("the run's supervisor is not running")
            try:
                stdin.write(json.dumps({"op": op, **fields}) + "\n")
                stdin.flush()
            except BrokenPipeError:
                raise PlatformError("the run's supervisor is not running") from None
            reply = self._read_reply(wait)
        if not reply.get("ok"):
            raise PlatformError(f"{op} failed inside the sandbox: {reply.get('error')}")
        return reply

    def spawn(
        self,
        argv: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        replace_env: bool = False,
        cwd: Path | None = None,
        preload: str | None = None,
    ) -> int:
        """Start ``argv`` in the sandbox (in ``cwd`` if given); ``env`` adds to (or, with
        ``replace_env``, replaces) the supervisor's environment. The run id is always set.

        ``preload``: ``argv`` is ``[sys.executable, "-m", preload, ...]`` and the process may
        be forked from the supervisor, which imports that module once for all of them (the
        app instances: milliseconds each instead of a fresh interpreter's imports)."""
        full_env = {**(env or {}), RUN_ID_ENV: self.run_id}
        reply = self.request(
            "spawn",
            argv=argv,
            preload=preload,
            env=full_env,
            replace_env=replace_env,
            stdout=str(log_path),
            stderr=str(log_path),
            cwd=None if cwd is None else str(cwd),
        )
        return int(reply["pid"])

    def spawn_many(self, processes: Sequence[SpawnRequest]) -> list[int]:
        """Start every process in one request (their PIDs in order): the supervisor spawns
        them back to back, without a round trip to the harness between two, which on a
        busy machine is most of the cost of starting dozens of processes."""
        requests = [
            {
                "argv": process.argv,
                "env": {**(process.env or {}), RUN_ID_ENV: self.run_id},
                "stdout": str(process.log_path),
                "stderr": str(process.log_path),
                "preload": process.preload,
            }
            for process in processes
        ]
        reply = self.request("spawn_many", wait=30.0 + 0.5 * len(requests), requests=requests)
        return [int(pid) for pid in reply["pids"]]

    def signal(self, pid: int, sig: str = "SIGTERM") -> None:
        self.request("signal", pid=pid, sig=sig)

    def running(self, pid: int) -> tuple[bool, int | None]:
        reply = self.request("status", pid=pid)
        return bool(reply["running"]), reply.get("exit_code")

    def state(self, pid: int) -> str | None:
        """The kernel's state letter of a process started with :meth:`spawn` (``R``, ``S``,
        ``T`` for stopped, ...), read from ``/proc`` inside the sandbox; None once it is gone."""
        state = self.request("state", pid=pid).get("state")
        return None if state is None else str(state)

    def wait_tcp(self, host: str, port: int, timeout: float) -> bool:
        reply = self.request("wait_tcp", host=host, port=port, timeout=timeout, wait=timeout + 5.0)
        return bool(reply["ready"])

    def http_get(self, url: str, *, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``url`` from inside the sandbox: (status, body); status 0 on transport errors."""
        reply = self.request("http_get", url=url, timeout=timeout, wait=timeout + 5.0)
        return int(reply["status"]), str(reply["body"])

    def http(
        self,
        method: str,
        url: str,
        *,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> tuple[int, str]:
        """Any HTTP call from inside the sandbox (for APIs that listen only in the namespace):
        (status, body); status 0 on transport errors, with the reason as the body."""
        reply = self.request(
            "http",
            method=method,
            url=url,
            body=body,
            headers=headers or {},
            timeout=timeout,
            wait=timeout + 5.0,
        )
        return int(reply["status"]), str(reply["body"])

    def forward(self, unix_path: Path, host: str, port: int) -> None:
        """Make the namespace's TCP ``host:port`` reachable from the host as the Unix socket
        ``unix_path`` (served by the supervisor; gone with it)."""
        self.request("forward", path=str(unix_path), host=host, port=port)

    def run(
        self, argv: list[str], *, timeout: float = 10.0, input_text: str | None = None
    ) -> tuple[int, str, str]:
        reply = self.request(
            "run", argv=argv, input=input_text, timeout=timeout, wait=timeout + 5.0
        )
        return int(reply["code"]), str(reply["stdout"]), str(reply["stderr"])
