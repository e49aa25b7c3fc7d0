"""Byte forwarders that let the harness reach TCP services inside the run's network namespace.

The harness process stays on the host; the kube-apiserver and each pilot-agent's Envoy admin
API listen only inside the namespace. A Unix socket is a file, visible from both sides, so:

* inside, the supervisor serves a Unix socket and forwards each connection to a TCP address
  of the namespace (:func:`serve_unix_to_tcp`, the supervisor's ``forward`` request);
* outside, where a client only speaks TCP (the ``kubernetes`` client), :class:`TcpToUnix`
  listens on an ephemeral loopback port and forwards to that Unix socket.

Both are plain threads with blocking sockets: a handful of connections, no protocol parsing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable

__all__ = ["TcpToUnix", "serve_forwarding", "serve_unix_to_tcp"]

_CHUNK = 65536


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy ``source`` to ``target`` until EOF, then half-close ``target``'s write side."""
    try:
        while data := source.recv(_CHUNK):
            target.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    """Forward both directions; close both sockets when both directions are done."""
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept_loop(listener: socket.socket, dial: Callable[[], socket.socket]) -> None:
    """Accept until the listener is closed; each client gets its own upstream connection."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return  # listener closed
        try:
            upstream = dial()
        except OSError:
            client.close()
            continue
        threading.Thread(target=_splice, args=(client, upstream), daemon=True).start()


def serve_forwarding(listener: socket.socket, dial: Callable[[], socket.socket]) -> None:
    """Forward every connection accepted on ``listener`` to a fresh ``dial()`` connection, on
    a daemon thread, until the listener is closed (the local cluster's host forwarder)."""
    threading.Thread(target=_accept_loop, args=(listener, dial), daemon=True).start()


def serve_unix_to_tcp(path: str, host: str, port: int) -> socket.socket:
    """Listen on the Unix socket ``path`` (replacing a stale file) and forward every connection
    to ``host:port``; returns the listening socket (close it to stop accepting)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)

    def dial() -> socket.socket:
        return socket.create_connection((host, port), timeout=10.0)

    threading.Thread(target=_accept_loop, args=(listener, dial), daemon=True).start()
    return listener


class TcpToUnix:
    """A loopback TCP port on the host forwarding to a Unix socket; :meth:`close` stops it."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])

        def dial() -> socket.socket:
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(unix_path)
            except OSError:
                upstream.close()
                raise
            return upstream

        threading.Thread(target=_accept_loop, args=(self._listener, dial), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
