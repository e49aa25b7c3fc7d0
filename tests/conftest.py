"""Shared test settings."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session", autouse=True)
def _require_tools() -> None:
    """The suite runs the real things; fail loudly (not skip) when they are missing."""
    missing = [tool for tool in ("unshare",) if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing tools for the test suite: {missing}; run .ci/run to install them")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


INTEGRATION_RERUNS = 1
"""How many more times a failed ``integration`` test runs. These tests run real Envoys, apps
and Locust, and under ``-n 2`` two of them share this machine's two cores: one that starts
a large topology can starve the other's phase (CI: a baseline with 97 of 114 requests past
a 2 s timeout, next to a 7-service fan-out starting up). A failure that is the test's own
fails again; pytest's summary counts every rerun ("R", "N rerun"). Unit tests never rerun."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=INTEGRATION_RERUNS, reruns_delay=2))
