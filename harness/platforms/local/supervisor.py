"""The run's supervisor: PID 1 of the run's private namespaces (or a plain child on the host).

The harness starts it as ``unshare --user --map-root-user --net --pid --fork --kill-child
python -m harness.platforms.local.supervisor`` and talks to it over its stdin/stdout, one JSON
object per line. Inside, it brings ``lo`` up and starts, signals and reaps every process of the
deployment (Envoys, app instances, Locust) and runs short commands (``nft``).

Crash safety by construction: when the harness dies, even by ``kill -9``, the supervisor reads
EOF on stdin, kills every child and exits; as PID 1 of the PID namespace its exit makes the
kernel kill whatever is left, and the network namespace (with its nft rules) disappears.

Requests: ``{"op": "spawn", "argv": [...], "env": {...}, "stdout": path, "stderr": path}``
(with ``"preload": module`` and an argv of ``python -m module ...``, the process is a fork of
the supervisor, which imported ``module`` once: see :meth:`Supervisor.fork`),
``{"op": "spawn_many", "requests": [spawn, ...]}`` (their ``"pids"`` back, in order),
``{"op": "signal", "pid": n, "sig": "SIGTERM"}``, ``{"op": "status", "pid": n}``,
``{"op": "state", "pid": n}`` (the process's state letter from ``/proc``, e.g. ``T`` stopped),
``{"op": "wait_tcp", "host": h, "port": p, "timeout": s}``,
``{"op": "run", "argv": [...], "timeout": s, "input": text}``,
``{"op": "http_get", "url": u, "timeout": s}``,
``{"op": "http", "method": m, "url": u, "body": text, "headers": {...}, "timeout": s}``
(any HTTP call, e.g. to an API that listens only inside the namespace: toxiproxy's),
``{"op": "forward", "path": unix_socket, "host": h, "port": p}`` (serve a Unix socket that
forwards to a TCP address of the namespace: how the harness reaches the kube-apiserver and
pilot-agent's Envoy admin APIs under ``--mesh istio``, see :mod:`.forward`),
``{"op": "shutdown", "grace": s}``.
Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": msg}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any


def _no_follow(path: str, flags: int) -> int:
    """Open a log without following a symlink planted at its name."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_HTTP_BODY_MAX = 1 << 20


