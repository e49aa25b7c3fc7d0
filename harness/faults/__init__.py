"""Fault injectors: each records its intent, injects, proves its effect and reverts."""

from harness.faults.base import FaultRecord, Injector, UndoJournal
from harness.faults.http import HttpFaultInjector

__all__ = ["FaultRecord", "HttpFaultInjector", "Injector", "UndoJournal"]
