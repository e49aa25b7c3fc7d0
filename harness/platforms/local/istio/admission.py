"""istiod's own validation of Istio objects: its admission webhook (``/validate``), the code a
cluster's API server calls before it stores an Istio object.

The run's API server has no webhook configured (it would need a Service and DNS for
istiod), so the harness asks istiod directly, as the API server would, with an
``AdmissionReview`` per object. istiod serves ``/validate`` on its plain HTTP port here
(``--httpsAddr=`` puts the webhooks on it), reached through the supervisor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import ControlPlaneError
from harness.platforms.local.istio.api import ISTIO_KINDS, RESOURCES, object_ref
from harness.platforms.local.istio.workloads import ISTIOD_PORTS, LOCALHOST
from harness.platforms.local.sandbox import Sandbox

__all__ = ["admission_review", "istiod_refusals"]


def admission_review(uid: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """An ``admission.k8s.io/v1`` review asking to CREATE ``manifest``."""
    group, _, version = str(manifest["apiVersion"]).rpartition("/")
    kind = str(manifest["kind"])
    metadata = manifest["metadata"]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": RESOURCES[kind][1]},
            "operation": "CREATE",
            "namespace": metadata.get("namespace", ""),
            "name": metadata["name"],
            "object": dict(manifest),
        },
    }


def istiod_refusals(sandbox: Sandbox, objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """``"<kind> <namespace>/<name>: <istiod's reason>"`` for each Istio object istiod's
    validation refuses (objects of other kinds are not its to judge)."""
    url = f"http://{LOCALHOST}:{ISTIOD_PORTS['http']}/validate"
    refused = []
    for index, manifest in enumerate(objects):
        if manifest.get("kind") not in ISTIO_KINDS:
            continue
        body = json.dumps(admission_review(str(index), manifest))
        status, text = sandbox.http(
            "POST", url, body=body, headers={"Content-Type": "application/json"}, timeout=10.0
        )
        if status != 200:
            raise ControlPlaneError(f"istiod's /validate answered {status}: {text[:300]}")
        answer = json.loads(text).get("response") or {}
        if not answer.get("allowed"):
            reason = (answer.get("status") or {}).get("message", "no reason given")
            refused.append(f"{object_ref(manifest)}: {reason}")
    return refused
