"""Which Kubernetes cluster a run may touch: a pinned kubeconfig and the context guard.

The kubeconfig is read **once**, at start (:func:`pin_context`): its bytes, and the bytes of
every file it names (``certificate-authority``, ``client-certificate``, ``client-key``,
``tokenFile``), are folded into one self-contained copy, and everything later (the API
client, cleanup's record) uses that copy. A kubeconfig edited, or a current-context switched,
mid-run has no effect on the run.

The guard decides from that copy alone, with **zero API calls**. It admits a context when:

* **kind**: the context is named ``kind-<cluster>`` (kind's own naming) and its cluster's
  server is a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``); or
* **the harness made it**: the context's cluster carries the kubeconfig extension
  ``harness`` (see below), its server is a loopback address, and the ``state.json`` in the
  extension's ``state`` directory says ``"made_by": "harness"`` (so a cluster taken down since, or
  a copied kubeconfig, no longer counts); or
* **allow-listed**: its name is in ``--allow-context NAME`` (repeatable) or in the
  comma-separated ``HARNESS_KUBE_ALLOW_CONTEXTS``.

Anything else is :class:`~harness.errors.ContextRefused` (exit 2) naming the context, why,
and how to allow it.

The harness marker (written by ``harness cluster up --local`` into its kubeconfig)::

    clusters:
    - name: harness-local
      cluster:
        server: https://127.0.0.1:<port>
        extensions:
        - name: harness
          extension:
            made-by: harness
            cluster: harness-local
            state: /root/.cache/harness/clusters/harness-local

Usage::

    context = pin_context(None, context=None, allow=())    # $KUBECONFIG or ~/.kube/config
    client = context.api_client()                          # kubernetes.client.ApiClient
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import kubernetes.client
import kubernetes.config
import yaml

from harness.errors import ContextRefused, PlatformError
from harness.journal import KubeRunRecord

__all__ = [
    "ALLOW_ENV",
    "HARNESS_EXTENSION",
    "KubeContext",
    "allowed_contexts",
    "default_kubeconfig",
    "harness_extension",
    "harness_state",
    "is_loopback_server",
    "pin_context",
]

ALLOW_ENV: Final = "HARNESS_KUBE_ALLOW_CONTEXTS"
HARNESS_EXTENSION: Final = "harness"  # the name of the kubeconfig extension marking our clusters
MADE_BY: Final = "harness"
KIND_PREFIX: Final = "kind-"
MAX_KUBECONFIG_BYTES: Final = 4 << 20
# kubeconfig fields naming a file, and the inline field that replaces each when pinned.
_CLUSTER_FILES: Final = {"certificate-authority": "certificate-authority-data"}
_USER_FILES: Final = {
    "client-certificate": "client-certificate-data",
    "client-key": "client-key-data",
}

Admission = Literal["kind", "harness", "allow-listed"]


def harness_extension(cluster: str, state_dir: Path) -> dict[str, Any]:
    """The ``extensions`` entry a kubeconfig's cluster carries when the harness made it."""
    return {
        "name": HARNESS_EXTENSION,
        "extension": {"made-by": MADE_BY, "cluster": cluster, "state": str(state_dir)},
    }


def default_kubeconfig(environ: Mapping[str, str] | None = None) -> Path:
    """The first file of ``$KUBECONFIG`` (as kubectl reads it), else ``~/.kube/config``."""
    environ = os.environ if environ is None else environ
    listed = [part for part in environ.get("KUBECONFIG", "").split(os.pathsep) if part]
    return Path(listed[0]).expanduser() if listed else Path.home() / ".kube" / "config"


def allowed_contexts(
    allow: Sequence[str], environ: Mapping[str, str] | None = None
) -> frozenset[str]:
    """``--allow-context`` names plus ``HARNESS_KUBE_ALLOW_CONTEXTS`` (comma-separated)."""
    environ = os.environ if environ is None else environ
    from_env = [name.strip() for name in environ.get(ALLOW_ENV, "").split(",")]
    return frozenset(name for name in [*allow, *from_env] if name)


def is_loopback_server(server: str) -> bool:
    """True when ``server``'s host is a loopback address (or ``localhost``)."""
    try:
        host = urlsplit(server).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class KubeContext:
    """A kubeconfig pinned at start and one of its contexts, admitted by the guard.

    ``config`` is self-contained (files folded in) and holds only the chosen context, its
    cluster and its user: nothing later reads the kubeconfig file again.
    """

    source: Path
    sha256: str  # of the kubeconfig file's bytes as read at start
    name: str  # the context
    cluster: str
    server: str
    admitted: Admission
    config: Mapping[str, Any] = field(repr=False)

    def api_client(self) -> kubernetes.client.ApiClient:
        """A ``kubernetes`` API client built from the pinned copy (no file is read)."""
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
            dict(self.config),
            context=self.name,
            client_configuration=configuration,
            persist_config=False,
        )
        return kubernetes.client.ApiClient(configuration)

    def record(self, namespace: str) -> KubeRunRecord:
        """What the journal keeps of this context for ``harness cleanup`` (no credentials)."""
        return KubeRunRecord(
            kubeconfig=str(self.source), context=self.name, server=self.server, namespace=namespace
        )

    def describe(self) -> str:
        return f"context {self.name!r} ({self.server}, {self.admitted}) from {self.source}"


def _named(entries: object, name: str, what: str, source: Path) -> dict[str, Any]:
    """The ``what`` (``cluster``, ``user``, ``context``) called ``name`` in a kubeconfig list."""
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            return dict(body) if isinstance(body, dict) else {}
    raise PlatformError(f"{source}: no {what} named {name!r} (kubeconfig `{what}s:` list)")


