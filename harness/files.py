"""Every file the harness writes or reads goes through here, so no write follows a link.

A run directory may be shared, or an attacker may plant a symlink in it (``report.html.tmp
→ ~/.bashrc``). So a write never opens a fixed temporary name: it creates a fresh one in the
target's directory with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (:func:`tempfile.mkstemp`),
writes, ``fsync``\\ s and renames it over the target. ``rename`` replaces a symlink at the
target instead of following it, and a reader never sees a torn file. An append (the undo
journal) opens with ``O_NOFOLLOW`` and refuses anything but a regular file.

Reads of user input refuse FIFOs, devices and directories at once (a FIFO would block
forever) and files larger than a stated limit.

>>> write_atomic(Path("reports/x/report.html"), "<html>…", inputs=[journal_path])
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from harness.errors import OutputError

__all__ = ["append_line", "read_bytes_limited", "redact_secrets", "same_file", "write_atomic"]


def _umask() -> int:
    # os.umask() can only be read by setting it, which races with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def same_file(a: Path, b: Path) -> bool:
    """Whether both paths name the same existing file (after links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_atomic(target: Path, data: str | bytes, *, inputs: Iterable[Path] = ()) -> Path:
    """Replace ``target`` with ``data`` atomically, never following a planted link.

    ``inputs`` are the files the content was made from: overwriting one of them is refused
    (``harness report J --out J``). A directory as target is refused too. Raises
    :class:`~harness.errors.OutputError` with the reason.
    """
    for source in inputs:
        if same_file(target, source):
            raise OutputError(
                f"{target}: refusing to overwrite the input {source}; choose another --out"
            )
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"{target} is a directory; give a file name such as {target}/report.html")
    directory = target.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"{target}: cannot write here: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise OutputError(f"{target}: cannot write: {exc.strerror or exc}") from None
        raise
    return target


def append_line(path: Path, line: str) -> None:
    """Append one line (and fsync), refusing a symlink, FIFO or anything but a regular file."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: cannot append (a link or not a regular file?): {exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputError(f"{path}: not a regular file; refusing to append to it")
        payload = (line.rstrip("\n") + "\n").encode("utf-8")
        written = 0
        while written < len(payload):
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bytes_limited(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    A FIFO, device or directory is refused without blocking (``O_NONBLOCK``); so is a file
    larger than ``limit``. Raises ``OSError`` (missing file) or ``ValueError`` (refused).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ValueError(f"{path}: {kind}; a {what} must be a regular file")
        if info.st_size > limit:
            raise ValueError(
                f"{path}: {info.st_size} bytes; a {what} may have at most {limit} bytes"
            )
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise ValueError(f"{path}: a {what} may have at most {limit} bytes")
        return data
    finally:
        os.close(fd)


# A PEM block (certificate, key) and a JWT (a ServiceAccount token): what must not stay in
# the logs a run keeps, even when a component prints it (istiod logs the certificates it
# makes).
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----.*?-----END \1-----", re.DOTALL)
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
MAX_REDACT_BYTES = 256 * 1024 * 1024


def redact_secrets(directory: Path) -> list[Path]:
    """Replace every PEM block and JWT in the regular files directly in ``directory`` with
    a marker (``[... redacted by the harness]``); the files changed. Run once the processes
    writing them are gone."""
    changed: list[Path] = []
    if not directory.is_dir():
        return changed
    for path in sorted(directory.iterdir()):
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_REDACT_BYTES:
            continue
        data = path.read_bytes()
        clean = _PEM_BLOCK.sub(lambda m: b"[PEM " + m.group(1) + b" redacted by the harness]", data)
        clean = _JWT.sub(b"[token redacted by the harness]", clean)
        if clean != data:
            write_atomic(path, clean)
            changed.append(path)
    return changed
