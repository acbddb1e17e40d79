"""Raw HR records to validated Persons and Departments, with every problem collected.

PURE: no I/O, no clock; records in, a :class:`MappingResult` out. Mapping never raises on
the *content* of a record: whatever a row holds, the worst outcome is a
:class:`~syncengine.domain.RowProblem` naming the row, the field, the value and the reason,
and the row's employee being *quarantined*. A quarantined employee is not synced and, just as
important, is never treated as a leaver: ``MappingResult.quarantined`` carries their ids so the
planner leaves their mailboxes alone until HR fixes the row.

Departments come either from the people rows (paths such as ``研发中心/平台部``, one or several
per person) or from a separate department table (id, name, parent id), built by
:func:`build_department_table`; then the people's department values are ids or names, paths
are resolved by walking up the parents, and each Department keeps its HR id so the planner can
tell a rename or a move from a delete and a create.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from syncengine.connectors.base import ERROR_KEY, RAW_KEY, ROW_KEY, TextRecord
from syncengine.connectors.config import (
    DepartmentsConfig,
    FieldSpec,
    MappingConfig,
    template_fields,
)
from syncengine.connectors.values import (
    INVISIBLE_RE,
    excel_serial_date,
    normalise_words,
    strip_invisible,
    type_problem,
    words_problem,
)
from syncengine.domain import (
    MAX_ALIASES,
    MAX_DEPARTMENT_DEPTH,
    MAX_DEPARTMENTS,
    MAX_NAME_BYTES,
    MAX_POSITION_BYTES,
    Department,
    Gender,
    Person,
    RowProblem,
    Status,
    UnidentifiedRow,
    byte_length,
    department_name_problem,
    is_valid_email,
    normalise_email,
    parent_path,
)

_MISSING = object()
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_MOBILE_NOISE_RE = re.compile(r"[\s\-().\u3000\u2010-\u2015]")
_MAINLAND_MOBILE_RE = re.compile(r"^(?:\+?86|0086)?(1[3-9]\d{9})$")
_ANY_MOBILE_RE = re.compile(r"^\+?\d{5,20}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_TYPES = (str, type(None))
_INVISIBLE_STRIPPED = frozenset({"employee_id", "email", "aliases"})
_EMAIL_IN_TEXT_RE = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_FULLWIDTH_SEPARATORS = str.maketrans({"／": "/", "＼": "/", "\\": "/"})
MAX_ID_CHARS = 64  # employee and department ids: Exmail's extid, the staging key columns
MAX_EMAIL_CHARS = 254  # RFC 5321 path limit
MAX_SHOWN_VALUE = 200  # a problem quotes at most this much of a value
# Fields whose source may say true/false: LDAP/AD's "disabled", a JSON "active" flag.
_FLAG_FIELDS = frozenset({"status"})
# Fields where a number is a fine value (read as text, an integral float without ".0").
_NUMERIC_FIELDS = frozenset({"employee_id", "mobile", "tel", "gender", "status", "start_date",
                             "end_date"})  # fmt: skip


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_SHOWN_VALUE:
        return value
    return value[:MAX_SHOWN_VALUE] + "…"


def _shown(text: str | None) -> str | None:
    """Text safe to print and to store: control characters escaped, long values cut."""
    if text is None:
        return None
    if _CONTROL_RE.search(text):
        text = _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return _cut(text)


def _finish(problems: list[RowProblem]) -> tuple[RowProblem, ...]:
    """Problems in row order, quoting values and reasons safely (PostgreSQL refuses NUL)."""
    safe = (
        p
        if _shown(p.value) == p.value and _shown(p.reason) == p.reason
        else dataclasses.replace(p, value=_shown(p.value), reason=_shown(p.reason) or "")
        for p in problems
    )
    return tuple(sorted(safe, key=_problem_key))


def id_problem(value: str) -> str | None:
    """Why a (non-empty) employee or department id cannot be used as a key, or None."""
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters long (at most {MAX_ID_CHARS})"
    if _CONTROL_RE.search(value):
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


@dataclass(frozen=True)
class MappingResult:
    """What one source yields once mapped and checked.

    ``problems`` quarantine rows (their employees are in ``quarantined`` when the row had a
    usable employee id); ``notes`` are informational (an identical duplicate kept once) and
    quarantine nothing. ``missing_fields`` lists configured source fields no record had at all:
    usually a misspelt column name in ``[mapping]``.
    """

    people: tuple[Person, ...]
    departments: tuple[Department, ...]
    problems: tuple[RowProblem, ...]
    quarantined: frozenset[str]
    rows: int
    notes: tuple[RowProblem, ...] = ()
    missing_fields: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    unidentified: tuple[UnidentifiedRow, ...] = ()

    def held_reasons(self) -> dict[str, str]:
        """Each quarantined employee's first problem, as the plan shows why it holds them."""
        out: dict[str, str] = {}
        for p in self.problems:
            if p.employee_id and p.employee_id not in out:
                out[p.employee_id] = f"{p.field}: {p.reason}" if p.field else p.reason
        return out

    def department_parents(self) -> dict[str, str | None]:
        """Each department's parent HR id (None at the top or without a department table)."""
        hr_ids = {d.path: d.hr_id for d in self.departments}
        return {d.path: hr_ids.get(parent_path(d.path)) for d in self.departments}

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "people": len(self.people),
            "departments": len(self.departments),
            "quarantined": len(self.quarantined),
            "problems": len(self.problems),
        }


