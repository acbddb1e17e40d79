"""The field-level rules of mapping: how a raw value becomes text, a date, a mobile number or a
department path, what a problem may quote, and the shared constants.

PURE: no I/O, no clock. Split out of :mod:`syncengine.connectors.mapping` (people) and used by
:mod:`syncengine.connectors.department_table` too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from syncengine.connectors.base import ROW_KEY
from syncengine.connectors.config import (
    FieldSpec,
)
from syncengine.connectors.values import (
    INVISIBLE_RE,
    normalise_words,
    strip_invisible,
    words_problem,
)
from syncengine.domain import (
    MAX_DEPARTMENT_DEPTH,
    Gender,
    Person,
    RowProblem,
    department_name_problem,
)

MISSING = object()
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
MOBILE_NOISE_RE = re.compile(r"[\s\-().\u3000\u2010-\u2015]")
MAINLAND_MOBILE_RE = re.compile(r"^(?:\+?86|0086)?(1[3-9]\d{9})$")
ANY_MOBILE_RE = re.compile(r"^\+?\d{5,20}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
TEXT_TYPES = (str, type(None))
INVISIBLE_STRIPPED = frozenset({"employee_id", "email", "aliases"})
EMAIL_IN_TEXT_RE = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
FULLWIDTH_SEPARATORS = str.maketrans({"／": "/", "＼": "/", "\\": "/"})
MAX_ID_CHARS = 64  # employee and department ids: Exmail's extid, the staging key columns
MAX_EMAIL_CHARS = 254  # RFC 5321 path limit
MAX_SHOWN_VALUE = 200  # a problem quotes at most this much of a value
# Fields whose source may say true/false: LDAP/AD's "disabled", a JSON "active" flag.
FLAG_FIELDS = frozenset({"status"})
# Fields where a number is a fine value (read as text, an integral float without ".0").
NUMERIC_FIELDS = frozenset({"employee_id", "mobile", "tel", "gender", "status", "start_date",
                             "end_date"})  # fmt: skip


def cut_value(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_SHOWN_VALUE:
        return value
    return value[:MAX_SHOWN_VALUE] + "…"


def shown(text: str | None) -> str | None:
    """Text safe to print and to store: control characters escaped, long values cut."""
    if text is None:
        return None
    if CONTROL_RE.search(text):
        text = CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return cut_value(text)


def finish_problems(problems: list[RowProblem]) -> tuple[RowProblem, ...]:
    """Problems in row order, quoting values and reasons safely (PostgreSQL refuses NUL)."""
    safe = (
        p
        if shown(p.value) == p.value and shown(p.reason) == p.reason
        else dataclasses.replace(p, value=shown(p.value), reason=shown(p.reason) or "")
        for p in problems
    )
    return tuple(sorted(safe, key=problem_key))


def id_problem(value: str) -> str | None:
    """Why a (non-empty) employee or department id cannot be used as a key, or None."""
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters long (at most {MAX_ID_CHARS})"
    if CONTROL_RE.search(value):
        return "contains a line break or another control character"
    return None


# Values HR systems commonly use; a [mapping] ``map`` is applied first and may add more.
GENDER_VALUES: dict[str, Gender] = {
    "男": Gender.MALE,
    "女": Gender.FEMALE,
    "m": Gender.MALE,
    "f": Gender.FEMALE,
    "male": Gender.MALE,
    "female": Gender.FEMALE,
    "1": Gender.MALE,
    "2": Gender.FEMALE,
    "0": Gender.UNSET,
    "": Gender.UNSET,
    "未知": Gender.UNSET,
    "unset": Gender.UNSET,
}
STATUS_VALUES: dict[str, str] = {
    "active": "active",
    "在职": "active",
    "正式": "active",
    "试用": "active",
    "试用期": "active",
    "实习": "active",
    "leave": "leave",
    "休假": "leave",
    "停薪留职": "leave",
    "terminated": "terminated",
    "离职": "terminated",
    "已离职": "terminated",
}
DEFAULT_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


# --- values ------------------------------------------------------------------------------


def text_value(value: Any) -> str:
    """Any raw value as the text a person would read in the source.

    Spreadsheets give numbers (an employee id 1001 or a mobile 13800138000 may come back as
    ``1001.0``), LDAP gives bytes and lists, JSON nests: all become plain text here.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):  # SQL NUMERIC columns
        if not value.is_finite():
            return ""
        return str(int(value)) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, list | tuple):
        if len(value) == 1:
            return text_value(value[0])
        return ",".join(text_value(v) for v in value)
    return str(value)


