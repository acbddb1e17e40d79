"""One HR record to a validated Person, with every problem collected (used by mapping.py).

PURE: no I/O, no clock. :class:`PersonBuilder` reads one record with the ``[mapping]``
config (and the department table, when there is one) and returns the employee id, the Person
(or None) and the row's problems; :func:`syncengine.connectors.mapping.map_people` runs it over
every record and settles duplicates, shared addresses and departments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from syncengine.connectors.base import ERROR_KEY, RAW_KEY, ROW_KEY, TextRecord
from syncengine.connectors.config import (
    MappingConfig,
)
from syncengine.connectors.department_table import DepartmentTable
from syncengine.connectors.fields import (
    CONTROL_RE,
    EMAIL_IN_TEXT_RE,
    FLAG_FIELDS,
    GENDER_VALUES,
    INVISIBLE_STRIPPED,
    MAX_EMAIL_CHARS,
    MAX_SHOWN_VALUE,
    NUMERIC_FIELDS,
    STATUS_VALUES,
    TEXT_TYPES,
    cut_value,
    department_path,
    field_values,
    id_problem,
    normalise_mobile,
    parse_date,
    raw_value,
    record_value,
    single_getter,
    text_value,
)
from syncengine.connectors.values import (
    excel_serial_date,
    normalise_words,
    strip_invisible,
    type_problem,
    words_problem,
)
from syncengine.domain import (
    MAX_ALIASES,
    MAX_DEPARTMENTS,
    MAX_NAME_BYTES,
    MAX_POSITION_BYTES,
    Gender,
    Person,
    RowProblem,
    Status,
    UnidentifiedRow,
    byte_length,
    is_valid_email,
    normalise_email,
)


@dataclass
class BuiltRow:
    row: int
    person: Person | None
    problems: list[RowProblem]


class PersonBuilder:
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
            key: single_getter(spec, key in INVISIBLE_STRIPPED) for key, spec in self.specs.items()
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
            (label, spec.field or label, single_getter(spec, True))
            for label, spec in sorted(config.labels.items())
        )
        self.table = table
        self.reference = reference
        self.domains = frozenset(d.strip().lower() for d in domains if d.strip())
        # A department referenced by id in a department table may be a number.
        self.numeric = NUMERIC_FIELDS | ({"departments"} if table is not None else set())

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
                emails += EMAIL_IN_TEXT_RE.findall(text)
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
        raw = record.get(spec.field) if "." not in spec.field else record_value(record, spec.field)
        if raw is None or type(raw) is str:
            return None
        numbers, flags = engine_field in self.numeric, engine_field in FLAG_FIELDS
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
                    reason=reason, row=row, field=self.label(engine_field), value=cut_value(value)
                )
            )

        wrong: set[str] = set()
        if type(record) is TextRecord:
            odd: list[str] = []  # a CSV row: all text
        else:
            get = record.get
            odd = [key for key, name in self.plain if type(get(name)) not in TEXT_TYPES]
        for key in (*odd, *self.nested):
            why = self.kind_problem(key, record)
            if why is not None:
                wrong.add(key)
                raw = record_value(record, specs[key].field or "")
                bad(key, f"{key.replace('_', ' ')} {why}", text_value(raw)[:MAX_SHOWN_VALUE])

        employee_id = "" if "employee_id" in wrong else self.value["employee_id"](record)
        error = record.get(ERROR_KEY)
        if error:
            probs.append(RowProblem(reason=cut_value(text_value(error)) or "", row=row))
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
        elif CONTROL_RE.search(name):
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
        elif CONTROL_RE.search(position):
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
        elif CONTROL_RE.search(tel):
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
            raw = raw_value(spec, record)
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
            if CONTROL_RE.search(text) or byte_length(text) > MAX_NAME_BYTES:
                probs.append(
                    RowProblem(
                        reason=f"{label} (a mail-group label) has a control character or is "
                        f"over {MAX_NAME_BYTES} bytes",
                        row=row,
                        field=column,
                        value=cut_value(text),
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
