"""The JSON Schema of scenario files, for editors (YAML language server) and ``harness schema``."""

from __future__ import annotations

from typing import Any

from harness.scenario.models import API_VERSION, Scenario

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:{API_VERSION.replace('/', ':')}:scenario"


def scenario_json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file, with the YAML (camelCase) field names.

    >>> schema = scenario_json_schema()
    >>> schema["properties"]["apiVersion"]["const"]
    'harness/v1'
    """
    schema = _without_field_titles(Scenario.model_json_schema(by_alias=True, mode="validation"))
    # Python callers may omit it (the model has a default); a file must name its version.
    schema["required"] = ["apiVersion", *schema.get("required", [])]
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": f"harness scenario ({API_VERSION})",
    }


def _without_field_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the titles pydantic derives from field names ("Httpstatus"); they only add noise."""
    result = dict(schema)
    if isinstance(result.get("properties"), dict):
        result["properties"] = {
            name: {k: v for k, v in prop.items() if k != "title"}
            for name, prop in result["properties"].items()
        }
    if isinstance(result.get("$defs"), dict):
        result["$defs"] = {name: _without_field_titles(d) for name, d in result["$defs"].items()}
    return result
