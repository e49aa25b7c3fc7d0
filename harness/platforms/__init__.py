"""Platforms deploy the sample app with its mesh: ``local`` (Envoy sidecars) and ``kind``."""

from harness.platforms.base import Deployment, InstanceInfo, Platform

__all__ = ["Deployment", "InstanceInfo", "Platform"]
