"""The ``app`` section of a scenario: a preset (``name: shop``) or declared ``services``.

A declared app, in YAML::

    app:
      entry: gateway              # default: the first service
      services:
        - name: gateway
          serviceTime: 2ms        # a mean with ±50% uniform jitter (the shop's times)
          calls: [orders, {service: recommend, probability: 0.3}]
          callMode: parallel      # or sequential: one after another, up to the first failure
        - name: orders
          serviceTime: {distribution: lognormal, p50: 4ms, p99: 30ms}
          errorRate: 0.1%         # answered 500 by the service itself
          responseSize: 2048      # body padded to 2 KiB
          versions:               # one Deployment per version, label version: <name>
            - {name: v1, replicas: 2}
            - {name: v2, replicas: 1, serviceTime: {distribution: fixed, value: 8ms}}
        ...

The shipped presets (:file:`harness/app/presets/*.yaml`) are written in the same format and
read by the same model. :meth:`App.problems` holds the checks across services (unknown or
self calls, cycles, services the entry never reaches, duplicates), each at its own field so
the loader can point at its line and column.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from harness.app.topology import (
    DEFAULT_VERSION,
    Call,
    ServiceSpec,
    ServiceTimeSpec,
    Topology,
    Variant,
)
from harness.scenario.base import Model, check_name
from harness.scenario.units import DURATION_PATTERN, Duration, Fraction

__all__ = ["PRESETS", "App", "CallDecl", "ServiceDecl", "ServiceTimeDecl", "VersionDecl"]

PRESETS_DIR: Final = Path(__file__).resolve().parents[1] / "app" / "presets"
PRESETS: Final = ("shop",)
MAX_REPLICAS: Final = 10
# Far above what one machine runs (each instance is an app process and an Envoy), and
# low enough that every instance gets an address in the local plan (127.10.<service>.<n>).
MAX_SERVICES: Final = 50
MAX_VERSIONS: Final = 10
MAX_RESPONSE_BYTES: Final = 1024 * 1024
DEFAULT_SERVICE_TIME: Final = "1ms"
# Kubernetes label keys (optional DNS prefix + name) and values, 63 characters per part.
_LABEL = re.compile(
    r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
_RESERVED_LABELS: Final = ("app", "version")

_Loc = tuple[str | int, ...]
Problem = tuple[_Loc, str]

# distribution → (required fields, optional fields)
_DISTRIBUTION_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "fixed": (("value",), ()),
    "uniform": (("mean",), ("jitter",)),
    "exponential": (("mean",), ()),
    "lognormal": (("p50", "p99"), ()),
}


class ServiceTimeDecl(Model):
    """A service-time distribution. A bare duration (``3ms``) is a uniform mean ±50%."""

    distribution: Literal["fixed", "uniform", "exponential", "lognormal"] = Field(
        description="fixed: value; uniform: mean ± jitter; exponential: mean; "
        "lognormal: p50 and p99."
    )
    value: Duration | None = Field(default=None, ge=0, description="fixed: the time.")
    mean: Duration | None = Field(default=None, ge=0, description="uniform, exponential.")
    jitter: float | None = Field(
        default=None, ge=0, le=1, description="uniform: spread as a share of the mean (0.5)."
    )
    p50: Duration | None = Field(default=None, gt=0, description="lognormal: the median.")
    p99: Duration | None = Field(default=None, gt=0, description="lognormal: p99 (>= p50).")

    @field_validator("p99")
    @classmethod
    def _p99_above_p50(cls, value: float | None, info: ValidationInfo) -> float | None:
        p50 = info.data.get("p50")
        if value is not None and p50 is not None and value < p50:
            raise ValueError(
                f"p99 ({value * 1000:g}ms) is below p50 ({p50 * 1000:g}ms): a 99th percentile "
                "is at least the median"
            )
        return value

    @model_validator(mode="after")
    def _fields_fit(self) -> ServiceTimeDecl:
        required, optional = _DISTRIBUTION_FIELDS[self.distribution]
        every = {f for req, opt in _DISTRIBUTION_FIELDS.values() for f in (*req, *opt)}
        missing = [f for f in required if getattr(self, f) is None]
        stray = sorted(f for f in every - {*required, *optional} if getattr(self, f) is not None)
        problems = []
        if missing:
            problems.append(f"a {self.distribution} service time needs {', '.join(missing)}")
        if stray:
            takes = ", ".join((*required, *optional))
            problems.append(
                f"{', '.join(stray)} not used by a {self.distribution} service time "
                f"(it takes {takes})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def spec(self) -> ServiceTimeSpec:
        match self.distribution:
            case "fixed":
                return ServiceTimeSpec("fixed", self.value or 0.0)
            case "uniform":
                jitter = 0.5 if self.jitter is None else self.jitter
                return ServiceTimeSpec("uniform", self.mean or 0.0, jitter)
            case "exponential":
                return ServiceTimeSpec("exponential", self.mean or 0.0)
            case _:
                return ServiceTimeSpec("lognormal", self.p50 or 0.0, p99=self.p99)


def _service_time_shorthand(value: Any) -> Any:
    """``3ms`` → ``{distribution: uniform, mean: 3ms}`` (the shop's jittered mean)."""
    return {"distribution": "uniform", "mean": value} if isinstance(value, str) else value


def _either_duration_or_model(schema: dict[str, Any]) -> None:
    """JSON Schema: the shorthand duration string, or the distribution mapping."""
    model = {"$ref": schema.pop("$ref")} if "$ref" in schema else schema.pop("allOf")[0]
    shorthand = {"type": "string", "pattern": DURATION_PATTERN, "examples": ["3ms"]}
    schema["anyOf"] = [shorthand, model]


ServiceTime = Annotated[
    ServiceTimeDecl,
    BeforeValidator(_service_time_shorthand),
    Field(json_schema_extra=_either_duration_or_model),
]


def _name_or_call(schema: dict[str, Any]) -> None:
    """JSON Schema of ``calls``: each item a service name or a call mapping."""
    schema["items"] = {"anyOf": [{"type": "string"}, schema["items"]]}


class CallDecl(Model):
    """A call to another service; a bare name calls it on every request."""

    service: str
    probability: float = Field(
        default=1.0, ge=0, le=1, description="Share of requests that make this call."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"service": value} if isinstance(value, str) else value


class VersionDecl(Model):
    """One version of a service (a Deployment labelled ``version: <name>``)."""

    name: str = Field(description="The version label, e.g. v2.")
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    service_time: ServiceTime | None = Field(default=None, description="Default: the service's.")
    error_rate: Fraction | None = Field(default=None, description="Default: the service's.")
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="More pod labels (not app/version)."
    )

    _name = field_validator("name")(check_name)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key in _RESERVED_LABELS:
                raise ValueError(
                    f"label {key!r} is set by the harness (app: the service, version: the name)"
                )
            if not _LABEL.fullmatch(key) or (text and not _LABEL.fullmatch(text)):
                raise ValueError(
                    f"{key}: {text} is not a Kubernetes label: keys and values are letters, "
                    "digits, '-', '_' and '.', at most 63 characters"
                )
        return value