@dataclass(frozen=True)
class DepartmentTable:
    """A department table resolved into paths.

    ``departments`` holds the valid ones (``hr_id`` set); ``by_id`` maps every valid id to its
    path (root ids to ``""``); ``invalid`` maps ids that cannot be used to the reason, so a
    person in such a department is quarantined with that reason.
    """

    departments: tuple[Department, ...]
    by_id: Mapping[str, str]
    by_name: Mapping[str, tuple[str, ...]]
    invalid: Mapping[str, str]
    problems: tuple[RowProblem, ...]
    parent_ids: Mapping[str, str | None] = field(default_factory=dict)
    rows: int = 0


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


def _lookup(record: Mapping[str, Any], name: str) -> Any:
    """A field of a record; ``a.b`` reaches into nested objects when there is no key ``a.b``."""
    if name in record:
        return record[name]
    if "." in name:
        cur: Any = record
        for part in name.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            else:
                return _MISSING
        return cur
    return _MISSING


def _raw(spec: FieldSpec, record: Mapping[str, Any]) -> Any:
    if spec.field is not None:
        value = _lookup(record, spec.field)
        return None if value is _MISSING else value
    if spec.template is not None:
        empty = False

        def fill(match: re.Match[str]) -> str:
            nonlocal empty
            value = _lookup(record, match.group(1).strip())
            text = "" if value is _MISSING else text_value(value).strip()
            if not text:
                empty = True
            return text

        filled = _PLACEHOLDER_RE.sub(fill, spec.template)
        return "" if empty else filled
    return spec.constant


def _clean(spec: FieldSpec, text: str) -> str:
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
    raw = _raw(spec, record)
    if isinstance(raw, list | tuple):
        items = [text_value(v) for v in raw]
    elif spec.split is not None:
        items = text_value(raw).split(spec.split)
    else:
        items = [text_value(raw)]
    if spec.split is not None:
        items = [part for item in items for part in item.split(spec.split)]
    values = [v for v in (_clean(spec, item) for item in items) if v]
    if not values and spec.default:
        values = [spec.default]
    return values


def field_value(spec: FieldSpec, record: Mapping[str, Any]) -> str:
    """The cleaned value of a single-valued field (``""`` when empty)."""
    if spec.split is not None:
        values = field_values(spec, record)
        return values[0] if values else ""
    value = _clean(spec, text_value(_raw(spec, record)))
    if not value and spec.default:
        value = spec.default
    return value


def parse_date(text: str, formats: Iterable[str] = ()) -> date | None:
    """A date from text in one of ``formats``, ISO, or a common Chinese form; None if none fit."""
    return _parse_date(text.strip(), tuple(formats))


@functools.lru_cache(maxsize=8192)
def _parse_date(text: str, formats: tuple[str, ...]) -> date | None:
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
    compact = _MOBILE_NOISE_RE.sub("", text)
    if check == "mainland":
        match = _MAINLAND_MOBILE_RE.match(compact)
        return match.group(1) if match else None
    return compact if _ANY_MOBILE_RE.match(compact) else None


