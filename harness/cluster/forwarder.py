"""The local cluster's host forwarder: host loopback ports → addresses in the node's netns.

Run as its own detached process (``python -m harness.cluster.forwarder``, started by
:func:`harness.cluster.local.up`): it binds every host port first, then moves itself into the
node's network namespace with ``setns(CLONE_NEWNET)``, so every connection it *makes* starts
there while its listeners stay on the host. This is how the kubeconfig's server
(``https://127.0.0.1:<port>``) reaches the API server, and host ``127.0.0.1:30080`` reaches
the ingress NodePort (kind's ``extraPortMappings``, here).

Usage::

    python -m harness.cluster.forwarder NETNS_FILE 127.0.0.1:41000=127.0.0.1:6443 ...
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

from harness.platforms.local.forward import serve_forwarding

__all__ = ["Mapping", "enter_network_namespace", "main", "parse_mapping"]

CLONE_NEWNET = 0x40000000
Mapping = tuple[tuple[str, int], tuple[str, int]]


def parse_mapping(text: str) -> Mapping:
    """``HOST:PORT=HOST:PORT`` → ``((listen host, port), (target host, port))``."""
    listen, _, target = text.partition("=")
    pairs = []
    for side in (listen, target):
        host, _, port = side.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{text!r} is not LISTEN_HOST:PORT=TARGET_HOST:PORT")
        pairs.append((host, int(port)))
    return pairs[0], pairs[1]


def enter_network_namespace(path: str) -> None:
    """Move the calling thread (the whole process while it has one thread) into the
    network namespace held by the file ``path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def _dialer(target: tuple[str, int]) -> Callable[[], socket.socket]:
    def dial() -> socket.socket:
        return socket.create_connection(target, timeout=10.0)

    return dial


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    netns, mappings = argv[0], [parse_mapping(text) for text in argv[1:]]
    listeners = []
    for (host, port), _ in mappings:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
        listeners.append(listener)
    enter_network_namespace(netns)  # before any thread exists: the whole process moves
    for listener, (_, target) in zip(listeners, mappings, strict=True):
        serve_forwarding(listener, _dialer(target))
    print(f"forwarding {' '.join(argv[1:])} into {netns}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main(sys.argv[1:]))
