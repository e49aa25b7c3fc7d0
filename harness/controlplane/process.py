"""Child processes of the control plane: output to a log file, stopped by PID, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LOOPBACK", "STOP_GRACE_S", "ChildProcess", "http_probe"]

LOOPBACK = "127.0.0.1"
# etcd, kube-apiserver and istiod take more than 10 s to honour SIGTERM, and hold nothing
# worth flushing (their data directory is thrown away): a short grace, then SIGKILL.
STOP_GRACE_S = 2.0


def http_probe(
    request: urllib.request.Request | str, context: ssl.SSLContext | None = None
) -> str | None:
    """One readiness probe: ``None`` on HTTP 200, else what was seen instead (for the
    timeout's message)."""
    try:
        with urllib.request.urlopen(request, timeout=2.0, context=context) as answer:
            return None if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read(500).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)


class ChildProcess:
    """A child process with its output in a log file; stopped by PID, never by name."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        environment: Mapping[str, str],
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **environment},
                cwd=cwd,
                start_new_session=True,  # a Ctrl-C to the harness is the harness's to handle
            )

    def exited(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, a short grace, then SIGKILL; reaps the child."""
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            self.popen.wait(10.0)