def dept_name_problem(name: str) -> str | None:
    """Why Exmail would refuse a department name (or a control character in it), or None."""
    problem = department_name_problem(name)
    if problem is None and _CONTROL_RE.search(name):
        problem = "contains a line break or another control character"
    return problem


@functools.lru_cache(maxsize=8192)
def department_path(value: str, separator: str) -> tuple[str, str | None]:
    """A department value from a people row as a ``/`` path, and why it is bad (or None).

    With the default separator ``/``, the full-width ``／`` and both backslashes (``\\``,
    ``＼``) separate levels too: Chinese input methods type them for a slash.
    """
    if separator == "/" and (not value.isascii() or "\\" in value):
        value = value.translate(_FULLWIDTH_SEPARATORS)
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


# --- department table --------------------------------------------------------------------


def build_department_table(
    records: Iterable[Mapping[str, Any]], config: DepartmentsConfig
) -> DepartmentTable:
    """Resolve a department table (id, name, parent id) into paths, checking every row."""
    problems: list[RowProblem] = []
    names: dict[str, str] = {}
    parents: dict[str, str] = {}
    rows_of: dict[str, int | None] = {}
    invalid: dict[str, str] = {}
    roots = set(config.root_ids)
    tops = set(config.top_parents)
    id_f, name_f, parent_f = (
        f"departments.{config.id_field}",
        f"departments.{config.name_field}",
        f"departments.{config.parent_field}",
    )
    count = 0
    for index, record in enumerate(records):
        count += 1
        row = _row_number(record, index)
        dept_id = text_value(_value(record, config.id_field)).strip()
        name = text_value(_value(record, config.name_field)).strip()
        parent = text_value(_value(record, config.parent_field)).strip()
        error = record.get(ERROR_KEY)
        if error:
            problems.append(RowProblem(reason=text_value(error), row=row, field=id_f))
            if dept_id:
                invalid.setdefault(dept_id, f"department table row {row}: {text_value(error)}")
            continue
        if not dept_id:
            problems.append(RowProblem(reason="department id is missing", row=row, field=id_f))
            continue
        if id_problem(dept_id):
            problems.append(
                RowProblem(
                    reason=f"department id {id_problem(dept_id)}",
                    row=row,
                    field=id_f,
                    value=_cut(dept_id),
                )
            )
            continue
        if dept_id in rows_of:
            first = rows_of[dept_id]
            problems.append(
                RowProblem(
                    reason=f"duplicate department id (also in row {first}); both are ignored",
                    row=row,
                    field=id_f,
                    value=dept_id,
                )
            )
            invalid[dept_id] = f"department id {dept_id} appears twice in the department table"
            continue
        rows_of[dept_id] = row
        if dept_id in roots:
            continue
        bad_name = dept_name_problem(name)
        if bad_name:
            problems.append(
                RowProblem(reason=f"department name {bad_name}", row=row, field=name_f, value=name)
            )
            invalid[dept_id] = f"department {dept_id} has a bad name ({bad_name})"
        names[dept_id] = name
        parents[dept_id] = parent

    by_id: dict[str, str] = {r: "" for r in roots}
    resolved_parent: dict[str, str | None] = {}

    def flag(dept: str, reason: str, field_name: str, value: str | None) -> None:
        invalid[dept] = reason
        problems.append(
            RowProblem(reason=reason, row=rows_of.get(dept), field=field_name, value=value)
        )

    def resolve(start: str) -> None:
        """Walk up from ``start`` to a known department (or the top), then settle the chain."""
        chain: list[str] = []
        position: dict[str, int] = {}
        cur = start
        base = ""
        reason: str | None = None
        while True:
            if cur in by_id:
                base = by_id[cur]
                break
            if cur in invalid:
                reason = f"its parent department {cur} is unusable"
                break
            if cur in position:
                loop = chain[position[cur] :]
                why = "department cycle: " + " → ".join([*loop, cur])
                for member in loop:
                    flag(member, why, parent_f, parents.get(member))
                chain = chain[: position[cur]]
                reason = "its parent department is in a cycle"
                break
            if cur not in names:
                child = chain[-1]
                flag(
                    child, f"parent department {cur} is not in the department table", parent_f, cur
                )
                chain.pop()
                reason = f"its parent department {child} is unusable"
                break
            position[cur] = len(chain)
            chain.append(cur)
            parent = parents[cur]
            if parent in tops or parent in roots:
                break
            cur = parent
        for dept in reversed(chain):
            parent = parents[dept]
            resolved_parent[dept] = None if (parent in tops or parent in roots) else parent
            if reason is not None:
                flag(dept, reason, parent_f, parent)
                reason = f"its parent department {dept} is unusable"
                continue
            path = f"{base}/{names[dept]}" if base else names[dept]
            depth = path.count("/") + 1
            if depth > MAX_DEPARTMENT_DEPTH:
                flag(
                    dept,
                    f"department path {path} is {depth} levels deep (at most "
                    f"{MAX_DEPARTMENT_DEPTH})",
                    parent_f,
                    parent,
                )
                reason = f"its parent department {dept} is unusable"
                continue
            by_id[dept] = path
            base = path

    for dept_id in names:
        if dept_id not in by_id and dept_id not in invalid:
            resolve(dept_id)

    # Two departments at the same path (siblings with one name) cannot both exist in Exmail.
    ids_at: dict[str, list[str]] = {}
    for dept_id, path in by_id.items():
        if dept_id not in roots:
            ids_at.setdefault(path, []).append(dept_id)
    for path, ids in ids_at.items():
        if len(ids) > 1:
            why = f"departments {', '.join(ids)} would all be {path}"
            for dept_id in ids:
                invalid[dept_id] = why
                problems.append(
                    RowProblem(
                        reason=why, row=rows_of.get(dept_id), field=name_f, value=names.get(dept_id)
                    )
                )
    # Anything below an invalid department is unusable too.
    changed = True
    while changed:
        changed = False
        for dept_id in list(by_id):
            if dept_id in roots or dept_id in invalid:
                continue
            up = resolved_parent.get(dept_id)
            if up is not None and up in invalid:
                invalid[dept_id] = f"its parent department {up} is unusable"
                problems.append(
                    RowProblem(
                        reason=invalid[dept_id],
                        row=rows_of.get(dept_id),
                        field=parent_f,
                        value=up,
                    )
                )
                changed = True
    for dept_id in invalid:
        by_id.pop(dept_id, None)

    valid = sorted((d for d in by_id if d not in roots), key=lambda d: by_id[d])
    by_name: dict[str, list[str]] = {}
    for dept_id in valid:
        by_name.setdefault(names[dept_id], []).append(by_id[dept_id])
    return DepartmentTable(
        departments=tuple(Department(path=by_id[d], hr_id=d) for d in valid),
        by_id=by_id,
        by_name={k: tuple(v) for k, v in by_name.items()},
        invalid=invalid,
        problems=_finish(problems),
        parent_ids={d: resolved_parent.get(d) for d in valid},
        rows=count,
    )