def bring_loopback_up() -> None:
    """``ip link set lo up`` without iproute2 (a fresh network namespace has lo down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _nspid(host_pid: int | str) -> int | None:
    """The innermost PID of a process (its ``NSpid`` line's last field), or None if gone."""
    try:
        with open(f"/proc/{host_pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def _same_pid_namespace(host_pid: int | str, own: str) -> bool:
    try:
        return os.readlink(f"/proc/{host_pid}/ns/pid") == own
    except OSError:
        return False


def _host_pid(ns_pid: int) -> int | None:
    """Translate a PID of our namespace to the PID ``/proc`` knows it by."""
    own = os.readlink("/proc/self/ns/pid")
    # Host mode (or a procfs of our own namespace): the numbers agree.
    if _same_pid_namespace(ns_pid, own) and _nspid(ns_pid) == ns_pid:
        return ns_pid
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _same_pid_namespace(entry, own) and _nspid(entry) == ns_pid:
            return int(entry)
    return None


def _proc_state(host_pid: int) -> str | None:
    """Field 3 of ``/proc/<pid>/stat`` (after the parenthesised command, which may hold spaces)."""
    try:
        with open(f"/proc/{host_pid}/stat", encoding="utf-8", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split(" ", 1)[0] or None


class _Forked:
    """A child forked from the supervisor (not exec'd), with the parts of ``Popen`` the
    supervisor uses: ``poll``, ``terminate``, ``kill``, ``wait``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: the code is lost
                self.returncode = -signal.SIGKILL
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.005)
        return code


def _run_forked(main: Any, req: dict[str, Any], env: dict[str, str], fds: tuple[int, int]) -> None:
    """In the forked child: become the requested process and run ``main``; never returns.

    What an exec would give it: stdin from /dev/null, the log on stdout and stderr, only
    those descriptors open, the requested environment, cwd and argv, and death with the
    supervisor. (``/proc/<pid>/environ`` keeps the supervisor's start environment, which
    carries the run id that ``harness cleanup`` looks for.)"""
    code = 1
    try:
        _die_with_parent()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        os.closerange(3, 65536)
        os.environ.clear()
        os.environ.update(env)
        if req.get("cwd"):
            os.chdir(req["cwd"])
        sys.argv = list(req["argv"][2:])  # as "python -m module args": the module's name first
        code = int(main(list(req["argv"][3:])) or 0)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class Supervisor:
    def __init__(self, *, pid_one: bool = False) -> None:
        # As PID 1 of the run's PID namespace our exit kills every process in it, so children
        # need no death signal of their own: without preexec_fn, Popen uses vfork, which
        # spawns several times faster on a busy machine. On the host each child gets one.
        self.pid_one = pid_one
        self.children: dict[int, subprocess.Popen[bytes] | _Forked] = {}
        self.exited: dict[int, int] = {}
        self.forwards: dict[str, socket.socket] = {}

    def reap(self) -> None:
        for pid, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                self.exited[pid] = code
                del self.children[pid]
        # As PID 1 we also inherit orphans (e.g. grandchildren): reap them too.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:  # ours, and gone since its poll() just above
                self.exited[pid] = os.waitstatus_to_exitcode(status)
                del self.children[pid]

    def spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        # "replace_env": the request's env is the whole environment (e.g. without LOCUST_*).
        env = {} if req.get("replace_env") else dict(os.environ)
        env.update(req.get("env") or {})
        preload = req.get("preload")
        argv = list(req["argv"])
        if (
            preload
            and argv[:3] == [sys.executable, "-m", preload]
            and threading.active_count() == 1  # fork only a single-threaded process
        ):
            return {"pid": self.fork(preload, req, env)}
        with (
            open(req.get("stdout") or os.devnull, "ab", opener=_no_follow) as out,
            open(req.get("stderr") or os.devnull, "ab", opener=_no_follow) as err,
        ):
            proc = subprocess.Popen(
                req["argv"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=req.get("cwd"),
                preexec_fn=None if self.pid_one else _die_with_parent,
                close_fds=True,
            )
        self.children[proc.pid] = proc
        return {"pid": proc.pid}

    def spawn_many(self, req: dict[str, Any]) -> dict[str, Any]:
        """Several spawns in one request, in order (a failure stops there: the ones started
        are children like any other, stopped at shutdown)."""
        return {"pids": [self.spawn(one)["pid"] for one in req["requests"]]}

    def fork(self, module_name: str, req: dict[str, Any], env: dict[str, str]) -> int:
        """``python -m module_name args`` as a fork of this process: the module is imported
        here once (at the first such spawn), so each instance starts in milliseconds of CPU
        instead of re-importing its libraries (an app instance: about 0.3 s of CPU for
        aiohttp), and the instances share those pages. The module must have ``main(argv)``."""
        main = importlib.import_module(module_name).main
        with (
            open(req.get("stdout") or os.devnull, "ab", opener=_no_follow) as out,
            open(req.get("stderr") or os.devnull, "ab", opener=_no_follow) as err,
        ):
            pid = os.fork()
            if pid == 0:
                _run_forked(main, req, env, (out.fileno(), err.fileno()))
        self.children[pid] = _Forked(pid)
        return pid

    def signal(self, req: dict[str, Any]) -> dict[str, Any]:
        pid = int(req["pid"])
        sig = signal.Signals[req.get("sig", "SIGTERM")]
        if pid not in self.children:
            self.reap()
            return {"sent": False, "exited": self.exited.get(pid)}
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return {"sent": True}

    def status(self, req: dict[str, Any]) -> dict[str, Any]:
        self.reap()
        pid = int(req["pid"])
        if pid in self.children:
            return {"running": True, "exit_code": None}
        return {"running": False, "exit_code": self.exited.get(pid)}

    def state(self, req: dict[str, Any]) -> dict[str, Any]:
        """The kernel's view of a child: its state letter (``R``, ``S``, ``T``...) or gone.

        PIDs here are the namespace's, but ``/proc`` is the host's procfs (there is no mount
        namespace), where the same number names another process. The child is found by its
        ``NSpid`` line among the processes of our own PID namespace.
        """
        self.reap()
        pid = int(req["pid"])
        if pid not in self.children:
            return {"state": None, "host_pid": None, "exit_code": self.exited.get(pid)}
        host_pid = _host_pid(pid)
        if host_pid is None:
            return {"state": None, "host_pid": None, "exit_code": None}
        return {"state": _proc_state(host_pid), "host_pid": host_pid, "exit_code": None}

    def wait_tcp(self, req: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + float(req.get("timeout", 10.0))
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((req["host"], int(req["port"])), timeout=0.5):
                    return {"ready": True}
            except OSError as exc:
                last = str(exc)
            time.sleep(0.02)
        return {"ready": False, "error": last}

    def http_get(self, req: dict[str, Any]) -> dict[str, Any]:
        """One GET from inside the namespace (readiness probes); any HTTP status is a reply."""
        headers = dict(req.get("headers") or {})
        request = urllib.request.Request(req["url"], headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=float(req.get("timeout", 5.0))) as resp:
                return {"status": resp.status, "body": resp.read(4096).decode("utf-8", "replace")}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "body": exc.read(4096).decode("utf-8", "replace")}
        except OSError as exc:
            return {"status": 0, "body": str(exc)}

    def http(self, req: dict[str, Any]) -> dict[str, Any]:
        """One HTTP call from inside the namespace; any HTTP status is a reply, status 0 a
        transport error (the body says which). Bodies are UTF-8 text, at most 1 MiB back."""
        body = req.get("body")
        request = urllib.request.Request(
            req["url"],
            data=None if body is None else str(body).encode("utf-8"),
            headers=dict(req.get("headers") or {}),
            method=str(req.get("method", "GET")).upper(),
        )
        try:
            with urllib.request.urlopen(request, timeout=float(req.get("timeout", 5.0))) as resp:
                return {
                    "status": resp.status,
                    "body": resp.read(_HTTP_BODY_MAX).decode("utf-8", "replace"),
                }
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "body": exc.read(_HTTP_BODY_MAX).decode("utf-8", "replace")}
        except OSError as exc:
            return {"status": 0, "body": str(exc)}

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        done = subprocess.run(
            req["argv"],
            input=req.get("input"),
            capture_output=True,
            text=True,
            timeout=float(req.get("timeout", 10.0)),
            check=False,
        )
        return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    def forward(self, req: dict[str, Any]) -> dict[str, Any]:
        """Serve the Unix socket ``path``, forwarding to ``host:port`` (threads of ours)."""
        from harness.platforms.local.forward import serve_unix_to_tcp

        path = str(req["path"])
        old = self.forwards.pop(path, None)
        if old is not None:
            old.close()
        self.forwards[path] = serve_unix_to_tcp(path, str(req["host"]), int(req["port"]))
        return {"path": path}

    def shutdown(self, grace: float) -> dict[str, Any]:
        for listener in self.forwards.values():
            with contextlib.suppress(OSError):
                listener.close()
        for proc in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + grace
        for proc in self.children.values():
            remaining = deadline - time.monotonic()
            try:
                proc.wait(timeout=max(remaining, 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        killed = len(self.children)
        self.reap()
        return {"stopped": killed}


def serve(mode: str) -> int:
    # The harness handles signals; a Ctrl-C in the terminal must not kill us mid-revert.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if mode == "namespace":
        bring_loopback_up()
    sup = Supervisor(pid_one=mode == "namespace" and os.getpid() == 1)
    out = sys.stdout
    out.write(json.dumps({"ok": True, "ready": True, "mode": mode, "pid": os.getpid()}) + "\n")
    out.flush()
    handlers = {
        "spawn": sup.spawn,
        "spawn_many": sup.spawn_many,
        "signal": sup.signal,
        "status": sup.status,
        "state": sup.state,
        "wait_tcp": sup.wait_tcp,
        "run": sup.run,
        "http_get": sup.http_get,
        "http": sup.http,
        "forward": sup.forward,
    }
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "shutdown":
                reply: dict[str, Any] = sup.shutdown(float(req.get("grace", 2.0)))
                out.write(json.dumps({"ok": True, **reply}) + "\n")
                out.flush()
                return 0
            reply = handlers[op](req)
            reply = {"ok": True, **reply}
        except Exception as exc:  # every failure goes back to the harness as a reply
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    # EOF: the harness is gone (maybe kill -9). Take everything down with us, and the
    # harness's scratch directory of admin sockets too (only ever a hrn-* directory).
    sup.shutdown(0.5)
    scratch = os.environ.get("HARNESS_SCRATCH_DIR")
    if scratch and os.path.basename(scratch).startswith("hrn-"):
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1] if len(sys.argv) > 1 else "host"))
