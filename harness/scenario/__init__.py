"""Scenario files: the typed model, the strict YAML loader and the JSON Schema.

>>> from harness.scenario import load_scenario
>>> scenario = load_scenario("scenarios/retries-mask-transient-errors.yaml")
"""

from harness.scenario.loader import load_scenario, load_scenario_text
from harness.scenario.models import Scenario
from harness.scenario.schema import scenario_json_schema

__all__ = ["Scenario", "load_scenario", "load_scenario_text", "scenario_json_schema"]
