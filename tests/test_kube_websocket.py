"""Websocket openings to the API server (exec, port-forward) go one at a time: the client's
``stream``/``portforward`` swap the shared ApiClient's ``call_api`` while they open, and two at
once can leave it swapped (harness.platforms.kube.websocket). The real swap is shown first;
then the lock, with the client's functions replaced by recorders (no cluster here)."""

from __future__ import annotations

import threading
import time
from typing import Any

import kubernetes.client
import kubernetes.stream
import pytest

from harness.platforms.kube import websocket


def test_the_clients_swap_is_what_two_threads_can_leave_behind() -> None:
    """What the lock guards against: inside an opening, the ApiClient's ``call_api`` is not
    its own; one that started meanwhile would save and later put back that stand-in."""
    api = kubernetes.client.ApiClient(kubernetes.client.Configuration())
    core = kubernetes.client.CoreV1Api(api)
    own = api.call_api
    seen: list[Any] = []

    def websocket_call(configuration: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(api.call_api)
        raise RuntimeError("no server")

    with pytest.raises(RuntimeError):
        kubernetes.stream.stream.func(
            websocket_call, None, core.connect_get_namespaced_pod_exec, "p", "ns", command=["x"]
        )
    assert seen and seen[0] != own  # swapped while opening
    assert api.call_api == own  # and put back, when alone


def test_openings_go_one_at_a_time_and_never_through_the_shared_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = kubernetes.client.ApiClient(kubernetes.client.Configuration())
    core = kubernetes.client.CoreV1Api(shared)
    inside = 0
    most = 0
    used: list[Any] = []
    lock = threading.Lock()

    def opening(api_method: Any, *args: Any, **kwargs: Any) -> str:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
            used.append(api_method.__self__.api_client)
        time.sleep(0.02)
        with lock:
            inside -= 1
        return "stream"

    monkeypatch.setattr(kubernetes.stream, "stream", opening)
    monkeypatch.setattr(kubernetes.stream, "portforward", opening)
    threads = [
        threading.Thread(target=websocket.open_exec, args=(core.connect_get_namespaced_pod_exec,)),
        threading.Thread(
            target=websocket.open_portforward, args=(core.connect_get_namespaced_pod_portforward,)
        ),
    ]
    threads += [
        threading.Thread(target=websocket.open_exec, args=(core.connect_get_namespaced_pod_exec,))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert most == 1
    # Every opening used one other client, of the same configuration: the shared one, which
    # plain API calls in other threads use meanwhile, is never swapped.
    assert len(used) == 6 and len({id(client) for client in used}) == 1
    assert used[0] is not shared and used[0].configuration is shared.configuration