# --- people ------------------------------------------------------------------------------


def _value(record: Mapping[str, Any], name: str) -> Any:
    value = _lookup(record, name)
    return None if value is _MISSING else value


def _row_number(record: Mapping[str, Any], index: int) -> int:
    row = record.get(ROW_KEY)
    return row if isinstance(row, int) and not isinstance(row, bool) else index + 1


def _problem_key(p: RowProblem) -> tuple[int, str, str]:
    return (p.row if p.row is not None else -1, p.field or "", p.reason)


@dataclass
class _Row:
    row: int
    person: Person | None
    problems: list[RowProblem]


def _single_getter(spec: FieldSpec, invisible: bool) -> Callable[[Mapping[str, Any]], str]:
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


class _PersonBuilder:
    """Maps one record; collects its problems instead of raising."""

    def __init__(
        self,
        config: MappingConfig,
        table: DepartmentTable | None,
        reference: str,
        domains: Iterable[str] = (),
    ):
        self.config = config
        self.specs = config.specs()
        self.value = {
            key: _single_getter(spec, key in _INVISIBLE_STRIPPED)
            for key, spec in self.specs.items()
        }
        # (engine field, source column) of plain columns, whose raw type is checked per row
        self.plain = tuple(
            (key, spec.field)
            for key, spec in self.specs.items()
            if spec.field is not None and "." not in spec.field
        )
        self.nested = tuple(
            key for key, spec in self.specs.items() if spec.field is not None and "." in spec.field
        )
        self.labels = tuple(
            (label, spec.field or label, _single_getter(spec, True))
            for label, spec in sorted(config.labels.items())
        )
        self.table = table
        self.reference = reference
        self.domains = frozenset(d.strip().lower() for d in domains if d.strip())
        # A department referenced by id in a department table may be a number.
        self.numeric = _NUMERIC_FIELDS | ({"departments"} if table is not None else set())

    def salvage_id(self, raw: str) -> str:
        """The employee id in the text of a record that could not be read (a JSON line cut
        short), so the row holds that person rather than making them look gone."""
        spec = self.specs["employee_id"]
        if spec.field is None or "." in spec.field:
            return ""
        pattern = rf'"{re.escape(spec.field)}"\s*:\s*(?:"([^"\\]{{1,64}})"|(-?\d{{1,30}})\b)'
        found = re.search(pattern, raw)
        if found is None:
            return ""
        text = strip_invisible(found.group(1) or found.group(2) or "").strip()
        return "" if id_problem(text) else text

    def hints(
        self, record: Mapping[str, Any], row: int, *, everywhere: bool = False
    ) -> UnidentifiedRow:
        """What a row without a usable id still tells about whose it is; ``everywhere``:
        addresses in any of its values (a damaged row's values may have shifted columns)."""
        emails: list[str] = []
        for key in ("email", "aliases"):
            if key in self.specs and self.kind_problem(key, record) is None:
                emails += field_values(self.specs[key], record)
        texts = [record.get(RAW_KEY)]
        if everywhere:
            texts += [v for k, v in record.items() if k not in (ROW_KEY, ERROR_KEY, RAW_KEY)]
        for text in texts:
            if isinstance(text, str) and "@" in text:
                emails += _EMAIL_IN_TEXT_RE.findall(text)
        valid = sorted({e for e in map(normalise_email, emails) if is_valid_email(e)})
        name = ""
        if "name" in self.specs and self.kind_problem("name", record) is None:
            name = normalise_words(self.value["name"](record))
        return UnidentifiedRow(row=row, emails=tuple(valid), name=name)

    def kind_problem(self, engine_field: str, record: Mapping[str, Any]) -> str | None:
        """Why the raw value of a field is of the wrong type (see :func:`type_problem`)."""
        spec = self.specs.get(engine_field)
        if spec is None or spec.field is None:
            return None
        raw = record.get(spec.field) if "." not in spec.field else _value(record, spec.field)
        if raw is None or type(raw) is str:
            return None
        numbers, flags = engine_field in self.numeric, engine_field in _FLAG_FIELDS
        if spec.split is not None and isinstance(raw, list | tuple):
            problems = (type_problem(v, numbers=numbers, flags=flags) for v in raw)
            return next((p for p in problems if p), None)
        return type_problem(raw, numbers=numbers, flags=flags)

    def foreign(self, address: str) -> str | None:
        """Why an address is outside the configured Exmail domains, or None."""
        if not self.domains:
            return None
        domain = address.rpartition("@")[2]
        if domain in self.domains:
            return None
        return (
            f"the domain {domain!r} is not one of [exmail] domains "
            f"({', '.join(sorted(self.domains))}); Exmail would refuse it"
        )

    def label(self, engine_field: str) -> str:
        """The name a problem gives a field: the source column when there is one."""
        spec = self.specs.get(engine_field)
        if spec is not None and spec.field is not None:
            return spec.field
        return engine_field

    def build(
        self, record: Mapping[str, Any], row: int
    ) -> tuple[str, Person | None, list[RowProblem]]:
        probs: list[RowProblem] = []
        specs = self.specs

        def bad(engine_field: str, reason: str, value: str | None) -> None:
            probs.append(
                RowProblem(
                    reason=reason, row=row, field=self.label(engine_field), value=_cut(value)
                )
            )

        wrong: set[str] = set()
        if type(record) is TextRecord:
            odd: list[str] = []  # a CSV row: all text
        else:
            get = record.get
            odd = [key for key, name in self.plain if type(get(name)) not in _TEXT_TYPES]
        for key in (*odd, *self.nested):
            why = self.kind_problem(key, record)
            if why is not None:
                wrong.add(key)
                raw = _value(record, specs[key].field or "")
                bad(key, f"{key.replace('_', ' ')} {why}", text_value(raw)[:MAX_SHOWN_VALUE])

        employee_id = "" if "employee_id" in wrong else self.value["employee_id"](record)
        error = record.get(ERROR_KEY)
        if error:
            probs.append(RowProblem(reason=_cut(text_value(error)) or "", row=row))
        if not employee_id and error and RAW_KEY in record:
            employee_id = self.salvage_id(text_value(record[RAW_KEY]))
        if not employee_id and "employee_id" in wrong:
            pass
        elif not employee_id:
            bad("employee_id", "employee id is missing", None)
        elif id_problem(employee_id):
            bad("employee_id", f"employee id {id_problem(employee_id)}", employee_id)
            employee_id = ""  # unusable as a key: the row counts as one without an id

        name = normalise_words(self.value["name"](record))
        if "name" in wrong:
            pass
        elif not name:
            bad("name", "name is missing", None)
        elif byte_length(name) > MAX_NAME_BYTES:
            bad("name", f"name is {byte_length(name)} bytes long (at most {MAX_NAME_BYTES})", name)
        elif _CONTROL_RE.search(name):
            bad("name", "name contains a line break or another control character", name)
        elif words_problem(name):
            bad("name", f"name {words_problem(name)}", name)

        email: str | None = None
        if "email" in specs and "email" not in wrong:
            text = self.value["email"](record)
            if text:
                email = normalise_email(text)
                if not is_valid_email(email) or len(email) > MAX_EMAIL_CHARS:
                    bad("email", "not a valid email address", text)
                elif self.domains and (why := self.foreign(email)):
                    bad("email", why, text)

        aliases: list[str] = []
        if "aliases" in specs and "aliases" not in wrong:
            for text in field_values(specs["aliases"], record):
                alias = normalise_email(text)
                if not is_valid_email(alias) or len(alias) > MAX_EMAIL_CHARS:
                    bad("aliases", "not a valid email address (alias)", text)
                elif self.domains and (why := self.foreign(alias)):
                    bad("aliases", f"alias: {why}", text)
                elif alias != email and alias not in aliases:
                    aliases.append(alias)
            if len(aliases) > MAX_ALIASES:
                bad("aliases", f"{len(aliases)} aliases (at most {MAX_ALIASES})", ",".join(aliases))

        departments: list[str] = []
        if "departments" in specs and "departments" not in wrong:
            for text in field_values(specs["departments"], record):
                path = self.department(text, bad)
                if path is not None and path and path not in departments:
                    departments.append(path)
            if len(departments) > MAX_DEPARTMENTS:
                bad(
                    "departments",
                    f"in {len(departments)} departments (at most {MAX_DEPARTMENTS})",
                    None,
                )

        position = ""
        if "position" in specs and "position" not in wrong:
            position = normalise_words(self.value["position"](record))
        if byte_length(position) > MAX_POSITION_BYTES:
            bad(
                "position",
                f"position is {byte_length(position)} bytes long (at most {MAX_POSITION_BYTES})",
                position,
            )
        elif _CONTROL_RE.search(position):
            bad("position", "position contains a line break or another control character", position)
        elif position and words_problem(position):
            bad("position", f"position {words_problem(position)}", position)

        mobile = ""
        if "mobile" in specs and "mobile" not in wrong:
            text = self.value["mobile"](record)
            if text:
                normal = normalise_mobile(text, self.config.mobile_check)
                if normal is None:
                    what = (
                        "a mainland mobile number (11 digits starting 13-19, optional +86)"
                        if self.config.mobile_check == "mainland"
                        else "a phone number"
                    )
                    bad("mobile", f"not {what}", text)
                else:
                    mobile = normal

        tel = self.value["tel"](record) if "tel" in specs and "tel" not in wrong else ""
        if len(tel) > 32:
            bad("tel", "telephone number is longer than 32 characters", tel)
        elif _CONTROL_RE.search(tel):
            bad("tel", "telephone number contains a control character", tel)

        gender = Gender.UNSET
        if "gender" in specs and "gender" not in wrong:
            text = self.value["gender"](record)
            found = GENDER_VALUES.get(text.casefold())
            if found is None:
                bad("gender", "unknown gender (add it to mapping.gender.map)", text)
            else:
                gender = found

        status = "active"
        if "status" in specs and "status" not in wrong:
            text = self.value["status"](record)
            if text:
                found_status = STATUS_VALUES.get(text.casefold())
                if found_status is None:
                    bad(
                        "status",
                        "unknown status (map it to active, leave or terminated "
                        "in mapping.status.map)",
                        text,
                    )
                else:
                    status = found_status

        dates: dict[str, date | None] = {"start_date": None, "end_date": None}
        for key in dates:
            spec = specs.get(key)
            if spec is None or key in wrong:
                continue
            raw = _raw(spec, record)
            if isinstance(raw, datetime):
                dates[key] = raw.date()
            elif isinstance(raw, date):
                dates[key] = raw
            else:
                text = self.value[key](record)
                if text:
                    parsed = parse_date(text, spec.date_format) or excel_serial_date(raw)
                    if parsed is None:
                        bad(key, "not a date (set mapping." + key + ".date_format)", text)
                    dates[key] = parsed

        labels: list[tuple[str, str]] = []
        for label, column, get_label in self.labels:  # kept for [[groups.by_field]]
            text = normalise_words(get_label(record))
            if _CONTROL_RE.search(text) or byte_length(text) > MAX_NAME_BYTES:
                probs.append(
                    RowProblem(
                        reason=f"{label} (a mail-group label) has a control character or is "
                        f"over {MAX_NAME_BYTES} bytes",
                        row=row,
                        field=column,
                        value=_cut(text),
                    )
                )
            elif text:
                labels.append((label, text))

        for p_index, p in enumerate(probs):
            if employee_id and p.employee_id is None:
                probs[p_index] = RowProblem(
                    reason=p.reason,
                    row=p.row,
                    field=p.field,
                    value=p.value,
                    employee_id=employee_id,
                )
        if probs or not employee_id:
            return employee_id, None, probs
        person = Person(
            employee_id=employee_id,
            name=name,
            email=email,
            aliases=tuple(aliases),
            departments=tuple(departments),
            position=position,
            mobile=mobile,
            tel=tel,
            gender=gender,
            status=Status(status),
            start_date=dates["start_date"],
            end_date=dates["end_date"],
            labels=tuple(labels),
        )
        return employee_id, person, probs

    def department(self, text: str, bad: Any) -> str | None:
        if self.table is None:
            path, why = department_path(text, self.config.department_separator)
            if why:
                bad("departments", why, text)
                return None
            return path
        if self.reference == "id":
            if text in self.table.by_id:
                return self.table.by_id[text]
            if text in self.table.invalid:
                bad(
                    "departments",
                    f"department {text} is unusable: {self.table.invalid[text]}",
                    text,
                )
            else:
                bad("departments", "unknown department id (not in the department table)", text)
            return None
        paths = self.table.by_name.get(text, ())
        if len(paths) == 1:
            return paths[0]
        if len(paths) > 1:
            bad(
                "departments",
                f"department name is ambiguous ({', '.join(paths)}); reference "
                'departments by id ([departments] reference = "id")',
                text,
            )
        else:
            bad(
                "departments",
                "unknown department name (not in the department table or unusable there)",
                text,
            )
        return None


