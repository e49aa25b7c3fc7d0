"""The HTML report of a run, rendered from its journal alone (design §8).

>>> from harness.report import write_report
>>> write_report(Path("reports/retries-mask-transient-errors/<run id>/journal.json"))
PosixPath('reports/retries-mask-transient-errors/<run id>/report.html')

``render_report(journal)`` returns the page as a string; ``write_index(reports, out)``
writes a suite page linking several reports with their verdicts.
"""

from __future__ import annotations

from harness.report.document import render_report, write_index, write_report

__all__ = ["render_report", "write_index", "write_report"]