class ServiceDecl(Model):
    """One declared service."""

    name: str
    replicas: int | None = Field(
        default=None, ge=1, le=MAX_REPLICAS, description="Default 1; with versions: per version."
    )
    service_time: ServiceTime = Field(
        default=DEFAULT_SERVICE_TIME,  # the shorthand, validated
        validate_default=True,
        description=f"Default {DEFAULT_SERVICE_TIME} ±50%.",
    )
    calls: list[CallDecl] = Field(
        default_factory=list,
        max_length=MAX_SERVICES,
        description="Services it calls: a name, or {service, probability}.",
        json_schema_extra=_name_or_call,
    )
    call_mode: Literal["parallel", "sequential"] = Field(
        default="parallel",
        description="parallel: all calls at once; sequential: in order, up to the first failure.",
    )
    error_rate: Fraction = Field(default=0.0, description="Share answered 500 by the service.")
    response_size: int = Field(default=0, ge=0, le=MAX_RESPONSE_BYTES, description="Bytes.")
    versions: list[VersionDecl] = Field(default_factory=list, max_length=MAX_VERSIONS)

    _name = field_validator("name")(check_name)


class App(Model):
    """Which app to deploy: a preset by ``name``, or declared ``services``; overrides."""

    name: Literal["shop"] | None = Field(
        default=None, description="A shipped preset (default shop when no services are given)."
    )
    entry: str | None = Field(
        default=None, description="The service the ingress routes to (default: the first)."
    )
    services: list[ServiceDecl] | None = Field(default=None, min_length=1, max_length=MAX_SERVICES)
    replicas: dict[str, Annotated[int, Field(ge=1, le=MAX_REPLICAS)]] = Field(
        default_factory=dict, description="Replicas per service, e.g. {catalog: 3}."
    )
    service_time: dict[str, Duration] = Field(
        default_factory=dict, description="Mean service time per service, e.g. {catalog: 5ms}."
    )

    @property
    def declared(self) -> App:
        """The app whose ``services`` are declared: itself, or its preset."""
        return self if self.services is not None else _preset(self.name or PRESETS[0])

    @functools.cached_property
    def topology(self) -> Topology:
        declared = self.declared
        services = declared.services or []
        return Topology(
            name=self.name or (PRESETS[0] if self.services is None else "app"),
            entry=declared.entry or services[0].name,
            services=tuple(self._spec(service) for service in services),
        )

    def _spec(self, service: ServiceDecl) -> ServiceSpec:
        time = service.service_time.spec()
        if service.name in self.service_time:
            time = ServiceTimeSpec("uniform", self.service_time[service.name], time.jitter)
        variants = tuple(
            Variant(
                version=version.name,
                replicas=version.replicas,
                service_time=time if version.service_time is None else version.service_time.spec(),
                error_rate=service.error_rate if version.error_rate is None else version.error_rate,
                labels=tuple(sorted(version.labels.items())),
            )
            for version in service.versions
        ) or (
            Variant(
                DEFAULT_VERSION,
                self.replicas.get(service.name, service.replicas or 1),
                time,
                service.error_rate,
            ),
        )
        return ServiceSpec(
            name=service.name,
            variants=variants,
            outbound=tuple(Call(call.service, call.probability) for call in service.calls),
            call_mode=service.call_mode,
            response_size=service.response_size,
        )

    def replicas_of(self, service: str) -> int:
        """Instances of ``service`` over all its versions."""
        return self.topology.service(service).replicas

    def problems(self) -> list[Problem]:
        """Problems across fields, as (field path from the scenario, message)."""
        if self.services is None:
            if self.entry is not None:
                return [
                    (("app", "entry"), "entry applies to declared services; a preset has its own")
                ]
            return []
        if self.name is not None:
            return [(("app", "name"), "give either a preset name or services, not both")]
        return list(_graph_problems(self.services, self.entry, self.replicas))


