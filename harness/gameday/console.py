"""The game day's live terminal console: what the run does now, drawn with rich.

:func:`render` builds one frame from the runner's :class:`~harness.control.RunView`, the
:class:`~harness.observe.live.LiveSnapshot` and the key reader's state; the session redraws
it a few times a second (``rich.live.Live``). :class:`TerminalKeys` reads single keys from
the terminal in cbreak mode on a thread (Ctrl-C still sends SIGINT, which the run's signal
guard turns into a safe stop) and restores the terminal's mode when closed.
"""

from __future__ import annotations

import codecs
import os
import select
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness import formats
from harness.control import RunView
from harness.gameday.keys import KEY_HELP, KeyReader
from harness.journal import SloResult
from harness.observe.live import LiveSnapshot
from harness.terminal import plain

__all__ = ["ConsoleState", "TerminalKeys", "render"]

ROWS = 8  # seconds of load shown
LOG_LINES = 6
_STATE_STYLE = {"active": "bold red", "reverted": "green", "failed": "red", "pending": "dim"}
_VERDICT_STYLE = {"PASS": "green", "FAIL": "bold red", "INCONCLUSIVE": "yellow"}


class ConsoleState:
    """What only the console knows: the metrics URL, recent log lines, the key reader."""

    def __init__(self, scenario: str, metrics_url: str, keys: KeyReader) -> None:
        self.scenario = scenario
        self.metrics_url = metrics_url
        self.keys = keys
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._lock = threading.Lock()

    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            for line in str(message).splitlines() or [""]:
                self.lines.append(f"{stamp} {plain(line)}")

    def recent(self) -> list[str]:
        with self._lock:
            return list(self.lines)


def _header(view: RunView, state: ConsoleState, now: float) -> Text:
    text = Text()
    text.append("GAME DAY ", style="bold reverse")
    text.append(f" {plain(state.scenario)}  run {plain(view.run_id) or '…'}  ")
    text.append(view.stage.upper(), style="bold")
    if view.phase is not None and view.phase_end is not None:
        left = max(0.0, view.phase_end - now)
        text.append(f"  phase {plain(view.phase)}: {left:.0f}s left", style="bold cyan")
        text.append(f" (may extend {view.extension_left_s:g}s more)", style="dim")
    text.append(f"\nmetrics: {state.metrics_url}", style="dim")
    return text


def _load_table(view: RunView, live: LiveSnapshot) -> Table:
    table = Table(title="load per second (settled)", title_justify="left", expand=True)
    for column in ("t", "offered/s", "achieved/s", "errors/s", "p50", "p99"):
        table.add_column(column, justify="right", no_wrap=True)
    origin = view.load_started_at or 0.0
    for second in live.seconds[-ROWS:]:
        table.add_row(
            f"{second.t - origin:+.0f}s" if origin else str(second.t),
            str(second.offered),
            str(second.achieved),
            Text(str(second.errors), style="red" if second.errors else ""),
            formats.milliseconds(second.p50_ms),
            formats.milliseconds(second.p99_ms),
        )
    table.caption = f"requests {live.requests_total}, errors {live.errors_total}"
    return table


def _fault_table(view: RunView) -> Table:
    table = Table(title="faults", title_justify="left", expand=True)
    for column in ("key", "fault", "kind", "phase", "state"):
        table.add_column(column, no_wrap=True)
    for number, fault in enumerate(view.faults, 1):
        state = Text(fault.state.upper(), style=_STATE_STYLE.get(fault.state, ""))
        if fault.trigger == "operator":
            state.append(" (manual)")
        key = str(number) if number <= 9 else ""
        table.add_row(key, plain(fault.name), fault.kind, plain(fault.phase), state)
    return table


def _slo_table(slos: Sequence[SloResult], pending: Sequence[str]) -> Table:
    table = Table(title="SLOs so far (provisional)", title_justify="left", expand=True)
    for column in ("SLO", "phase", "verdict", "measured", "bounds", "max", "n"):
        table.add_column(column, no_wrap=True)
    for result in slos:
        table.add_row(
            plain(result.slo),
            plain(result.phase),
            Text(str(result.verdict), style=_VERDICT_STYLE.get(str(result.verdict), "")),
            formats.slo_value(result.measured, result.unit),
            formats.bounds(result.lower, result.upper, result.unit),
            formats.slo_value(result.objective, result.unit),
            str(result.n),
        )
    for name in pending:
        table.add_row(plain(name), "", Text("at the end", style="dim"), "", "", "", "")
    return table


def _footer(state: ConsoleState) -> Text:
    keys = state.keys
    if keys.line is not None:
        text = Text(":", style="bold")
        text.append(plain(keys.line))
        text.append("█", style="blink")
        text.append("   Enter: do it · Esc: cancel", style="dim")
    else:
        text = Text(KEY_HELP, style="bold")
    if keys.message:
        text.append(f"\n{plain(keys.message)}", style="yellow")
    return text


def render(view: RunView, live: LiveSnapshot, state: ConsoleState) -> RenderableType:
    """One frame of the console."""
    now = time.time()
    log = Text("\n".join(state.recent()))
    return Group(
        Panel(_header(view, state, now)),
        _load_table(view, live),
        _fault_table(view),
        _slo_table(live.slos, live.pending_slos),
        Panel(log, title="log", title_align="left"),
        _footer(state),
    )


class TerminalKeys:
    """Reads keys from a terminal in cbreak mode on a daemon thread until :meth:`close`."""

    def __init__(self, fd: int, on_key: Callable[[str], None]) -> None:
        self.fd = fd
        self.on_key = on_key
        self._saved = termios.tcgetattr(fd)
        self._stop = threading.Event()
        tty.setcbreak(fd)  # keys arrive one by one; Ctrl-C still raises SIGINT
        self._thread = threading.Thread(target=self._read, name="harness-keys", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(self.fd, 256)
            if not data:  # the terminal went away
                return
            for key in decoder.decode(data):
                self.on_key(key)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