def lookup(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record; ``a.b`` reaches into nested objects when there is no key ``a.b``."""
    if name in record:
        return record[name]
    if "." in name:
        cur: Any = record
        for part in name.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                return MISSING
        return cur
    return MISSING


def raw_value(spec: FieldSpec, record: Mapping[str, Any]) -> Any:
    if spec.field is not None:
        value = lookup(record, spec.field)
        return None if value is MISSING else value
    if spec.template is not None:
        empty = False

        def fill(match: re.Match[str]) -> str:
            nonlocal empty
            value = lookup(record, match.group(1).strip())
            text = "" if value is MISSING else text_value(value).strip()
            if not text:
                empty = True
            return text

        filled = PLACEHOLDER_RE.sub(fill, spec.template)
        return "" if empty else filled
    return spec.constant


def clean_text(spec: FieldSpec, text: str) -> str:
    if not text.isascii() and INVISIBLE_RE.search(text):
        text = strip_invisible(text)
    if spec.strip:
        text = text.strip()
    if spec.case == "lower":
        text = text.lower()
    elif spec.case == "upper":
        text = text.upper()
    if spec.map:
        if text in spec.map:
            text = spec.map[text]
        else:
            folded = text.casefold()
            for key, mapped in spec.map.items():
                if key.casefold() == folded:
                    text = mapped
                    break
    return text


def field_values(spec: FieldSpec, record: Mapping[str, Any]) -> list[str]:
    """The cleaned values of a list field (``split``), empty ones dropped."""
    raw = raw_value(spec, record)
    if isinstance(raw, list | tuple):
        items = [text_value(v) for v in raw]
    elif spec.split is not None:
        items = text_value(raw).split(spec.split)
    else:
        items = [text_value(raw)]
    if spec.split is not None:
        items = [part for item in items for part in item.split(spec.split)]
    values = [v for v in (clean_text(spec, item) for item in items) if v]
    if not values and spec.default:
        values = [spec.default]
    return values


def field_value(spec: FieldSpec, record: Mapping[str, Any]) -> str:
    """The cleaned value of a single-valued field (``""`` when empty)."""
    if spec.split is not None:
        values = field_values(spec, record)
        return values[0] if values else ""
    value = clean_text(spec, text_value(raw_value(spec, record)))
    if not value and spec.default:
        value = spec.default
    return value


def parse_date(text: str, formats: Iterable[str] = ()) -> date | None:
    """A date from text in one of ``formats``, ISO, or a common Chinese form; None if none fit."""
    return parse_date_formats(text.strip(), tuple(formats))


@functools.lru_cache(maxsize=8192)
def parse_date_formats(text: str, formats: tuple[str, ...]) -> date | None:
    # HR files repeat the same dates a lot (start of month, one batch of hires): cache them.
    if not formats:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    for fmt in (*formats, *DEFAULT_DATE_FORMATS):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return None


def normalise_mobile(text: str, check: str = "mainland") -> str | None:
    """A mobile number without spaces/dashes (and without +86 for mainland), or None if bad."""
    compact = MOBILE_NOISE_RE.sub("", text)
    if check == "mainland":
        match = MAINLAND_MOBILE_RE.match(compact)
        return match.group(1) if match else None
    return compact if ANY_MOBILE_RE.match(compact) else None


def dept_name_problem(name: str) -> str | None:
    """Why Exmail would refuse a department name (or a control character in it), or None."""
    problem = department_name_problem(name)
    if problem is None and CONTROL_RE.search(name):
        problem = "contains a line break or another control character"
    return problem


@functools.lru_cache(maxsize=8192)
def department_path(value: str, separator: str) -> tuple[str, str | None]:
    """A department value from a people row as a ``/`` path, and why it is bad (or None).

    With the default separator ``/``, the full-width ``／`` and both backslashes (``\\``,
    ``＼``) separate levels too: Chinese input methods type them for a slash.
    """
    if separator == "/" and (not value.isascii() or "\\" in value):
        value = value.translate(FULLWIDTH_SEPARATORS)
    segments = [normalise_words(seg) for seg in value.split(separator)]
    segments = [seg for seg in segments if seg]
    for seg in segments:
        problem = dept_name_problem(seg) or words_problem(seg)
        if problem:
            return "/".join(segments), f"department name {seg!r} {problem}"
    if len(segments) > MAX_DEPARTMENT_DEPTH:
        return (
            "/".join(segments),
            f"department path is {len(segments)} levels deep (at most {MAX_DEPARTMENT_DEPTH})",
        )
    return "/".join(segments), None


def record_value(record: Mapping[str, Any], name: str) -> Any:
    value = lookup(record, name)
    return None if value is MISSING else value


def row_number(record: Mapping[str, Any], index: int) -> int:
    row = record.get(ROW_KEY)
    return row if isinstance(row, int) and not isinstance(row, bool) else index + 1


def problem_key(p: RowProblem) -> tuple[int, str, str]:
    return (p.row if p.row is not None else -1, p.field or "", p.reason)


def single_getter(spec: FieldSpec, invisible: bool) -> Callable[[Mapping[str, Any]], str]:
    """``field_value`` for one spec, with a fast path for the common plain column.

    Mapping 100,000 rows calls this a million times; a plain column (no split, map, default
    or nesting) needs only a lookup, a strip and perhaps a case change. ``invisible``: strip
    zero-width characters here (ids, addresses; names, positions and departments are
    normalised later, and elsewhere such a character makes the value invalid: quarantined).
    """
    name = spec.field
    if name is None or "." in name or spec.split is not None or spec.map or spec.default:
        return lambda record: field_value(spec, record)
    strip, case = spec.strip, spec.case
    search, sub = INVISIBLE_RE.search, INVISIBLE_RE.sub

    def get(record: Mapping[str, Any]) -> str:
        value = record.get(name)
        text = value if type(value) is str else text_value(value)
        if invisible and not text.isascii() and search(text):
            text = sub("", text)
        if strip:
            text = text.strip()
        if case == "lower":
            return text.lower()
        if case == "upper":
            return text.upper()
        return text

    return get


def hold_back_shared_addresses(
    people: list[Person],
    row_of: Mapping[str, int],
    label: Callable[[str], str],
    quarantined: set[str],
    problems: list[RowProblem],
) -> list[Person]:
    """Quarantine every employee whose address (primary or alias) another employee also has.

    HR cannot mean both; syncing either would hand one person's mail to the other.
    """
    owners: dict[str, set[str]] = {}
    for person in people:
        for address in (person.email, *person.aliases):
            if address:
                owners.setdefault(address, set()).add(person.employee_id)
    shared = {address: ids for address, ids in owners.items() if len(ids) > 1}
    if not shared:
        return people
    held: dict[str, list[str]] = {}
    for address, ids in shared.items():
        for employee_id in ids:
            held.setdefault(employee_id, []).append(address)
    kept: list[Person] = []
    for person in people:
        addresses = held.get(person.employee_id)
        if not addresses:
            kept.append(person)
            continue
        quarantined.add(person.employee_id)
        for address in sorted(addresses):
            others = sorted(shared[address] - {person.employee_id})
            where = ", ".join(f"{o} (row {row_of[o]})" for o in others)
            problems.append(
                RowProblem(
                    reason=f"address is also given to employee {where}; both are held back",
                    row=row_of[person.employee_id],
                    field=label("email" if address == person.email else "aliases"),
                    value=address,
                    employee_id=person.employee_id,
                )
            )
    return kept
