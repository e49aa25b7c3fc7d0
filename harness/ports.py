"""Loopback TCP ports for the harness's own listeners, safe from other processes' sockets.

A port found free by binding port 0 comes from the kernel's ephemeral range, the range every
outgoing connection's source port comes from too. Between the moment it is found and the
moment the child process binds it, any connection on the machine (a load test in the next
pytest worker) can take it as its source port: "address already in use" one run in hundreds.

So ports are handed out below the ephemeral range, where connect() never goes, from a block
of :data:`BLOCK` ports that this process alone holds on the machine. The hold is an abstract
Unix socket named after the block: exclusive, gone when the process dies, no file left behind.
Each port is still checked free by binding it before it is handed out (a fixed-port service
may sit in the block); the block only keeps other harness processes off it.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
from pathlib import Path

__all__ = ["BLOCK", "free_port"]

LOOPBACK = "127.0.0.1"
BLOCK = 256
# Below Kubernetes' NodePort range (30000-32767: the local cluster's ingress forwarder binds
# 30080 on the host) and above the well-known and most registered services.
LOW, HIGH = 10000, 30000
_LOCK_PREFIX = b"\0harness-ports-"

_lock = threading.Lock()
# (pid that claimed it, (holder, first port) or None when every block was held)
_held: tuple[int, tuple[socket.socket, int] | None] | None = None
_next = 0


def _ephemeral_low() -> int:
    try:
        low, _ = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return 32768


def _claim_block() -> tuple[socket.socket, int] | None:
    """Hold the first free block, starting at one picked from the PID (so that concurrent
    processes rarely try the same ones first); ``None`` when every block is held."""
    high = min(HIGH, _ephemeral_low())
    count = max(0, (high - LOW) // BLOCK)
    for step in range(count):
        index = (os.getpid() + step) % count
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            holder.bind(_LOCK_PREFIX + str(index).encode())
        except OSError:
            holder.close()
            continue
        return holder, LOW + index * BLOCK
    return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _ephemeral() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A loopback TCP port free right now, which no other harness process will hand out and
    no outgoing connection will take; the caller binds it soon after."""
    global _next
    with _lock:
        block = _own_block()
        if block is not None:
            for _ in range(BLOCK):
                port = block + _next
                _next = (_next + 1) % BLOCK
                if _bindable(port):
                    return port
    return _ephemeral()


def _own_block() -> int | None:
    """The first port of this process's block, claimed on first use (again after a fork: a
    forked child must not hand out its parent's ports)."""
    global _held, _next
    if _held is None or _held[0] != os.getpid():
        if _held is not None and _held[1] is not None:
            _held[1][0].close()
        claimed = _claim_block()
        if claimed is not None:
            atexit.register(claimed[0].close)  # no "unclosed socket" at interpreter exit
        _held = (os.getpid(), claimed)
        _next = 0
    return None if _held[1] is None else _held[1][1]
