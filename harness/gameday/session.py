"""One game day: the scenario runs on the main thread, the operator steers it from a console.

Threads, and who owns what::

    main            run_scenario(): the signal guard, the phase loop, every inject/revert
                    (it drains the operator's commands from OperatorControls each tick)
    harness-keys    TerminalKeys: keystrokes → KeyReader → OperatorControls.submit()
    harness-live    LiveLoad.update() once a second (samples → per-second rows, SLOs so far)
    rich Live       redraws the console a few times a second from the latest snapshots
    harness-metrics the OpenMetrics endpoint, rendering the same snapshots per scrape

Everything but the main thread only reads immutable snapshots or puts commands on the
queue, so a fault is never touched from two threads.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live

from harness.control import Command, OperatorControls
from harness.errors import HarnessError
from harness.gameday.console import ConsoleState, TerminalKeys, render
from harness.gameday.keys import KeyReader
from harness.gameday.metrics import MetricsServer, render_openmetrics
from harness.observe.live import LiveLoad
from harness.runner import RunOptions, RunResult, run_scenario
from harness.scenario.models import Scenario

__all__ = ["GameDayOptions", "run_gameday"]


@dataclass(frozen=True)
class GameDayOptions:
    metrics_port: int = 0  # 0: a free port
    extend_step_s: float = 30.0  # what the `e` key adds to the phase
    max_extension_s: float = 600.0  # at most this much added to the phases in all


class _LiveFeed:
    """Updates the live snapshot once a second on a daemon thread."""

    def __init__(self, live: LiveLoad, controls: OperatorControls, log: Callable[[str], None]):
        self.live = live
        self.controls = controls
        self.log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="harness-live", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.live.update(self.controls.view)
            except Exception as exc:  # the console must not take the run down
                self.log(f"live view: {type(exc).__name__}: {exc}")
                self._stop.wait(5.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.live.close()


def _describe(command: Command) -> str:
    return type(command).__name__ + " " + " ".join(str(v) for v in vars(command).values())


def run_gameday(
    scenario: Scenario,
    *,
    source: str | None,
    run_options: RunOptions,
    options: GameDayOptions,
    console: Console,
    announce: Callable[[str], None],
) -> RunResult:
    """Run ``scenario`` under an operator's console (stdin must be a terminal).

    ``announce`` gets the metrics URL before the console takes the screen.
    """
    controls = OperatorControls(max_extension_s=options.max_extension_s)
    run_options.controls = controls
    name = scenario.metadata.name
    phases = tuple(scenario.phase_names())
    live = LiveLoad(scenario)
    try:
        server = MetricsServer(
            lambda: render_openmetrics(controls.view, live.snapshot, phases, name),
            options.metrics_port,
        )
    except OSError as exc:
        raise HarnessError(
            f"--metrics-port {options.metrics_port}: cannot listen on 127.0.0.1: "
            f"{exc.strerror or exc}; pick another port, or 0 for a free one"
        ) from None
    announce(server.url)
    state = ConsoleState(name, server.url, KeyReader(options.extend_step_s))

    def on_key(key: str) -> None:
        command = state.keys.feed(key, controls.view.faults)
        if command is not None:
            state.keys.message = f"sent: {_describe(command)}"
            controls.submit(command)

    feed = _LiveFeed(live, controls, state.log)
    try:
        keys = TerminalKeys(sys.stdin.fileno(), on_key)
        try:
            with Live(
                get_renderable=lambda: render(controls.view, live.snapshot, state),
                console=console,
                screen=True,
                refresh_per_second=4,
                redirect_stdout=False,
                redirect_stderr=False,
            ):
                return run_scenario(scenario, source=source, options=run_options, log=state.log)
        finally:
            keys.close()
    finally:
        feed.close()
        server.close()
