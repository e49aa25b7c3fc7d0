"""``harness gameday``: run a scenario under an operator's live console and metrics endpoint.

:mod:`~harness.gameday.session` runs it, :mod:`~harness.gameday.console` draws it,
:mod:`~harness.gameday.keys` reads the operator's keys and commands, and
:mod:`~harness.gameday.metrics` serves the same numbers as OpenMetrics.
"""
