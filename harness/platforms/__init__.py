"""Platforms deploy the sample app with its mesh: ``local`` (Envoy sidecars) and ``kind``.

The names below load on first use (PEP 562), so that ``python -m
harness.platforms.local.supervisor`` — which runs inside every run's namespace — imports
only the standard library, not the whole harness.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.platforms.base import Deployment, InstanceInfo, Platform

__all__ = ["Deployment", "InstanceInfo", "Platform"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("harness.platforms.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
