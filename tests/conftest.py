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
