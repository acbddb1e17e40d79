"""What a raw HR value may be, and how its text is normalised before it reaches Exmail.

PURE: no I/O, no clock. Mapping (:mod:`syncengine.connectors.mapping`) calls these on every
record; the rules are the README's "What counts as a bad row":

* **Invisible characters** (zero-width spaces and joiners, the byte-order mark, soft hyphens,
  left-to-right / right-to-left marks) are removed from every value, ids included: an id
  ``E3`` followed by U+200B is ``E3``. **Bidirectional overrides and isolates** (U+202A-E,
  U+2066-9) change how text *displays* and are a classic spoofing trick: a name or position
  holding one is quarantined rather than silently changed.
* **Names and positions** are NFC-normalised and trimmed of ASCII and full-width spaces; a
  space (ASCII or ideographic U+3000) between two CJK characters is removed, since HR files
  use it to align two-character names ("王　芳" is 王芳); a space between Latin words is kept.
* **Formulas**: a name, position or department that starts with ``=``, or with ``+``, ``-``
  or ``@`` followed by formula syntax (a function call, a cell reference, a DDE ``cmd|``), is
  quarantined: pushed verbatim it becomes a CSV-injection payload in every export of the
  Exmail directory.
* **Types**: a field that must be one scalar and is an object, a list of several values or a
  boolean is a quarantine reason; a number where text is expected is accepted only for ids,
  phone numbers, gender/status codes and dates (as text, an integral float without ``.0``).
* **Excel serial dates**: a date field holding a number (or digits) between 1 and 2958465
  is an Excel 1900-system serial (``45000`` is 2023-03-15).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

# Removed wherever they appear: they carry no meaning in an HR value.
_INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
# Quarantined in names and positions: they reorder what a reader sees.
_BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")
_CJK = (
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_CJK_GAP_RE = re.compile(f"(?<=[{_CJK}])[ \u3000]+(?=[{_CJK}])")
_SPACES = " \t\u3000\u00a0"
_FORMULA_RE = re.compile(
    r"""^[=＝]\s*\S                                   # anything after '='
      | ^[+\-@＋－＠]\s*(?:
            [A-Za-z_][\w.]*\s*[(!|]                      # SUM(  cmd|  Sheet1!
          | \$?[A-Za-z]{1,3}\$?\d+\b                     # A1  $B$2
          | [\d.]+\s*[-+*/^&]\s*[\w(]                    # 1+1
          | [("']                                        # -(  @'
        )""",
    re.VERBOSE,
)
EXCEL_EPOCH = date(1899, 12, 30)
MAX_EXCEL_SERIAL = 2958465  # 9999-12-31


def strip_invisible(text: str) -> str:
    """``text`` without zero-width and other invisible characters (fast when there are none)."""
    if text.isascii() or not INVISIBLE_RE.search(text):
        return text
    return INVISIBLE_RE.sub("", text)


def normalise_words(text: str) -> str:
    """A name or position as Exmail should get it: NFC, trimmed, no gaps between CJK."""
    if text.isascii():
        return text.strip()
    return _normalise_words(text)


@functools.lru_cache(maxsize=65536)
def _normalise_words(text: str) -> str:
    # Names and positions repeat a lot in an export (one position per hundred people).
    text = strip_invisible(text)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = text.strip(_SPACES)
    if " " in text or "\u3000" in text:
        text = _CJK_GAP_RE.sub("", text)
    return text


def words_problem(text: str) -> str | None:
    """Why a name, position or department name cannot be sent as it is, or None."""
    found = _BIDI_RE.search(text)
    if found:
        return (
            f"contains the invisible direction control U+{ord(found.group()):04X}, "
            "which changes how the text displays"
        )
    if text and text[0] in "=+-@＝＋－＠" and _FORMULA_RE.match(text):
        return "looks like a spreadsheet formula (a leading =, +, - or @); it is not sent"
    return None


def type_problem(value: Any, *, numbers: bool, flags: bool = False) -> str | None:
    """Why a raw value is not usable as one scalar field, or None.

    ``numbers``: whether a number is acceptable (ids, phone numbers, codes, dates).
    ``flags``: whether true/false is (a status read from a directory's "disabled" flag).
    """
    if value is None or type(value) is str:
        return None
    if isinstance(value, dict):
        return "is an object, not a single value"
    if isinstance(value, list | tuple):
        if len(value) > 1:
            return f"is a list of {len(value)} values, not a single value"
        return type_problem(value[0], numbers=numbers, flags=flags) if value else None
    if isinstance(value, bool):
        return None if flags else "is true/false, not text"
    if isinstance(value, int | float | Decimal):
        if not numbers:
            return "is a number, not text"
        if isinstance(value, float | Decimal) and not _integral(value):
            return "is a number with decimals, not an id or a phone number"
        return None
    if isinstance(value, bytes | bytearray):
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "holds bytes that are not UTF-8 text (set the source's encoding)"
    return None


def _integral(value: int | float | Decimal) -> bool:
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return value.is_finite() and value == value.to_integral_value()


def excel_serial_date(value: Any) -> date | None:
    """The date an Excel serial number stands for (1900 date system), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 7):
            return None
        value = int(text)
    if isinstance(value, int | float | Decimal) and _integral(value):
        days = int(value)
        if 1 <= days <= MAX_EXCEL_SERIAL:
            return EXCEL_EPOCH + timedelta(days=days)
    return None


__all__ = [
    "excel_serial_date",
    "normalise_words",
    "strip_invisible",
    "type_problem",
    "words_problem",
]
