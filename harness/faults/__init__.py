"""Fault injectors: each records its intent, injects, proves its effect and reverts."""

from harness.faults.base import Injector, UndoJournal, applied
from harness.faults.http import HttpFaultInjector

__all__ = ["HttpFaultInjector", "Injector", "UndoJournal", "applied"]
