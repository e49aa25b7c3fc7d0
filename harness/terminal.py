"""Text from scenario files and journals, made safe to print on a terminal.

Names, messages and paths come from files anyone may write. Printed raw, an escape sequence
in them could clear the screen, set the window title or hide a line; through Rich markup,
``[/]`` would crash the table and ``[link=…]`` make a link. So every piece of data the
harness prints passes through :func:`plain` (control and format characters become visible
escapes such as ``\\x1b``) and, where Rich markup is on, :func:`markup_safe`.

>>> plain("evil\\x1b]0;title\\x07")
'evil\\\\x1b]0;title\\\\x07'
>>> markup_safe("[/]")
'\\\\[/]'
"""

from __future__ import annotations

import unicodedata

from rich.markup import escape

__all__ = ["markup_safe", "plain"]


def _visible(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def plain(text: object, *, newlines: bool = False) -> str:
    """``text`` with control and format characters (C0, DEL, C1, bidi overrides, zero-width
    characters) replaced by visible escapes; ``newlines=True`` keeps line breaks."""
    value = str(text)
    if value.isprintable():  # the common case, fast
        return value
    out = []
    for char in value:
        if (newlines and char == "\n") or unicodedata.category(char) not in ("Cc", "Cf"):
            out.append(char)
        else:
            out.append(_visible(char))
    return "".join(out)


def markup_safe(text: object, *, newlines: bool = False) -> str:
    """:func:`plain`, then escaped for Rich markup, for data inside a markup string."""
    return escape(plain(text, newlines=newlines))
