"""Ports for the harness's own listeners: outside the ephemeral range, one block per process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ports


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test's own claim (and the module's claim restored after it)."""
    monkeypatch.setattr(ports, "_held", None)
    monkeypatch.setattr(ports, "_next", 0)
    yield
    held = ports._held
    if held is not None and held[1] is not None:
        held[1][0].close()


def block_of(port: int) -> int:
    return (port - ports.LOW) // ports.BLOCK


def test_ports_come_from_one_block_below_the_ephemeral_range(fresh: None) -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    handed = [ports.free_port() for _ in range(20)]
    assert len(set(handed)) == 20
    assert all(ports.LOW <= port < min(ports.HIGH, low) for port in handed)
    assert len({block_of(port) for port in handed}) == 1


def test_a_port_in_use_is_skipped(fresh: None) -> None:
    first = ports.free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", first + 1))
        listener.listen()
        assert ports.free_port() == first + 2


def test_another_process_gets_another_block(fresh: None) -> None:
    mine = ports.free_port()
    code = "from harness import ports; print(ports.free_port())"
    theirs = int(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert block_of(theirs) != block_of(mine)


def test_a_forked_child_claims_its_own_block(fresh: None) -> None:
    mine = ports.free_port()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, str(ports.free_port()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        theirs = int(pipe.read())
    assert block_of(theirs) != block_of(mine)


def test_every_block_held_falls_back_to_an_ephemeral_port(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A range of one block, held by someone else (under this test's own lock names).
    monkeypatch.setattr(ports, "LOW", 20000)
    monkeypatch.setattr(ports, "HIGH", 20000 + ports.BLOCK)
    prefix = b"\0harness-ports-test-%d-" % os.getpid()
    monkeypatch.setattr(ports, "_LOCK_PREFIX", prefix)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
        holder.bind(prefix + b"0")
        port = ports.free_port()
    assert not 20000 <= port < 20000 + ports.BLOCK
    with socket.socket() as check:
        check.bind(("127.0.0.1", port))
