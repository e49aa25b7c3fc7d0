"""The ``kubernetes`` client's websocket calls (``exec``, port-forward), opened one at a time.

``kubernetes.stream.stream`` and ``portforward`` swap the ApiClient's ``call_api`` for the
length of the call and put back the one they found. Two threads opening at once on one
client (the mesh sampler's port-forward beside the run loop's ``exec``, or the partition's
``exec`` into several pods) can leave it swapped for good: every later plain API call would
then go over a websocket. Every opening here holds one lock; only the opening, the stream
itself is read and closed outside it.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["open_exec", "open_portforward"]

_OPENING = threading.Lock()


def open_exec(api_method: Any, *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.stream(api_method, ...)`` under the lock."""
    from kubernetes.stream import stream

    with _OPENING:
        return stream(api_method, *args, **kwargs)


def open_portforward(api_method: Any, *args: Any, **kwargs: Any) -> Any:
    """``kubernetes.stream.portforward(api_method, ...)`` under the lock."""
    from kubernetes.stream import portforward

    with _OPENING:
        return portforward(api_method, *args, **kwargs)
