"""Container images built from host files (harness.cluster.images, harness.cluster.oci).

Fast tests write small images and check the archive's structure and determinism. The
integration tests build the four real images, prove the app image's files run the app
(chrooted into its extracted layers, answering real requests), and import every image
into a throwaway containerd (the same ``ctr images import`` a kubelet's containerd gets),
then run each one in a real container with runc. containerd comes from Debian
(``apt-get install containerd``, done by .ci/run): missing, these tests fail.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import images as cluster_images
from harness.cluster.images import BuiltImage, build_image, build_images
from harness.cluster.oci import Entry, Image, ImageConfig, write_image_archive
from harness.ports import free_port

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Archive:
    """An image tar read back and checked: every blob matches its digest, and the OCI
    index, the manifest, the config and docker's manifest.json agree."""

    ref: str
    config: dict[str, Any]
    layers: list[bytes]
    names: list[str]  # member names of the outer tar, in order

    def layer_members(self, number: int) -> list[tarfile.TarInfo]:
        with tarfile.open(fileobj=io.BytesIO(self.layers[number])) as tar:
            return tar.getmembers()

    def paths(self) -> dict[str, tarfile.TarInfo]:
        found = {}
        for number in range(len(self.layers)):
            for member in self.layer_members(number):
                found["/" + member.name] = member
        return found