def _graph_problems(
    services: list[ServiceDecl], entry: str | None, replicas: Mapping[str, int]
) -> Iterator[Problem]:
    where: _Loc = ("app", "services")
    index: dict[str, int] = {}
    for i, service in enumerate(services):
        if service.name in index:
            yield (*where, i, "name"), f"duplicate service name {service.name!r}"
        else:
            index[service.name] = i
    names = list(index)
    if entry is not None and entry not in index:
        yield ("app", "entry"), _unknown(entry, names)
    calls_ok = True
    for i, service in enumerate(services):
        for problem in _service_problems((*where, i), service, names, replicas):
            calls_ok = calls_ok and "calls" not in problem[0]
            yield problem
    graph = {
        s.name: [c.service for c in s.calls if c.service in index and c.service != s.name]
        for s in services
    }
    for caller, cycle in _cycles(graph):
        j = [c.service for c in services[index[caller]].calls].index(cycle[-1])
        yield (
            (*where, index[caller], "calls", j, "service"),
            ("calls form a cycle: " + " → ".join(cycle) + "; requests would never end"),
        )
    if not calls_ok:
        return  # a misspelt callee would also show as a service nobody calls
    root = entry if entry in index else services[0].name
    reached = _reachable(graph, root)
    for name, i in index.items():
        if name not in reached:
            yield (
                (*where, i, "name"),
                (
                    f"service {name!r} is never called: the entry {root!r} does not reach it "
                    "through any calls; call it from a service, or remove it"
                ),
            )


def _service_problems(
    where: _Loc, service: ServiceDecl, names: list[str], replicas: Mapping[str, int]
) -> Iterator[Problem]:
    seen: set[str] = set()
    for j, call in enumerate(service.calls):
        at = (*where, "calls", j, "service")
        if call.service == service.name:
            yield at, f"{service.name!r} calls itself; a service may not call itself"
        elif call.service not in names:
            yield at, _unknown(call.service, names)
        elif call.service in seen:
            yield at, f"{service.name!r} already calls {call.service!r}; call each service once"
        seen.add(call.service)
    if service.versions:
        if service.replicas is not None:
            yield (*where, "replicas"), "with versions, replicas are given per version"
        if service.name in replicas:
            yield (
                ("app", "replicas", service.name),
                (f"{service.name!r} has versions: give replicas per version in its versions list"),
            )
        versions: set[str] = set()
        for k, version in enumerate(service.versions):
            if version.name in versions:
                yield (*where, "versions", k, "name"), f"duplicate version {version.name!r}"
            versions.add(version.name)


def _cycles(graph: Mapping[str, list[str]]) -> Iterator[tuple[str, list[str]]]:
    """Each call that closes a cycle: (caller, the cycle from its first service)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in graph:
        if start in state:
            continue
        path: list[str] = [start]
        stack: list[Iterator[str]] = [iter(graph[start])]
        state[start] = 1
        while stack:
            callee = next(stack[-1], None)
            if callee is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(callee) == 1:
                yield path[-1], [*path[path.index(callee) :], callee]
            elif callee not in state:
                state[callee] = 1
                path.append(callee)
                stack.append(iter(graph[callee]))


def _reachable(graph: Mapping[str, list[str]], root: str) -> set[str]:
    reached, todo = {root}, [root]
    while todo:
        for callee in graph.get(todo.pop(), []):
            if callee not in reached:
                reached.add(callee)
                todo.append(callee)
    return reached


def _unknown(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown service {name!r}{hint} declared services: {', '.join(valid)}"


@functools.cache
def _preset(name: str) -> App:
    """A shipped preset, read by the very model of a declared app (trusted: shipped)."""
    with (PRESETS_DIR / f"{name}.yaml").open(encoding="utf-8") as handle:
        return App.model_validate(yaml.safe_load(handle))
