"""The ``kubernetes`` client's websocket calls (``exec``, port-forward), kept off the shared
API client.

``kubernetes.stream.stream`` and ``portforward`` swap the ApiClient's ``call_api`` for the
length of the call. Any other thread using that client meanwhile goes over a websocket too
(CI: the mesh sampler opening a port-forward while the run loop read a pod, which failed
with "Missing required parameter `ports`"), and two openings at once can leave it swapped
for good. So every opening here goes through an ApiClient of its own, built from the same
configuration and used by nothing else, and one at a time (only the opening: the stream
itself is read and closed outside the lock).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["open_exec", "open_portforward"]

_OPENING = threading.Lock()
# configuration id → (that configuration, the ApiClient only openings use); under _OPENING.
_CLIENTS: dict[int, tuple[Any, Any]] = {}


def _on_own_client(api_method: Any) -> Any:
    """``api_method`` (a method of an API object such as ``CoreV1Api``) on the websocket-only
    ApiClient of the same configuration. Call with ``_OPENING`` held."""
    import kubernetes.client

    api = api_method.__self__
    configuration = api.api_client.configuration
    entry = _CLIENTS.get(id(configuration))
    if entry is None or entry[0] is not configuration:
        entry = (configuration, kubernetes.client.ApiClient(configuration))
        _CLIENTS[id(configuration)] = entry
    return getattr(type(api)(entry[1]), api_method.__name__)


def open_exec(api_method: Any, *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.stream(api_method, ...)``, off the shared client."""
    from kubernetes.stream import stream

    with _OPENING:
        return stream(_on_own_client(api_method), *args, **kwargs)


def open_portforward(api_method: Any, *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.portforward(api_method, ...)``, off the shared client."""
    from kubernetes.stream import portforward

    with _OPENING:
        return portforward(_on_own_client(api_method), *args, **kwargs)
