"""What every scenario model shares: the strict base model, names, limits.

Its own module so the app section (:mod:`harness.scenario.app`) and the rest of the
scenario (:mod:`harness.scenario.models`) build on it without importing each other.
"""

from __future__ import annotations

import re
from typing import Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

API_VERSION: Final = "harness/v1"
# The DNS label rule (RFC 1123), for every name: scenario, phases, faults, SLOs. Names
# become directory names and are printed; fullmatch, because "$" matches before a "\n".
NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Limits of a scenario: far above any real one, low enough that validation stays fast.
MAX_ITEMS = 1000  # phases, faults, SLOs, steps, ... in one list
MAX_TEXT = 4096  # characters of a description or label


class Model(BaseModel):
    """Base of every scenario model: strict about unknown fields, camelCase aliases.

    ``strict``: no bool for a number (``rate: true``), no string for a number
    (``replicas: '3'``), no ``.inf`` or ``.nan``; an int is still a float. Enums take their
    string values.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
        allow_inf_nan=False,  # .inf / .nan are no objective; a journal holds finite numbers
    )


def check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        shown = repr(value) if len(value) <= 70 else repr(value[:67] + "...")
        raise ValueError(
            f"{shown} is not a valid name: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (at most 63 characters)"
        )
    return value


def check_optional_name(value: str | None) -> str | None:
    return None if value is None else check_name(value)
