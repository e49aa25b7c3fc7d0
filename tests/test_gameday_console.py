"""A game day driven through a real terminal: tmux runs ``harness gameday``, the test reads
the screen with ``capture-pane``, presses keys with ``send-keys``, scrapes the OpenMetrics
endpoint over HTTP and parses it with prometheus_client's parser.

It starts the game day (real Envoy, app processes, Locust), injects the fault with key 1,
sees the fault gauge go to 1 and the request and error counters move, adds a note, halts
with key h, and then finds the manual fault (injected, reverted, verified), the note and
the halt in the journal, and no process of the run left.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness.errors import ExitCode
from harness.faults.base import UndoJournal
from harness.gameday.metrics import CONTENT_TYPE
from harness.journal import Journal
from harness.platforms.local.processes import namespace_members, run_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "data" / "gameday.yaml"
URL = re.compile(r"http://127\.0\.0\.1:\d+/metrics")
NOTE = "errors climbing on checkout — paging catalog"


@dataclass
class Terminal:
    """One tmux server of our own (its socket in the test's directory), one 140x60 window."""

    tmux: str
    socket: Path

    def run(self, *args: str) -> str:
        argv = [self.tmux, "-S", str(self.socket), "-f", "/dev/null", *args]
        # pytest's capture sets COLUMNS=80/LINES=24; the server (and so the console) would
        # inherit them and draw 80 columns in a 140-column window.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "gameday")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.run("send-keys", "-t", "gameday", *(["-l"] if literal else []), *keys)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is not installed: apt-get install tmux (.ci/run does)")
    term = Terminal(tmux, tmp_path / "tmux.sock")
    yield term
    # Only our own server, by its socket; the game day has exited by now.
    subprocess.run([tmux, "-S", str(term.socket), "kill-server"], check=False, capture_output=True)


def wait_for(
    what: str, check: Callable[[], object], within: float, done: Path, term: Terminal
) -> object:
    """Poll ``check`` until it returns something true; fail with the screen otherwise."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if done.exists():
            pytest.fail(
                f"the game day exited (code {done.read_text().strip()}) before: {what}\n"
                + term.screen()
            )
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for: {what}\n" + term.screen())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One real scrape, parsed as OpenMetrics: (sample name, labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = response.read().decode("utf-8")
    assert text.endswith("# EOF\n")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


FAULT = ("harness_fault_active", (("fault", "catalog-aborts"), ("kind", "http")))
REQUESTS = ("harness_requests_total", ())
ERRORS = ("harness_request_errors_total", ())


def test_a_game_day_steered_from_the_terminal(tmp_path: Path, terminal: Terminal) -> None:
    reports = tmp_path / "reports"
    done = tmp_path / "exit-code"
    command = (
        f"cd {shlex.quote(str(ROOT))} && PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m harness.cli gameday {shlex.quote(str(SCENARIO))} "
        f"--reports {shlex.quote(str(reports))} --metrics-port 0; "
        f"echo $? > {shlex.quote(str(done))}.tmp && mv {shlex.quote(str(done))}.tmp "
        f"{shlex.quote(str(done))}; sleep 600"
    )
    terminal.run("new-session", "-d", "-s", "gameday", "-x", "140", "-y", "60", command)

    # The console is up and the first phase runs.
    wait_for(
        "the console in phase baseline",
        lambda: "RUNNING" in (s := terminal.screen()) and "phase baseline" in s,
        120,
        done,
        terminal,
    )
    match = URL.search(terminal.screen())
    assert match, terminal.screen()
    url = match.group(0)
    before = scrape(url)
    assert before[FAULT] == 0
    assert ("harness_phase", (("harness_phase", "baseline"),)) in before

    # Key 1 injects the (fault-phase) fault now; the endpoint and the console say so, and
    # the requests it aborts show up as errors.
    terminal.keys("1")
    on_screen = lambda text: lambda: text in terminal.screen()  # noqa: E731
    wait_for("the manual fault on the console", on_screen("ACTIVE (manual)"), 30, done, terminal)
    during = wait_for(
        "fault gauge 1 and errors counted",
        lambda: (m := scrape(url))[FAULT] == 1 and m[ERRORS] > before[ERRORS] and m,
        30,
        done,
        terminal,
    )
    assert isinstance(during, dict)
    assert during[REQUESTS] > before[REQUESTS]

    # A note, typed after n, then halt with h.
    terminal.keys("n")
    terminal.keys(NOTE, literal=True)
    terminal.keys("Enter")
    wait_for("the note in the console's log", on_screen("operator: note"), 30, done, terminal)
    terminal.keys("h")
    wait_for("the game day to exit", done.exists, 90, done.parent / "never", terminal)
    assert int(done.read_text()) == ExitCode.INTERRUPTED, terminal.screen()

    (journal_path,) = reports.glob("gameday-small/*/journal.json")
    journal = Journal.read(journal_path)
    assert journal.status == "interrupted" and journal.verdict == "INTERRUPTED"
    assert journal.error == "halted: halted by the operator"
    assert [a.kind for a in journal.actions] == ["inject", "note", "halt"]
    inject, note, halt = journal.actions
    assert inject.fault == "catalog-aborts" and inject.error is None
    assert note.text == NOTE and note.phase == "baseline"
    (fault,) = journal.faults
    assert fault.trigger == "operator" and fault.phase == "baseline"
    assert fault.injected_at is not None and fault.reverted_at is not None
    assert inject.at <= fault.injected_at < note.at < halt.at <= fault.reverted_at
    assert fault.revert_verified and fault.took_effect, fault.effect_message
    assert UndoJournal(journal_path.parent / "undo.jsonl").outstanding() == []
    # The halted phase was kept up to the halt and judged like any other.
    assert [w.name for w in journal.phases] == ["baseline"]
    assert {r.slo for r in journal.slos} == {"e2e-error-rate", "p99-latency"}
    assert "Operator actions" in (journal_path.parent / "report.html").read_text()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = run_processes(journal.run_id)
        members = [
            p for ns in journal.namespaces.values() for p in namespace_members(ns, journal.run_id)
        ]
        if not left and not members:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"left behind: processes {left}, namespace members {members}")
