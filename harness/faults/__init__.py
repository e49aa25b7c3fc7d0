"""Fault injectors: each records its intent, injects, proves its effect and reverts.

One module per fault kind; :func:`build_injector` picks it from the scenario's ``kind``:

====================  ========================================  ==========================
kind                  how (local platform)                      evidence of effect
====================  ========================================  ==========================
``http``              Envoy fault filter runtime keys           aborts/delays injected
``toxic``             toxiproxy between caller and callee       toxic present, bytes/conns
``partition``         nftables in the run's network namespace   rule packet counters
``kill`` / ``pause``  signals to the instance's processes       process state
``controlPlane``      istiod / API server killed, paused, or    process state, nft counters
                      the sidecars cut from istiod (nft)
``trafficShift``      route weight runtime keys in the callers  requests on the subset
====================  ========================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from harness.faults import controlplane, http, partition, process, toxic, traffic
from harness.faults.base import Adjustable, Injector, UndoJournal, applied, select_instances
from harness.faults.http import HttpFaultInjector
from harness.platforms.base import Deployment
from harness.scenario.models import (
    ControlPlaneFault,
    Fault,
    HttpFault,
    KillFault,
    PartitionFault,
    PauseFault,
    ToxicFault,
    TrafficShiftFault,
)

InjectorFactory = Callable[[Fault, str, Deployment], Injector]
"""What the runner builds its injectors with (:func:`build_injector`; a fake in tests)."""


def build_injector(fault: Fault, name: str, deployment: Deployment) -> Injector:
    """The injector for one scenario fault on a running deployment."""
    match fault:
        case HttpFault():
            return http.from_scenario(fault, name, deployment)
        case ToxicFault():
            return toxic.from_scenario(fault, name, deployment)
        case PartitionFault():
            return partition.from_scenario(fault, name, deployment)
        case KillFault() | PauseFault():
            return process.from_scenario(fault, name, deployment)
        case ControlPlaneFault():
            return controlplane.from_scenario(fault, name, deployment)
        case TrafficShiftFault():
            return traffic.from_scenario(fault, name, deployment)
        case _:
            assert_never(fault)


__all__ = [
    "Adjustable",
    "HttpFaultInjector",
    "Injector",
    "InjectorFactory",
    "UndoJournal",
    "applied",
    "build_injector",
    "select_instances",
]