def _hold_back_shared_addresses(
    people: list[Person],
    rows: Mapping[str, _Row],
    builder: _PersonBuilder,
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
            where = ", ".join(f"{o} (row {rows[o].row})" for o in others)
            problems.append(
                RowProblem(
                    reason=f"address is also given to employee {where}; both are held back",
                    row=rows[person.employee_id].row,
                    field=builder.label("email" if address == person.email else "aliases"),
                    value=address,
                    employee_id=person.employee_id,
                )
            )
    return kept


def map_people(
    records: Iterable[Mapping[str, Any]],
    config: MappingConfig,
    *,
    department_table: DepartmentTable | None = None,
    reference: str = "id",
    domains: Iterable[str] = (),
) -> MappingResult:
    """Map and check every record; never raises on a record's content.

    ``domains``: the ``[exmail] domains``; an address or alias outside them is quarantined
    (none given: not checked).
    """
    builder = _PersonBuilder(config, department_table, reference, domains)
    specs = [*config.specs().values(), *config.labels.values()]
    wanted = {name for spec in specs for name in spec.source_fields()}
    seen_fields: set[str] = set()
    first: dict[str, _Row] = {}
    dupes: dict[str, list[_Row]] = {}
    loose: list[RowProblem] = []
    unidentified: list[UnidentifiedRow] = []
    count = 0
    columns: tuple[str, ...] = ()
    for index, record in enumerate(records):
        count += 1
        if count == 1:
            columns = tuple(str(k) for k in record if k not in (ROW_KEY, ERROR_KEY, RAW_KEY))
        if len(seen_fields) < len(wanted):
            seen_fields.update(n for n in wanted if _lookup(record, n) is not _MISSING)
        row = _row_number(record, index)
        employee_id, person, probs = builder.build(record, row)
        if not employee_id:
            loose.extend(probs)
            unidentified.append(builder.hints(record, row))
            continue
        if ERROR_KEY in record:
            # The reader saw damage: values may sit in the wrong columns, so the id may be
            # garbage; the row also holds whatever its addresses or name lead to.
            unidentified.append(builder.hints(record, row, everywhere=True))
        entry = _Row(row, person, probs)
        if employee_id in first:
            dupes.setdefault(employee_id, []).append(entry)
        else:
            first[employee_id] = entry

    problems: list[RowProblem] = list(loose)
    notes: list[RowProblem] = []
    quarantined: set[str] = set()
    people: list[Person] = []
    id_label = builder.label("employee_id")
    for employee_id, head in first.items():
        entries = [head, *dupes.get(employee_id, ())]
        if len(entries) > 1:
            rows = [e.row for e in entries]
            persons = {e.person for e in entries}
            if any(e.problems for e in entries) or len(persons) != 1:
                for e in entries:
                    others = ", ".join(str(r) for r in rows if r != e.row)
                    e.problems.append(
                        RowProblem(
                            reason=f"duplicate employee id with different data (also in row "
                            f"{others}); every row of this employee is held back",
                            row=e.row,
                            field=id_label,
                            value=employee_id,
                            employee_id=employee_id,
                        )
                    )
            else:
                for e in entries[1:]:
                    notes.append(
                        RowProblem(
                            reason=f"identical duplicate of row {head.row}; kept once",
                            row=e.row,
                            field=id_label,
                            value=employee_id,
                            employee_id=employee_id,
                        )
                    )
                entries = [head]
        if any(e.problems for e in entries):
            quarantined.add(employee_id)
            for e in entries:
                problems.extend(e.problems)
        elif head.person is not None:
            people.append(head.person)

    people = _hold_back_shared_addresses(people, first, builder, quarantined, problems)

    if department_table is not None:
        departments = department_table.departments
        problems.extend(department_table.problems)
    else:
        paths: set[str] = set()
        for person in people:
            for path in person.departments:
                segs = path.split("/")
                paths.update("/".join(segs[: i + 1]) for i in range(len(segs)))
        departments = tuple(Department(path=p) for p in sorted(paths))

    return MappingResult(
        people=tuple(sorted(people, key=lambda p: p.employee_id)),
        departments=departments,
        problems=_finish(problems),
        quarantined=frozenset(quarantined),
        rows=count,
        notes=tuple(sorted(notes, key=_problem_key)),
        missing_fields=tuple(sorted(wanted - seen_fields)) if count else (),
        columns=columns,
        unidentified=tuple(unidentified),
    )


def map_records(
    records: Iterable[Mapping[str, Any]],
    config: MappingConfig,
    *,
    department_records: Iterable[Mapping[str, Any]] | None = None,
    departments: DepartmentsConfig | None = None,
    domains: Iterable[str] = (),
) -> MappingResult:
    """Map people records, first resolving the department table when one is configured."""
    table = None
    if departments is not None:
        table = build_department_table(department_records or (), departments)
    return map_people(
        records,
        config,
        department_table=table,
        reference=departments.reference if departments is not None else "id",
        domains=domains,
    )


__all__ = [
    "DepartmentTable",
    "MappingResult",
    "build_department_table",
    "department_path",
    "field_value",
    "field_values",
    "map_people",
    "map_records",
    "normalise_mobile",
    "parse_date",
    "template_fields",
    "text_value",
]
