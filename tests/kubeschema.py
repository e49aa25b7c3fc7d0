"""Validate rendered objects the way a real API server with ``kubectl apply`` (strict field
validation) would, without one: Istio kinds against the OpenAPI schemas of Istio's CRDs,
core kinds against the field tables of the ``kubernetes`` client's models.

* CRD schemas are made strict as the API server's strict field validation is: an object
  schema that lists ``properties`` (or none) refuses other fields, unless it says
  ``x-kubernetes-preserve-unknown-fields``. ``apiVersion``, ``kind`` and ``metadata`` are
  implicit at the top, as in Kubernetes.
* The CEL rules (``x-kubernetes-validations``) the rendered kinds carry are evaluated where
  they are one of the few known shapes (durations >= 1ms, no ``*``); any other rule is
  returned as unchecked, so a test can see what it did not check.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float | None:
    """Seconds of a Go duration string (what CEL's ``duration()`` parses); None if invalid."""
    if text == "0":
        return 0.0
    if not _GO_DURATION.match(text):
        return None
    return sum(float(number) * _GO_UNITS[unit] for number, unit in _GO_PART.findall(text))


def _cel(rule: str, instance: Any) -> bool | None:
    """The known CEL rules: True/False when checked, None for a rule this does not know."""
    if rule == "duration(self) >= duration('1ms')":
        seconds = go_duration(instance) if isinstance(instance, str) else None
        return seconds is not None and seconds >= 0.001 - 1e-12
    if rule == '!self.contains("*")':
        return "*" not in instance
    if rule == 'self.all(key, !key.contains("*"))':
        return all("*" not in key for key in instance)
    if rule == "self.all(key, key.size() != 0)":
        return all(key for key in instance)
    return None


@dataclass
class CrdSchemas:
    """The served versions of every CRD in a file, as strict JSON Schema validators."""

    schemas: dict[tuple[str, str], dict[str, Any]]  # (apiVersion, kind) → schema
    unchecked_rules: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> CrdSchemas:
        schemas: dict[tuple[str, str], dict[str, Any]] = {}
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                    schema.setdefault("properties", {}).update(
                        {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                        }
                    )
                    schemas[(f"{group}/{version['name']}", kind)] = schema
        return cls(schemas)

    def kinds(self) -> set[tuple[str, str]]:
        return set(self.schemas)

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """Every reason the API server would refuse ``obj`` (empty: accepted)."""
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        schema = self.schemas.get(key)
        if schema is None:
            return [f"no CRD serves {key[1]!r} in {key[0]!r}"]
        validator = _validator_class(self.unchecked_rules)(schema)
        return [
            f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        ]


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Refuse unknown fields wherever Kubernetes' strict field validation would."""
    if (
        schema.get("type") == "object"
        and not schema.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in schema
    ):
        schema["additionalProperties"] = False
    for key in ("properties", "patternProperties"):
        for sub in schema.get(key, {}).values():
            _strict(sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            # Istio's oneOf branches only say which fields are required: keep them open.
            if "properties" in sub or "type" in sub:
                _strict(sub)
    return schema


def _validator_class(unchecked: set[str]) -> Any:
    def validations(
        validator: Any, rules: list[dict[str, str]], instance: Any, schema: dict[str, Any]
    ) -> Iterator[jsonschema.ValidationError]:
        del validator, schema
        for rule in rules:
            verdict = _cel(rule["rule"], instance)
            if verdict is None:
                unchecked.add(rule["rule"])
            elif not verdict:
                yield jsonschema.ValidationError(
                    f"{instance!r}: {rule.get('message', rule['rule'])}"
                )

    return jsonschema.validators.extend(
        jsonschema.Draft7Validator, {"x-kubernetes-validations": validations}
    )


# --------------------------------------------------------------------------- core kinds

_CORE_TYPES = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
}
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "object": (str, int, float, bool, dict, list),
    "datetime": (str,),
}


def core_errors(obj: dict[str, Any]) -> list[str]:
    """Unknown fields, wrong types and missing required fields of a core object, read from
    the ``kubernetes`` client's models (generated from the Kubernetes OpenAPI spec)."""
    from kubernetes import client

    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    model = _CORE_TYPES.get(key)
    if model is None:
        return [f"not a core kind this checks: {key}"]
    problems = list(_walk(obj, model, ""))

    api = client.ApiClient()
    text = json.dumps(obj)

    class _Response:  # what older clients (before v35) deserialize from
        data = text

    try:  # the models' own required-field checks (pydantic's ValidationError is a ValueError)
        if "content_type" in inspect.signature(api.deserialize).parameters:
            api.deserialize(text, model, "application/json")
        else:
            api.deserialize(_Response(), model)
    except (ValueError, TypeError) as exc:
        problems.append(f"<root>: {exc}")
    return problems


def _walk(value: Any, type_name: str, path: str) -> Iterator[str]:
    from kubernetes.client import models

    if type_name in _SCALARS:
        allowed = _SCALARS[type_name]
        if isinstance(value, bool) and bool not in allowed and type_name != "object":
            yield f"{path}: expected {type_name}, got a boolean"
        elif not isinstance(value, allowed):
            yield f"{path}: expected {type_name}, got {type(value).__name__}"
        return
    # The client spells containers "List[X]" / "Dict[str, X]" (older: "list[X]" / "dict(str, X)").
    if type_name.lower().startswith("list["):
        if not isinstance(value, list):
            yield f"{path}: expected a list"
            return
        for index, item in enumerate(value):
            yield from _walk(item, type_name[5:-1], f"{path}[{index}]")
        return
    if type_name.lower().startswith(("dict(", "dict[")):
        if not isinstance(value, dict):
            yield f"{path}: expected a mapping"
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            yield from _walk(item, inner, f"{path}.{key}")
        return
    cls = getattr(models, type_name)
    if not isinstance(value, dict):
        yield f"{path}: expected a {type_name} mapping"
        return
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in by_json:
            yield f"{where}: unknown field in {type_name}"
            continue
        yield from _walk(item, cls.openapi_types[by_json[key]], where)
