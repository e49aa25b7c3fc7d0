"""How the harness treats SIGINT, SIGTERM and SIGHUP: once to stop, never during a revert.

* :class:`SignalGuard` (the runner installs it for the whole run) turns the first signal
  into :class:`~harness.errors.Interrupted`; after that, and once the run is reverting and
  cleaning up (``shield()``), further signals are only logged. A second Ctrl-C therefore
  cannot abort the revert of the faults.
* :func:`signals_deferred` (every fault revert runs inside it) blocks the signals until the
  block ends, so a revert is never cut short even between two Python instructions.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from harness.errors import Interrupted

__all__ = ["SignalGuard", "signals_deferred"]

Log = Callable[[str], None]


class SignalGuard:
    """SIGINT/SIGTERM/SIGHUP raise :class:`Interrupted` once; during cleanup they are ignored.

    A second Ctrl-C therefore cannot abort the revert of the faults.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, log: Log, enabled: bool) -> None:
        self.log = log
        self.enabled = enabled
        self.shielded = False
        self.received: str | None = None  # the first signal's name
        self._previous: dict[signal.Signals, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.shielded or self.received is not None:
            self.log(f"{name} received: still reverting faults and cleaning up, please wait")
            return
        self.received = name
        raise Interrupted(name)

    def raise_pending(self) -> None:
        """Raise :class:`Interrupted` again if a signal came and the run is still going.

        The run loops call this at every tick: an :class:`Interrupted` raised while the main
        thread was inside a block that swallows errors (a best-effort probe, say) would
        otherwise be lost, and the run would go on with every later signal only logged.
        """
        if self.received is not None and not self.shielded:
            raise Interrupted(self.received)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        if not self.enabled:
            yield self
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]

    def shield(self) -> None:
        self.shielded = True


_DEFERRED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, so a revert is never cut short."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
