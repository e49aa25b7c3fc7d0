"""The local platform: every app instance behind a real Envoy sidecar, in a private namespace."""

from harness.platforms.local.platform import LocalDeployment, LocalPlatform
from harness.platforms.local.sandbox import Isolation, Sandbox

__all__ = ["Isolation", "LocalDeployment", "LocalPlatform", "Sandbox"]
