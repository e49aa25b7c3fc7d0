"""The game day's OpenMetrics endpoint: the console's numbers, for Prometheus and Grafana.

``MetricsServer`` serves ``GET /metrics`` from a standard-library HTTP server on a thread,
bound to 127.0.0.1 only (``port=0``: a free port, see :attr:`MetricsServer.url`). Every
scrape renders the latest :class:`~harness.observe.live.LiveSnapshot` and
:class:`~harness.control.RunView` as OpenMetrics text 1.0.0 (it ends with ``# EOF``)::

    harness_requests_total 5231           counter: requests completed at the ingress
    harness_request_errors_total 17       counter: of those, failed
    harness_offered_rate 40               gauge: requests scheduled in the last settled second
    harness_achieved_rate 39              gauge: requests completed in it
    harness_error_rate 1                  gauge: failed requests completed in it
    harness_latency_p50_seconds 0.004     gauge: of its successful requests, from the
    harness_latency_p99_seconds 0.012       intended start (absent in a second without any)
    harness_fault_active{fault=,kind=} 1  gauge: 1 while the fault is injected
    harness_phase{harness_phase=} 1       stateset: the phase that runs
    harness_phase_remaining_seconds 12.5  gauge
    harness_slo_verdict{slo=,phase=,harness_slo_verdict=} 1    stateset: provisional verdict
    harness_slo_measured{slo=,phase=}     gauge: its point estimate (ratio or seconds)
    harness_run_info{run_id=,scenario=} 1 info
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.control import RunView
from harness.observe.live import LiveSnapshot

__all__ = ["CONTENT_TYPE", "MetricsServer", "render_openmetrics"]

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
VERDICTS = ("PASS", "FAIL", "INCONCLUSIVE")


def _label(value: str) -> str:
    """A label value escaped as OpenMetrics wants it (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_label(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _family(name: str, kind: str, help_text: str, unit: str | None = None) -> Iterator[str]:
    yield f"# TYPE {name} {kind}"
    if unit:
        yield f"# UNIT {name} {unit}"
    yield f"# HELP {name} {help_text}"


def _load_lines(live: LiveSnapshot) -> Iterator[str]:
    yield from _family("harness_requests", "counter", "Requests completed at the ingress.")
    yield f"harness_requests_total {live.requests_total}"
    yield from _family("harness_request_errors", "counter", "Requests that failed.")
    yield f"harness_request_errors_total {live.errors_total}"
    last = live.last
    rates = (
        ("harness_offered_rate", "Requests scheduled to start in the last settled second."),
        ("harness_achieved_rate", "Requests completed in the last settled second."),
        ("harness_error_rate", "Failed requests completed in the last settled second."),
    )
    values = (last.offered, last.achieved, last.errors) if last else (None, None, None)
    for (name, help_text), value in zip(rates, values, strict=True):
        yield from _family(name, "gauge", help_text)
        if value is not None:
            yield f"{name} {value}"
    for quantile, ms in (
        ("p50", last.p50_ms if last else None),
        ("p99", last.p99_ms if last else None),
    ):
        name = f"harness_latency_{quantile}_seconds"
        yield from _family(
            name,
            "gauge",
            f"{quantile} latency of the last settled second's successful requests, from "
            "their intended start.",
            "seconds",
        )
        if ms is not None:
            yield f"{name} {_number(ms / 1000.0)}"


def _run_lines(view: RunView, phases: tuple[str, ...], scenario: str) -> Iterator[str]:
    yield from _family("harness_run", "info", "The game day's run.")
    yield f"harness_run_info{_labels(run_id=view.run_id, scenario=scenario)} 1"
    yield from _family("harness_fault_active", "gauge", "1 while the fault is injected.")
    for fault in view.faults:
        active = 1 if fault.state == "active" else 0
        yield f"harness_fault_active{_labels(fault=fault.name, kind=fault.kind)} {active}"
    yield from _family("harness_phase", "stateset", "The phase that runs now.")
    for name in phases:
        yield f"harness_phase{_labels(harness_phase=name)} {1 if name == view.phase else 0}"
    yield from _family(
        "harness_phase_remaining_seconds", "gauge", "Time left in the phase.", "seconds"
    )
    if view.phase_end is not None:
        left = max(0.0, view.phase_end - time.time())
        yield f"harness_phase_remaining_seconds {_number(round(left, 3))}"


def _slo_lines(live: LiveSnapshot) -> Iterator[str]:
    yield from _family(
        "harness_slo_verdict", "stateset", "Provisional verdict of each SLO in each phase."
    )
    for result in live.slos:
        for verdict in VERDICTS:
            labels = _labels(slo=result.slo, phase=result.phase, harness_slo_verdict=verdict)
            yield f"harness_slo_verdict{labels} {1 if result.verdict == verdict else 0}"
    yield from _family(
        "harness_slo_measured", "gauge", "Point estimate of each SLO so far (ratio or seconds)."
    )
    for result in live.slos:
        if result.measured is not None:
            labels = _labels(slo=result.slo, phase=result.phase)
            yield f"harness_slo_measured{labels} {_number(result.measured)}"


def render_openmetrics(
    view: RunView, live: LiveSnapshot, phases: tuple[str, ...], scenario: str
) -> str:
    """The exposition text of one scrape."""
    lines = [*_run_lines(view, phases, scenario), *_load_lines(live), *_slo_lines(live)]
    return "\n".join([*lines, "# EOF"]) + "\n"


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:``port`` from a daemon thread, until :meth:`close`."""

    def __init__(self, render: Callable[[], str], port: int = 0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the console owns the terminal

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="harness-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
