"""Parsing what a client sends, so that no input can make the emulator answer HTTP 500.

The real service answers malformed input with its invalid-parameter errcode (Gen 2 40092 or
47001 for a body that is not JSON, Gen 1 1100), never with a server error. Python's own parsers
fail in ways a handler does not expect: ``json.loads`` recurses once per nesting level
(RecursionError on a body nested thousands deep) and accepts ``Infinity``/``NaN`` (which later
overflow ``int()``); ``int()`` refuses more than 4,300 digits and accepts non-ASCII digits such
as ``²`` in ``str.isdigit``. These helpers turn each of those into an :class:`ApiError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from syncengine.emulator.model import ApiError

MAX_JSON_DEPTH = 64
"""Deeper JSON is refused before parsing (the reference's bodies are at most 3 levels deep)."""

MAX_VERSION_DIGITS = 19
"""A Gen 1 ``Ver`` is epoch milliseconds (13 digits); 19 digits still fit a signed int64."""

_VERSION = re.compile(f"[0-9]{{1,{MAX_VERSION_DIGITS}}}")
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")


def _too_deep(raw: bytes, limit: int) -> bool:
    """Whether the bracket nesting of ``raw`` (outside strings) goes past ``limit``."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_object(raw: bytes) -> dict[str, Any]:
    """A Gen 2 POST body as a dict; anything else is ApiError 47001 (data format error)."""
    if _too_deep(raw, MAX_JSON_DEPTH):
        raise ApiError(47001, 1100, f"data format error: JSON nested deeper than {MAX_JSON_DEPTH}")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(47001, 1100, "data format error: the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(47001, 1100, "data format error: the body must be a JSON object")
    return body


def version(raw: str | None, *, default: str | None = None) -> int:
    """A Gen 1 ``Ver``: ASCII digits only, at most 19 of them; else ApiError 1100."""
    text = (raw or "").strip() or (default or "")
    if not _VERSION.fullmatch(text):
        shown = text if len(text) <= 24 else text[:24] + "..."
        raise ApiError(40092, 1100, f"invalid Ver {shown!r} (ASCII digits, at most 19)")
    return int(text)
