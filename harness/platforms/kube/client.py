"""The harness's writes to a Kubernetes cluster: a thin layer over the ``kubernetes`` client.

Built from a pinned, guard-admitted :class:`~harness.platforms.kube.context.KubeContext`
(nothing here reads a kubeconfig). Its rules:

* **server-side apply**, field manager ``harness``; every object carries
  ``harness/run-id=<owner>`` (``owner`` is the run id, or ``istio`` for the mesh install);
* **one namespace per run** (:func:`~harness.kube.render.run_namespace`), labelled likewise
  and ``app.kubernetes.io/managed-by=harness``;
* **never someone else's object**: a namespaced object is applied only into a namespace
  labelled with its owner; an existing cluster-scoped object only when it carries the owner's
  label. Conflicts with another field manager are forced only for such objects;
* **never someone else's namespace**: every delete reads the namespace first, checks the
  run-id label, and deletes with its uid as a precondition (a namespace recreated meanwhile
  under the same name is not ours);
* every refusal is a :class:`~harness.errors.ControlPlaneError` naming the object and the
  server's reason, translated once here.

Kinds are resolved by the API's own discovery (``/api/v1``, ``/apis/<group>/<version>``), one
request per group-version, cached: any kind the server serves, CRDs included.

Usage::

    kube = KubeClient(pin_context(None), owner=run_id)
    kube.create_namespace(run_namespace(run_id))
    kube.apply([m.to_dict() for m in render(scenario, RenderOptions.for_run(run_id))])
    kube.wait_pods_ready(run_namespace(run_id), count=3)
    kube.delete_owned()                       # the run's namespace + labelled cluster objects
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import kubernetes.client
import urllib3

from harness.controlplane.kube import (
    FIELD_MANAGER,
    established_names,
    object_ref,
    refusal_message,
    wait_established,
)
from harness.errors import ControlPlaneError
from harness.kube.render import MANAGED_BY, RUN_ID_LABEL
from harness.platforms.kube.context import KubeContext

__all__ = [
    "MANAGED_BY_LABEL",
    "RUNNER_ANNOTATION",
    "DeleteReport",
    "KubeClient",
    "Resource",
    "owned_labels",
]

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
APPLY_TYPE: Final = "application/apply-patch+yaml"  # JSON is YAML
REQUEST_TIMEOUT_S: Final = 30.0
POLL_S: Final = 1.0
# A container waiting for one of these will not start by waiting longer.
HOPELESS: Final = frozenset(
    {"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff"}
)

JsonObject = dict[str, Any]


RUNNER_ANNOTATION: Final = "harness/runner"  # on a run's namespace: its runner's marker

Spare = Callable[[Mapping[str, Any]], str | None]  # an object → why to leave it, or None


def _spare_nothing(_: Mapping[str, Any]) -> str | None:
    return None


def owned_labels(owner: str) -> dict[str, str]:
    """The labels every object of ``owner`` carries."""
    return {RUN_ID_LABEL: owner, MANAGED_BY_LABEL: MANAGED_BY}


@dataclass(frozen=True)
class Resource:
    """Where the API serves one kind (from discovery)."""

    prefix: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool
    verbs: frozenset[str] = frozenset()

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        where = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{self.prefix}{where}/{self.plural}" + (f"/{name}" if name else "")


@dataclass
class DeleteReport:
    """What :meth:`KubeClient.delete_owned` did."""

    namespaces: list[str] = field(default_factory=list)  # deleted (or already terminating)
    objects: list[str] = field(default_factory=list)  # cluster-scoped, deleted
    left_alone: list[str] = field(default_factory=list)  # not provably ours, with why


class KubeClient:
    """Server-side apply, waits and deletes for one owner (a run) on one pinned context."""

    def __init__(
        self,
        context: KubeContext,
        owner: str,
        *,
        api: kubernetes.client.ApiClient | None = None,
        runner: str | None = None,
    ) -> None:
        """``runner``: the run's runner marker (:func:`harness.runlock.runner_marker`),
        written on the namespaces it creates, so a cleanup can tell a live run's namespace."""
        self.context = context
        self.owner = owner
        self.runner = runner
        self.api = api or context.api_client()
        self._resources: dict[str, dict[str, Resource]] = {}  # group-version → kind → where
        self._owned_namespaces: set[str] = set()

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]  # the generated client leaves it untyped

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: object = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> JsonObject:
        """One API request through the client (its auth, TLS and proxy settings); an error
        status or a transport failure is a :class:`ControlPlaneError` naming ``what``."""
        _, url, headers, body_out, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            answer = self.api.call_api(
                method, url, headers, body_out, None, _request_timeout=REQUEST_TIMEOUT_S
            )
            data: bytes = answer.read()  # type: ignore[no-untyped-call]  # untyped upstream
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ControlPlaneError(
                f"cannot reach the API server {self.context.server} for {what}: {exc}"
            ) from None
        if not 200 <= answer.status <= 299:
            raise ApiStatusError(
                answer.status, refusal_message(answer.status, data, answer.reason or "", what)
            )
        parsed = json.loads(data or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    def resource(self, api_version: str, kind: str) -> Resource:
        """Where ``kind`` of ``api_version`` lives (discovery, cached; asked again once for a
        kind not seen yet: its CRD may have just been Established)."""
        for fresh in (False, True):
            found = self._group_version(api_version, fresh=fresh).get(kind)
            if found is not None:
                return found
        raise ControlPlaneError(
            f"the API server {self.context.server} serves no {kind} in {api_version} "
            "(is its CRD installed?)"
        )

    def _group_version(self, api_version: str, *, fresh: bool = False) -> dict[str, Resource]:
        if fresh or api_version not in self._resources:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                answer = self.request("GET", prefix, f"discovery of {api_version}")
            except ApiStatusError as exc:
                if exc.status != 404:
                    raise
                answer = {}
            self._resources[api_version] = {
                item["kind"]: Resource(
                    prefix, item["name"], bool(item.get("namespaced")), frozenset(item["verbs"])
                )
                for item in answer.get("resources") or []
                if "/" not in item["name"]  # subresources (pods/status, ...)
            }
        return self._resources[api_version]

    # ------------------------------------------------------------------ namespaces

    def create_namespace(self, name: str) -> None:
        """Create (or keep) namespace ``name`` labelled for this owner; an existing namespace
        without our label is refused, never taken over."""
        self.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])

    def _check_namespace(self, name: str, *, missing_ok: bool = False) -> JsonObject | None:
        """The namespace ``name`` if it is ours; None if it is absent and ``missing_ok``."""
        try:
            live = self.request("GET", f"/api/v1/namespaces/{name}", f"Namespace {name}")
        except ApiStatusError as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(RUN_ID_LABEL) != self.owner:
            raise ControlPlaneError(
                f"namespace {name} exists and is not the harness's for {self.owner} (its "
                f"{RUN_ID_LABEL} label is {labels.get(RUN_ID_LABEL)!r}): the harness never "
                "touches a namespace it did not create; pick another name or delete it yourself"
            )
        return live

    # ------------------------------------------------------------------ apply

    def apply(self, objects: Iterable[Mapping[str, Any]], *, dry_run: bool = False) -> None:
        """Server-side apply ``objects`` in order, each labelled for this owner.

        Every object is checked before the first write (nothing is written when one is
        refused): a Namespace or other cluster-scoped object that exists must carry this
        owner's label; a namespaced object must go into a namespace of this owner (existing,
        or among ``objects``). ``dry_run``: the server validates and admits, stores nothing."""
        bodies = [_labelled(item, self.owner) for item in objects]
        if self.runner is not None:
            for body in bodies:
                if body["kind"] == "Namespace":
                    annotations = body["metadata"].setdefault("annotations", {})
                    annotations[RUNNER_ANNOTATION] = self.runner
        resources = [self.resource(str(b["apiVersion"]), str(b["kind"])) for b in bodies]
        created = {b["metadata"]["name"] for b in bodies if b["kind"] == "Namespace"}
        for body, resource in zip(bodies, resources, strict=True):
            self._preflight(body, resource, created)
        for body, resource in zip(bodies, resources, strict=True):
            self._apply_one(body, resource, dry_run=dry_run)
            if body["kind"] == "Namespace" and not dry_run:
                self._owned_namespaces.add(body["metadata"]["name"])

    def _preflight(self, body: JsonObject, resource: Resource, created: set[str]) -> None:
        what = object_ref(body)
        if body["kind"] == "Namespace":
            self._check_namespace(body["metadata"]["name"], missing_ok=True)
        elif not resource.namespaced:
            self._check_cluster_object(body, resource)
        else:
            namespace = body["metadata"].get("namespace")
            if not namespace:
                raise ControlPlaneError(f"{what}: a namespaced object needs metadata.namespace")
            if namespace not in self._owned_namespaces and namespace not in created:
                self._check_namespace(namespace)
                self._owned_namespaces.add(namespace)

    def _apply_one(self, body: JsonObject, resource: Resource, *, dry_run: bool) -> None:
        what = object_ref(body)
        metadata = body["metadata"]
        namespace = metadata.get("namespace") if resource.namespaced else None
        path = resource.path(metadata["name"], namespace)
        query = [("fieldManager", FIELD_MANAGER)] + ([("dryRun", "All")] if dry_run else [])
        try:
            self.request("PATCH", path, what, body=body, query=query, content_type=APPLY_TYPE)
        except ApiStatusError as exc:
            if exc.status != 409:
                raise
            # Another field manager owns a field we set: ours (checked above), so take it back.
            self.request(
                "PATCH",
                path,
                what,
                body=body,
                query=[*query, ("force", "true")],
                content_type=APPLY_TYPE,
            )

    def _check_cluster_object(self, body: JsonObject, resource: Resource) -> None:
        """An existing cluster-scoped object must carry this owner's label."""
        what = object_ref(body)
        try:
            live = self.request("GET", resource.path(body["metadata"]["name"]), what)
        except ApiStatusError as exc:
            if exc.status == 404:
                return
            raise
        labels = (live.get("metadata") or {}).get("labels") or {}
        if labels.get(RUN_ID_LABEL) != self.owner:
            raise ControlPlaneError(
                f"{what} exists and is not the harness's for {self.owner} ({RUN_ID_LABEL}="
                f"{labels.get(RUN_ID_LABEL)!r}): the harness does not change objects it did "
                "not make"
            )

    # ------------------------------------------------------------------ wait

    def pods(self, namespace: str) -> list[JsonObject]:
        answer = self.request("GET", f"/api/v1/namespaces/{namespace}/pods", f"pods of {namespace}")
        return list(answer.get("items") or [])

    def wait_pods_ready(self, namespace: str, *, count: int, timeout_s: float = 300.0) -> None:
        """Wait until ``count`` pods of ``namespace`` are Ready; a pod whose container waits
        for a hopeless reason (image never pulled, crash loop) fails at once."""
        deadline = time.monotonic() + timeout_s
        while True:
            pods = self.pods(namespace)
            ready = [p for p in pods if _ready(p)]
            hopeless = [why for p in pods if (why := _hopeless(p))]
            if hopeless:
                raise ControlPlaneError(f"pods in {namespace} cannot start: {'; '.join(hopeless)}")
            if len(ready) >= count:
                return
            if time.monotonic() > deadline:
                waiting = sorted(p["metadata"]["name"] for p in pods if not _ready(p))
                raise ControlPlaneError(
                    f"{len(ready)} of {count} pods Ready in {namespace} after {timeout_s:.0f} s "
                    f"(not ready: {waiting}; see `kubectl -n {namespace} describe pods`)"
                )
            time.sleep(POLL_S)

    def wait_established(self, names: set[str], timeout_s: float = 60.0) -> None:
        """Wait until the CustomResourceDefinitions ``names`` are Established (then their
        kinds are served: discovery is asked again on first use)."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

        def established() -> set[str]:
            return established_names(self.request("GET", path, "CRDs").get("items") or [])

        wait_established(names, established, time.monotonic() + timeout_s, POLL_S / 5)

    # ------------------------------------------------------------------ delete

    def delete_owned(self, spare: Spare = _spare_nothing) -> DeleteReport:
        """Delete this owner's namespaces and its cluster-scoped objects (by label), each read
        back first and deleted with its uid as a precondition; an object ``spare`` gives a
        reason for is left alone (reported)."""
        report = DeleteReport()
        selector = f"{RUN_ID_LABEL}={self.owner}"
        for resource in self._cluster_resources():
            items = (
                self.request(
                    "GET",
                    resource.path(),
                    f"{resource.plural} labelled {selector}",
                    query=[("labelSelector", selector)],
                ).get("items")
                or []
            )
            for item in items:
                reason = spare(item)
                if reason is not None:
                    report.left_alone.append(f"{object_ref_of(item, resource)}: {reason}")
                    continue
                done = self._delete_checked(item, resource)
                if done is None:
                    report.left_alone.append(f"{object_ref_of(item, resource)}: label mismatch")
                elif resource.plural == "namespaces":
                    report.namespaces.append(done)
                else:
                    report.objects.append(done)
        return report

    def _cluster_resources(self) -> list[Resource]:
        """Every cluster-scoped kind the server lists and deletes (namespaces first)."""
        versions = ["v1"]
        groups = self.request("GET", "/apis", "API groups").get("groups") or []
        versions += [g["preferredVersion"]["groupVersion"] for g in groups]
        found = []
        for version in versions:
            for resource in self._group_version(version).values():
                if not resource.namespaced and {"list", "delete"} <= resource.verbs:
                    found.append(resource)
        return sorted(found, key=lambda r: r.plural != "namespaces")

    def _delete_checked(self, item: JsonObject, resource: Resource) -> str | None:
        metadata = item.get("metadata") or {}
        if (metadata.get("labels") or {}).get(RUN_ID_LABEL) != self.owner:
            return None  # the selector said so; the object says otherwise: leave it
        name = metadata["name"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": metadata["uid"]},
        }
        what = f"{resource.plural}/{name}"
        try:
            self.request("DELETE", resource.path(name), what, body=options)
        except ApiStatusError as exc:
            if exc.status not in (404, 409):  # gone, or replaced by another object (uid)
                raise
        return what


class ApiStatusError(ControlPlaneError):
    """The API server answered with an error status (``status``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def object_ref_of(item: Mapping[str, Any], resource: Resource) -> str:
    return f"{resource.plural}/{(item.get('metadata') or {}).get('name')}"


def _labelled(item: Mapping[str, Any], owner: str) -> JsonObject:
    body: JsonObject = json.loads(json.dumps(item))  # a deep copy: the caller's stays as it was
    metadata = body.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **owned_labels(owner)}
    return body


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _hopeless(pod: Mapping[str, Any]) -> str | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in HOPELESS:
            name = (pod.get("metadata") or {}).get("name")
            return f"{name}/{status.get('name')}: {waiting['reason']} {waiting.get('message', '')}"
    return None
