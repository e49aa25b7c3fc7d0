"""Check a user's own locustfile (``load.locustfile``) before a run, without importing it.

Importing a locustfile imports Locust, which monkey-patches the interpreter with gevent, so
the check reads the file's syntax tree instead: the file must exist, parse as Python and
define at least one class whose base is named like a Locust User class (``User``,
``HttpUser``, ``FastHttpUser``, ``locust.HttpUser``, any ``...User``). Locust itself makes
the final decision when it loads the file (it may still find that class abstract).
"""

from __future__ import annotations

import ast
from pathlib import Path

from harness.files import read_bytes_limited

MAX_LOCUSTFILE_BYTES = 1024 * 1024


def resolve_locustfile(written: str, base_dir: Path) -> Path:
    """The locustfile ``written`` in the scenario, relative to the scenario's folder."""
    return (base_dir / Path(written).expanduser()).resolve()


def locustfile_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a user's locustfile, or ``None`` when it can."""
    try:
        text = read_bytes_limited(path, MAX_LOCUSTFILE_BYTES, "locustfile").decode("utf-8")
    except FileNotFoundError:
        return f"{path} does not exist (the path is relative to the scenario file's folder)"
    except (OSError, ValueError) as error:
        return f"cannot read {path}: {error}"
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as error:
        return f"{path}:{error.lineno}: not valid Python: {error.msg}"
    if not any(_is_user_class(node) for node in ast.walk(tree)):
        return (
            f"{path} defines no Locust User class: add e.g. 'class Shopper(HttpUser):' "
            "with @task methods (from locust import HttpUser, task)"
        )
    return None


def _is_user_class(node: ast.AST) -> bool:
    if not isinstance(node, ast.ClassDef):
        return False
    for base in node.bases:
        name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if isinstance(name, str) and name.endswith("User"):
            return True
    return False


__all__ = ["MAX_LOCUSTFILE_BYTES", "locustfile_problem", "resolve_locustfile"]
