"""The kube context guard and the pinned kubeconfig, against a recording HTTPS server.

The "API server" here is a recording HTTPS server on 127.0.0.1 (it answers every request
with an empty resource list and counts them): the guard's promise is about requests, so the
test counts requests. A refused context must cause zero; an admitted one must reach it.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.controlplane.certs import write_serving_certificates
from harness.errors import ContextRefused, PlatformError
from harness.platforms.kube.client import KubeClient
from harness.platforms.kube.context import (
    ALLOW_ENV,
    harness_extension,
    is_loopback_server,
    pin_context,
)


class Recorder:
    def __init__(self, directory: Path) -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        certs = write_serving_certificates(directory, name="recorder", ips=("127.0.0.1",))
        self.ca = certs.ca
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorder.requests.append((self.command, self.path, self.headers["Authorization"]))
                body = json.dumps({"kind": "APIResourceList", "resources": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(certs.certificate, certs.key)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    server = Recorder(tmp_path)
    yield server
    server.stop()


def kubeconfig(
    path: Path,
    contexts: dict[str, dict[str, Any]],
    *,
    current: str,
    token: str = "secret-token",
) -> Path:
    """A kubeconfig with one cluster per context (``contexts``: name → cluster body)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": f"c-{name}", "cluster": body} for name, body in contexts.items()],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": f"c-{name}", "user": "u"}} for name in contexts
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def touch_api(context_name: str, config: Path, **kwargs: Any) -> None:
    """Pin, then make one API request through the client (as a run would)."""
    context = pin_context(config, context=context_name, environ=kwargs.pop("environ", {}), **kwargs)
    client = KubeClient(context, owner="run-1")
    try:
        client.request("GET", "/api/v1", "discovery")
    finally:
        client.close()


@pytest.mark.parametrize(
    ("name", "cluster_of", "why"),
    [
        ("prod", lambda url, ca, tmp: {"server": url, "certificate-authority": str(ca)}, "kind"),
        (
            "kind-far",
            lambda url, ca, tmp: {"server": "https://203.0.113.7:6443"},
            "not on loopback",
        ),
        (
            "harness-local",
            lambda url, ca, tmp: {
                "server": url,
                "certificate-authority": str(ca),
                "extensions": [harness_extension("harness-local", tmp / "gone")],
            },
            "cannot be read",
        ),
        (
            "forged",
            lambda url, ca, tmp: {
                "server": url,
                "extensions": [{"name": "harness", "extension": {"made-by": "someone"}}],
            },
            "made-by: harness",
        ),
    ],
)
def test_a_refused_context_makes_no_request(
    recorder: Recorder, tmp_path: Path, name: str, cluster_of: Any, why: str
) -> None:
    config = kubeconfig(
        tmp_path / "config", {name: cluster_of(recorder.url, recorder.ca, tmp_path)}, current=name
    )

    with pytest.raises(ContextRefused) as refused:
        touch_api(name, config)

    message = str(refused.value)
    assert f"refusing kube context {name!r}" in message
    assert why in message
    assert f"--allow-context {name}" in message and ALLOW_ENV in message
    assert recorder.requests == []


def test_kind_on_loopback_is_admitted_and_reaches_the_server(
    recorder: Recorder, tmp_path: Path
) -> None:
    config = kubeconfig(
        tmp_path / "config",
        {"kind-harness": {"server": recorder.url, "certificate-authority": str(recorder.ca)}},
        current="kind-harness",
    )

    touch_api("kind-harness", config)

    assert recorder.requests == [("GET", "/api/v1", "Bearer secret-token")]


def test_a_harness_made_cluster_is_admitted_by_its_marker_and_state(
    recorder: Recorder, tmp_path: Path
) -> None:
    state = tmp_path / "clusters" / "harness-local"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"made_by": "harness"}))
    cluster = {
        "server": recorder.url,
        "certificate-authority": str(recorder.ca),
        "extensions": [harness_extension("harness-local", state)],
    }
    config = kubeconfig(tmp_path / "config", {"harness-local": cluster}, current="harness-local")

    assert pin_context(config, environ={}).admitted == "harness"
    touch_api("harness-local", config)
    assert len(recorder.requests) == 1

    (state / "state.json").write_text(json.dumps({"made_by": "someone-else"}))
    with pytest.raises(ContextRefused, match="made_by"):
        pin_context(config, environ={})
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_allow_listed_context_reaches_the_server(
    recorder: Recorder, tmp_path: Path, how: str
) -> None:
    cluster = {"server": recorder.url, "certificate-authority": str(recorder.ca)}
    config = kubeconfig(tmp_path / "config", {"prod": cluster, "other": cluster}, current="other")

    if how == "flag":
        touch_api("prod", config, allow=["prod"])
    else:
        touch_api("prod", config, environ={ALLOW_ENV: "staging, prod"})

    assert [method for method, _, _ in recorder.requests] == ["GET"]
    with pytest.raises(ContextRefused):  # the list names contexts, not patterns or prefixes
        pin_context(config, context="other", allow=["prod", "othe"], environ={})


def test_the_kubeconfig_is_pinned_at_start(recorder: Recorder, tmp_path: Path) -> None:
    """Edits after the pin — another server, another token, the CA file gone — change nothing."""
    ca_copy = tmp_path / "ca.crt"
    ca_copy.write_bytes(recorder.ca.read_bytes())
    cluster = {"server": recorder.url, "certificate-authority": ca_copy.name}  # relative path
    config = kubeconfig(tmp_path / "config", {"kind-a": cluster}, current="kind-a")
    context = pin_context(config, environ={})

    kubeconfig(
        config,
        {"kind-a": {"server": "https://127.0.0.1:1"}, "prod": {"server": recorder.url}},
        current="prod",
        token="another-token",
    )
    ca_copy.unlink()
    client = KubeClient(context, owner="run-1")
    try:
        client.request("GET", "/api/v1", "discovery")
    finally:
        client.close()

    assert recorder.requests == [("GET", "/api/v1", "Bearer secret-token")]
    assert context.name == "kind-a" and context.server == recorder.url


def test_bad_kubeconfigs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="cannot read the kubeconfig"):
        pin_context(tmp_path / "absent", environ={})
    config = kubeconfig(
        tmp_path / "config", {"kind-a": {"server": "https://127.0.0.1:1"}}, current=""
    )
    with pytest.raises(PlatformError, match="no current-context"):
        pin_context(config, environ={})
    with pytest.raises(PlatformError, match=r"no context named 'kind-b'.*\['kind-a'\]"):
        pin_context(config, context="kind-b", environ={})


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        ("https://127.0.0.1:6443", True),
        ("https://127.8.0.1", True),
        ("https://[::1]:6443", True),
        ("https://localhost:6443", True),
        ("https://10.0.0.1:6443", False),
        ("https://localhost.example.com", False),
        ("https://127.0.0.1.nip.io", False),
        ("not a url", False),
    ],
)
def test_loopback_servers(server: str, loopback: bool) -> None:
    assert is_loopback_server(server) is loopback
