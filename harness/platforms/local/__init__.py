"""The local platform: every app instance behind a real Envoy sidecar, in a private namespace.

The names below load on first use (PEP 562): the supervisor, started inside the run's
namespace as ``python -m harness.platforms.local.supervisor``, must not pay for importing
the platform (pydantic, the mesh translation) at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.platforms.local.deploy import LocalPlatform
    from harness.platforms.local.platform import LocalDeployment
    from harness.platforms.local.sandbox import Isolation, Sandbox

__all__ = ["Isolation", "LocalDeployment", "LocalPlatform", "Sandbox"]

_HOMES = {
    "Isolation": "harness.platforms.local.sandbox",
    "Sandbox": "harness.platforms.local.sandbox",
    "LocalDeployment": "harness.platforms.local.platform",
    "LocalPlatform": "harness.platforms.local.deploy",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