def _inline_files(body: dict[str, Any], fields: Mapping[str, str], base: Path) -> dict[str, Any]:
    """``body`` with each file field replaced by its ``-data`` field (the file read now)."""
    pinned = dict(body)
    for file_field, data_field in fields.items():
        name = pinned.pop(file_field, None)
        if name and not pinned.get(data_field):
            path = (base / str(name)).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise PlatformError(
                    f"kubeconfig field {file_field}: cannot read {path}: {exc.strerror}"
                ) from None
            pinned[data_field] = base64.b64encode(data).decode()
    return pinned


def _pinned_user(user: dict[str, Any], base: Path) -> dict[str, Any]:
    pinned = _inline_files(user, _USER_FILES, base)
    token_file = pinned.pop("tokenFile", None)
    if token_file and not pinned.get("token"):
        path = (base / str(token_file)).expanduser()
        try:
            pinned["token"] = path.read_text().strip()
        except OSError as exc:
            raise PlatformError(
                f"kubeconfig tokenFile: cannot read {path}: {exc.strerror}"
            ) from None
    return pinned


def _read_kubeconfig(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = path.read_bytes()[: MAX_KUBECONFIG_BYTES + 1]
    except OSError as exc:
        raise PlatformError(
            f"cannot read the kubeconfig {path}: {exc.strerror} (give --kubeconfig, or set "
            "KUBECONFIG; `harness cluster up` writes one)"
        ) from None
    if len(raw) > MAX_KUBECONFIG_BYTES:
        raise PlatformError(f"{path}: over {MAX_KUBECONFIG_BYTES >> 20} MiB, not a kubeconfig")
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise PlatformError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise PlatformError(f"{path}: not a kubeconfig (expected a mapping with `contexts:`)")
    return raw, parsed


def _harness_made(cluster: Mapping[str, Any]) -> str | None:
    """Why ``cluster`` is not one the harness made, or None if it is (files only, no API)."""
    marker = None
    for entry in cluster.get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == HARNESS_EXTENSION:
            marker = entry.get("extension")
    if not isinstance(marker, dict) or marker.get("made-by") != MADE_BY:
        return f"its cluster carries no `{HARNESS_EXTENSION}` extension with made-by: {MADE_BY}"
    state_file = Path(str(marker.get("state", ""))) / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        return f"its harness marker names {state_file}, which cannot be read ({exc}): is it down?"
    if not isinstance(state, dict) or state.get("made_by") != MADE_BY:
        return f'{state_file} does not say "made_by": "{MADE_BY}"'
    return None


def harness_state(context: KubeContext) -> dict[str, Any]:
    """The ``state.json`` of a cluster the harness made (its ``ingress_port``, ...), read from
    the directory its marker names; empty for any other context."""
    if context.admitted != "harness":
        return {}
    clusters = context.config.get("clusters") or [{}]
    marker: dict[str, Any] = {}
    for entry in clusters[0].get("cluster", {}).get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == HARNESS_EXTENSION:
            marker = entry.get("extension") or {}
    try:
        state = json.loads((Path(str(marker.get("state", ""))) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _admission(context: str, cluster: Mapping[str, Any], allowed: frozenset[str]) -> Admission:
    server = str(cluster.get("server", ""))
    loopback = is_loopback_server(server)
    if context in allowed:
        return "allow-listed"
    if context.startswith(KIND_PREFIX) and loopback:
        return "kind"
    not_ours = _harness_made(cluster)
    if not_ours is None and loopback:
        return "harness"
    if context.startswith(KIND_PREFIX):
        why = f"it is named like a kind context but its server {server} is not on loopback"
    elif not_ours is None:
        why = f"it carries the harness marker but its server {server} is not on loopback"
    else:
        why = f"it is not a kind cluster (kind-* on loopback; server {server}) and {not_ours}"
    raise ContextRefused(
        f"refusing kube context {context!r}: {why}. The harness acts only on kind clusters "
        f"and clusters `harness cluster up` made; to run against this one anyway, pass "
        f"--allow-context {context} or set {ALLOW_ENV}={context} (no API call was made)"
    )


def pin_context(
    kubeconfig: Path | None,
    *,
    context: str | None = None,
    allow: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> KubeContext:
    """Read ``kubeconfig`` (default :func:`default_kubeconfig`) once, choose ``context``
    (default its ``current-context``), and admit it or raise
    :class:`~harness.errors.ContextRefused` — with no API call either way."""
    source = (kubeconfig or default_kubeconfig(environ)).expanduser()
    raw, parsed = _read_kubeconfig(source)
    name = context or parsed.get("current-context")
    if not name:
        raise PlatformError(f"{source} has no current-context: choose one with --context NAME")
    name = str(name)
    known = [c.get("name") for c in parsed.get("contexts") or [] if isinstance(c, dict)]
    if name not in known:
        raise PlatformError(f"{source}: no context named {name!r}; its contexts: {known}")
    chosen = _named(parsed.get("contexts"), name, "context", source)
    cluster_name = str(chosen.get("cluster", ""))
    cluster = _named(parsed.get("clusters"), cluster_name, "cluster", source)
    admitted = _admission(name, cluster, allowed_contexts(allow, environ))
    base = source.parent
    user_name = str(chosen.get("user", ""))
    user = _named(parsed.get("users"), user_name, "user", source) if user_name else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster_name, "cluster": _inline_files(cluster, _CLUSTER_FILES, base)}
        ],
        "users": [{"name": user_name, "user": _pinned_user(user, base)}],
        "contexts": [{"name": name, "context": chosen}],
        "current-context": name,
    }
    return KubeContext(
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        name=name,
        cluster=cluster_name,
        server=str(cluster.get("server", "")),
        admitted=admitted,
        config=config,
    )