def read_archive(path: Path) -> Archive:
    blobs: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        for member in members:
            assert member.mtime == 0, member.name
            handle = tar.extractfile(member)
            assert handle is not None, member.name
            blobs[member.name] = handle.read()
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1], name
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(blobs["index.json"])
    (entry,) = index["manifests"]
    manifest_blob = blobs["blobs/sha256/" + entry["digest"].removeprefix("sha256:")]
    assert len(manifest_blob) == entry["size"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(manifest_blob)
    config_blob = blobs[_blob(manifest["config"]["digest"])]
    config = json.loads(config_blob)
    layers = [blobs[_blob(layer["digest"])] for layer in manifest["layers"]]
    assert [len(layer) for layer in layers] == [layer["size"] for layer in manifest["layers"]]
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    ref = entry["annotations"]["io.containerd.image.name"]
    tag = manifest["config"]["digest"].removeprefix("sha256:")[:12]
    assert ref.endswith(":" + tag)
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == tag
    (docker,) = json.loads(blobs["manifest.json"])
    assert docker == {
        "Config": _blob(manifest["config"]["digest"]),
        "RepoTags": [ref],
        "Layers": [_blob(layer["digest"]) for layer in manifest["layers"]],
    }
    return Archive(ref, config, layers, [m.name for m in members])


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def small_image(tmp_path: Path, payload: bytes = b"hello\n") -> Image:
    source = tmp_path / "tool"
    source.write_bytes(b"#!/bin/sh\necho tool\n")
    source.chmod(0o755)
    layer = [
        Entry.text("/etc/greeting", payload),
        Entry.file("/usr/local/bin/tool", source),
        Entry.symlink("/usr/bin/tool", "/usr/local/bin/tool"),
        Entry.directory("/var/lib/data", owner=1337),
    ]
    config = ImageConfig(entrypoint=("/usr/local/bin/tool",), user="1337:1337")
    return Image("harness.local/small", [[Entry.text("/etc/base", "base\n")], layer], config)


# --------------------------------------------------------------------------- fast


def test_archive_is_deterministic_and_consistent(tmp_path: Path) -> None:
    image = small_image(tmp_path)
    first = write_image_archive(image, tmp_path / "one" / "small.tar")
    second = write_image_archive(image, tmp_path / "two" / "small.tar")
    one = (tmp_path / "one" / "small.tar").read_bytes()
    assert one == (tmp_path / "two" / "small.tar").read_bytes()
    assert first == second
    archive = read_archive(tmp_path / "one" / "small.tar")
    assert archive.ref == first.ref
    assert first.ref == "harness.local/small:" + first.config_digest.removeprefix("sha256:")[:12]
    assert archive.config["config"]["Entrypoint"] == ["/usr/local/bin/tool"]
    assert archive.config["config"]["User"] == "1337:1337"
    assert (archive.config["architecture"], archive.config["os"]) == ("amd64", "linux")
    assert archive.names[:3] == ["oci-layout", "index.json", "manifest.json"]
    assert not list(tmp_path.glob("one/.*")), "no scratch file is left beside the tar"


def test_layer_lists_parents_first_with_owners_modes_and_links(tmp_path: Path) -> None:
    write_image_archive(small_image(tmp_path), tmp_path / "small.tar")
    members = read_archive(tmp_path / "small.tar").layer_members(1)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == [
        "etc",
        "etc/greeting",
        "usr",
        "usr/bin",
        "usr/bin/tool",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/tool",
        "var",
        "var/lib",
        "var/lib/data",
    ]
    by_name = {m.name: m for m in members}
    assert by_name["usr/local/bin/tool"].mode == 0o755
    assert by_name["etc/greeting"].mode == 0o644
    assert by_name["usr/bin/tool"].issym()
    assert by_name["usr/bin/tool"].linkname == "/usr/local/bin/tool"
    assert (by_name["var/lib/data"].uid, by_name["var/lib/data"].gid) == (1337, 1337)
    assert by_name["var/lib"].isdir() and by_name["var/lib"].uid == 0
    assert all(m.mtime == 0 and m.uname == "" and m.gname == "" for m in members)


def test_reference_follows_content(tmp_path: Path) -> None:
    one = write_image_archive(small_image(tmp_path), tmp_path / "a.tar")
    other = write_image_archive(small_image(tmp_path, b"bye\n"), tmp_path / "b.tar")
    assert one.ref != other.ref
    assert one.layer_digests[0] == other.layer_digests[0], "the unchanged layer is shared"
    assert one.layer_digests[1] != other.layer_digests[1]


def test_cache_key_tracks_each_input(tmp_path: Path) -> None:
    image = small_image(tmp_path)
    key = cluster_images.input_key(image)
    assert cluster_images.input_key(small_image(tmp_path)) != key, "rewritten: new mtime"
    image = small_image(tmp_path)
    key = cluster_images.input_key(image)
    assert cluster_images.input_key(image) == key
    tool = tmp_path / "tool"
    os.utime(tool, ns=(tool.stat().st_atime_ns, tool.stat().st_mtime_ns + 1))
    assert cluster_images.input_key(image) != key


def test_unknown_image_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(cluster_images.ImageBuildError, match="no image named 'nope'"):
        build_image("nope", tmp_path)
    assert not list(tmp_path.glob("*.tar"))


# --------------------------------------------------------------------------- real images


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    """The four real images, built cold into a fresh directory."""
    return build_images(tmp_path_factory.mktemp("images"))


@pytest.mark.integration
def test_real_images_are_consistent_and_cached(
    built: dict[str, BuiltImage], tmp_path: Path
) -> None:
    for name, image in built.items():
        archive = read_archive(image.path)
        assert archive.ref == image.ref
        assert image.ref.startswith(f"harness.local/{name}:")
        assert not image.cached
    again = build_images(built["app"].path.parent)
    for name, image in again.items():
        assert image.cached and image.ref == built[name].ref and image.path == built[name].path
    # A second cold build elsewhere gives the same bytes.
    for name in ("app", "pause"):
        other = build_image(name, tmp_path)
        assert other.ref == built[name].ref
        assert other.path.read_bytes() == built[name].path.read_bytes()


@pytest.mark.integration
def test_app_image_holds_the_app_and_not_the_rest(built: dict[str, BuiltImage]) -> None:
    archive = read_archive(built["app"].path)
    paths = archive.paths()
    site = "/usr/local/lib/python3.11/site-packages"
    assert f"{site}/harness/app/service.py" in paths
    assert f"{site}/aiohttp/__init__.py" in paths
    assert any(p.startswith(f"{site}/yarl/") for p in paths), "aiohttp's dependency"
    harness_files = {p for p in paths if p.startswith(f"{site}/harness/")}
    for heavy in ("runner.py", "cli.py", "toolchain.py", "cluster/images.py"):
        assert f"{site}/harness/{heavy}" not in harness_files
    stdlib = "/usr/local/lib/python3.11"
    for absent in ("test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo"):
        assert not any(p.startswith(f"{stdlib}/{absent}/") for p in paths), absent
    assert not any(p.endswith(".pyc") for p in paths)
    for absent in ("scipy", "matplotlib", "locust", "pydantic", "setuptools", "pip"):
        assert not any(p.startswith(f"{site}/{absent}/") for p in paths), absent
    assert archive.config["config"]["Entrypoint"] == [
        "/usr/local/bin/python3",
        "-m",
        "harness.app.service",
    ]


@pytest.mark.integration
def test_istio_images_are_laid_out_like_istios(built: dict[str, BuiltImage]) -> None:
    proxy = read_archive(built["proxyv2"].path)
    paths = proxy.paths()
    for path in (
        "/usr/local/bin/pilot-agent",
        "/usr/local/bin/envoy",
        "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json",
        "/lib64/ld-linux-x86-64.so.2",
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        assert path in paths, path
    for writable in ("/etc/istio/proxy", "/var/lib/istio/data"):
        assert paths[writable].isdir() and paths[writable].uid == 1337
    assert proxy.config["config"]["User"] == "1337:1337"
    assert proxy.config["config"]["Entrypoint"] == ["/usr/local/bin/pilot-agent"]
    pilot = read_archive(built["pilot"].path)
    assert "/usr/local/bin/pilot-discovery" in pilot.paths()
    assert pilot.config["config"]["Entrypoint"] == ["/usr/local/bin/pilot-discovery"]
    # One base layer, byte for byte the same in each dynamic image.
    app = read_archive(built["app"].path)
    assert proxy.layers[0] == pilot.layers[0] == app.layers[0]
    pause = read_archive(built["pause"].path)
    assert [m.name for m in pause.layer_members(0)] == ["pause"]


def get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_serving(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the app exited early: {process.communicate()}"
        try:
            if get(port, "/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the app did not answer /healthz on 127.0.0.1:{port} in {seconds} s")


def check_app_answers(port: int) -> None:
    status, body = get(port, "/items/7")
    assert status == 200, body
    answer = json.loads(body)
    assert (answer["service"], answer["instance"], answer["path"]) == (
        "catalog",
        "catalog-0",
        "/items/7",
    )


def extract_rootfs(archive: Archive, root: Path) -> dict[str, str]:
    """The image's layers unpacked in order into ``root``; its config's environment."""
    if os.geteuid() != 0:
        pytest.fail("this test chroots into the extracted image: run it as root (CI does)")
    root.mkdir()
    for layer in archive.layers:
        subprocess.run(["tar", "-xpf", "-", "-C", str(root)], input=layer, check=True)
    return dict(item.split("=", 1) for item in archive.config["config"]["Env"])


@pytest.mark.integration
def test_app_image_files_alone_run_the_app(built: dict[str, BuiltImage], tmp_path: Path) -> None:
    """chroot into the app image's extracted layers: only its files exist there."""
    archive = read_archive(built["app"].path)
    root = tmp_path / "rootfs"
    env = extract_rootfs(archive, root)
    prefix = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/python3", "-c", "import sys; print(sys.prefix)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert prefix.stdout.strip() == "/usr/local"
    port = free_port()
    argv = [*archive.config["config"]["Entrypoint"], "--service", "catalog"]
    argv += ["--instance", "catalog-0", "--listen", f"127.0.0.1:{port}"]
    app = subprocess.Popen(["chroot", str(root), *argv], env=env, stderr=subprocess.PIPE)
    try:
        wait_serving(port, app)
        check_app_answers(port)
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=30)
        assert app.returncode == 0, err
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()


@pytest.mark.integration
def test_an_app_image_missing_a_dependency_does_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control for the test above: the chroot sees only the image, so an image
    built without one of aiohttp's dependencies (yarl) cannot import the app."""
    closure = cluster_images._requirement_closure

    def without_yarl(roots: list[str]) -> list[Any]:
        return [d for d in closure(roots) if d.metadata["Name"].lower() != "yarl"]

    monkeypatch.setattr(cluster_images, "_requirement_closure", without_yarl)
    broken = build_image("app", tmp_path / "images")
    root = tmp_path / "rootfs"
    env = extract_rootfs(read_archive(broken.path), root)
    done = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/python3", "-c", "import harness.app.service"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "No module named 'yarl'" in done.stderr


# --------------------------------------------------------------------------- containerd


@dataclass
class Containerd:
    """A containerd of the test's own: its root, state and socket in one temp directory."""

    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    def ctr(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        argv = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def run(self, ref: str, name: str, *argv: str) -> subprocess.Popen[bytes]:
        argv = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", "run", "--rm",
                "--snapshotter", "native", "--net-host", ref, name, *argv]  # fmt: skip
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def _start_containerd(directory: Path) -> Containerd:
    config = directory / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{directory}/root"\n'
        f'state = "{directory}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{directory}/containerd.sock"\n'
        f'[ttrpc]\n  address = "{directory}/containerd.sock.ttrpc"\n'
    )
    with (directory / "containerd.log").open("wb") as log:
        process = subprocess.Popen(
            ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    daemon = Containerd(directory, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"containerd exited: {(directory / 'containerd.log').read_text()}")
        if daemon.socket.exists() and daemon.ctr("version", check=False, timeout=10):
            return daemon
        time.sleep(0.2)
    pytest.fail("containerd did not serve its socket in 30 s")


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is not installed: apt-get install containerd (.ci/run does)")
    # A short path: the socket's must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="harness-ctd-", dir="/tmp"))
    daemon = _start_containerd(directory)
    try:
        yield daemon
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()
        shutil.rmtree(directory)


@pytest.mark.integration
def test_ctr_imports_every_image(built: dict[str, BuiltImage], containerd: Containerd) -> None:
    """As `kind load image-archive` does it: the tar on stdin, kind's flags."""
    argv = ["ctr", "--address", str(containerd.socket), "--namespace=k8s.io", "images"]
    argv += ["import", "--all-platforms", "--digests", "--snapshotter=native", "-"]
    for image in built.values():
        with image.path.open("rb") as tar:
            done = subprocess.run(argv, stdin=tar, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    listed = set(containerd.ctr("images", "ls", "--quiet").split())
    assert {image.ref for image in built.values()} <= listed
    for image in built.values():
        check = containerd.ctr("images", "check", f"name=={image.ref}")
        assert "complete" in check and image.ref in check, check


@pytest.mark.integration
def test_ctr_imports_the_docker_archive_form(
    built: dict[str, BuiltImage], containerd: Containerd, tmp_path: Path
) -> None:
    """Without oci-layout/index.json, the same tar is a docker archive (manifest.json)."""
    docker = tmp_path / "pause-docker.tar"
    with tarfile.open(built["pause"].path) as source, tarfile.open(docker, "w") as target:
        for member in source.getmembers():
            if member.name not in ("oci-layout", "index.json"):
                target.addfile(member, source.extractfile(member))
    ref = built["pause"].ref
    containerd.ctr("images", "rm", ref, check=False)
    out = containerd.ctr("images", "import", "--snapshotter", "native", str(docker))
    assert ref in out
    assert ref in containerd.ctr("images", "ls", "--quiet").split()


def stop_task(containerd: Containerd, name: str, process: subprocess.Popen[bytes]) -> int:
    containerd.ctr("tasks", "kill", "--signal", "SIGTERM", name)
    process.communicate(timeout=60)
    return process.returncode


def wait_running(containerd: Containerd, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(
            line.split()[:1] == [name] and "RUNNING" in line
            for line in containerd.ctr("tasks", "ls").splitlines()
        ):
            return
        time.sleep(0.2)
    pytest.fail(f"task {name} did not reach RUNNING in 60 s")


@pytest.mark.integration
def test_images_run_in_real_containers(
    built: dict[str, BuiltImage], containerd: Containerd
) -> None:
    """Each image started by containerd + runc: pause waits for SIGTERM and exits 0, the
    app serves a request, Envoy, pilot-agent and pilot-discovery start."""
    for image in built.values():
        containerd.ctr("images", "import", "--snapshotter", "native", str(image.path))
    pause = containerd.run(built["pause"].ref, "t-pause")
    wait_running(containerd, "t-pause")
    assert pause.poll() is None, "pause must keep running until signalled"
    assert stop_task(containerd, "t-pause", pause) == 0

    port = free_port()
    app = containerd.run(
        built["app"].ref, "t-app", "/usr/local/bin/python3", "-m", "harness.app.service",
        "--service", "catalog", "--instance", "catalog-0", "--listen", f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        wait_serving(port, app)
        check_app_answers(port)
    finally:
        assert stop_task(containerd, "t-app", app) == 0

    versions = {
        "t-envoy": (built["proxyv2"].ref, "/usr/local/bin/envoy", "--version"),
        "t-agent": (built["proxyv2"].ref, "/usr/local/bin/pilot-agent", "version"),
        "t-pilot": (built["pilot"].ref, "/usr/local/bin/pilot-discovery", "version"),
    }
    for name, (ref, *argv) in versions.items():
        process = containerd.run(ref, name, *argv)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (name, err)
        assert b"version" in out, (name, out)


def self_signed_root() -> bytes:
    """A throwaway root certificate (PEM): all pilot-agent reads before starting Envoy."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "harness-test-root")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def task_pids(containerd: Containerd, name: str) -> list[int]:
    rows = containerd.ctr("tasks", "ps", name, check=False).splitlines()[1:]
    return [int(row.split()[0]) for row in rows if row.split() and row.split()[0].isdigit()]


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN in ``pid``'s network namespace, from /proc (the image has no
    tools to ask with)."""
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.integration
def test_pilot_agent_in_proxyv2_starts_envoy(
    built: dict[str, BuiltImage], containerd: Containerd, tmp_path: Path
) -> None:
    """pilot-agent as 1337 renders the image's bootstrap template into /etc/istio/proxy
    (no emptyDir mounted) and starts /usr/local/bin/envoy, which opens its admin port. The
    container has its own network namespace; istiod's address there refuses, as it should:
    only the root certificate a pod gets from Istio's ConfigMap is mounted."""
    containerd.ctr("images", "import", "--snapshotter", "native", str(built["proxyv2"].path))
    secrets = tmp_path / "istio"
    secrets.mkdir()
    (secrets / "root-cert.pem").write_bytes(self_signed_root())
    proxy_config = {"discoveryAddress": "127.0.0.1:1", "proxyAdminPort": 15000}
    env = {"POD_NAME": "p", "POD_NAMESPACE": "ns", "INSTANCE_IP": "127.0.0.1"}
    env |= {"PROXY_CONFIG": json.dumps(proxy_config), "CA_ADDR": "127.0.0.1:1"}
    mount = f"type=bind,src={secrets},dst=/var/run/secrets/istio,options=rbind:ro"
    argv = ["ctr", "--address", str(containerd.socket), "--namespace", "k8s.io", "run", "--rm",
            "--snapshotter", "native", "--mount", mount]  # fmt: skip
    argv += [f"--env={key}={value}" for key, value in env.items()]
    argv += [built["proxyv2"].ref, "t-sidecar", "/usr/local/bin/pilot-agent", "proxy", "sidecar"]
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        envoy = None
        while time.monotonic() < deadline and envoy is None:
            assert agent.poll() is None, agent.communicate()
            for pid in task_pids(containerd, "t-sidecar"):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if cmdline[0] == b"/usr/local/bin/envoy" and 15000 in listening_ports(pid):
                    envoy = (pid, cmdline)
            time.sleep(0.3)
        assert envoy is not None, "pilot-agent did not start an Envoy that opened its admin port"
        pid, cmdline = envoy
        assert b"etc/istio/proxy/envoy-rev.json" in cmdline
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nUid:\t1337\t" in status
    finally:
        containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "t-sidecar", check=False)
        agent.communicate(timeout=60)
