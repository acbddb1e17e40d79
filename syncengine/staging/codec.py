"""Person and Department to and from plain JSON dicts, and their content hashes.

The snapshot stores each record whole (``data``) beside a hash of its canonical JSON, so
"did this person change since the last snapshot?" is a comparison of two strings in SQL, not a
field-by-field walk in Python. The canonical form is stable: keys sorted, lists as given (the
order of aliases and departments is data), dates ISO, enums by value. Reading is tolerant of
missing keys so that rows written before a field existed still load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import date
from typing import Any

from syncengine.domain import Department, Gender, Person, Status, path_name


def canonical_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def content_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    return date.fromisoformat(str(value))


def person_to_dict(person: Person) -> dict[str, Any]:
    data = _person_dict(person)
    if person.labels:  # absent when unused: people without labels keep their JSON and hash
        data["labels"] = [list(kv) for kv in person.labels]
    return data


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value) if value else ()


def _person_dict(person: Person) -> dict[str, Any]:
    return {
        "employee_id": person.employee_id,
        "name": person.name,
        "email": person.email,
        "aliases": list(person.aliases),
        "departments": list(person.departments),
        "position": person.position,
        "mobile": person.mobile,
        "tel": person.tel,
        "gender": int(person.gender),
        "status": person.status.value,
        "start_date": _iso(person.start_date),
        "end_date": _iso(person.end_date),
    }


def person_from_dict(data: dict[str, Any]) -> Person:
    return Person(
        employee_id=str(data["employee_id"]),
        name=str(data.get("name", "")),
        email=data.get("email"),
        aliases=tuple(data.get("aliases") or ()),
        departments=tuple(data.get("departments") or ()),
        position=str(data.get("position") or ""),
        mobile=str(data.get("mobile") or ""),
        tel=str(data.get("tel") or ""),
        gender=Gender(int(data.get("gender") or 0)),
        status=Status(data.get("status") or Status.ACTIVE.value),
        start_date=_date(data.get("start_date")),
        end_date=_date(data.get("end_date")),
        labels=_labels(data.get("labels")),
    )


_GENDERS = {int(g): g for g in Gender}
_STATUSES = {s.value: s for s in Status}


DECODE_CHUNK = 1000
"""Stored records decoded per :func:`json.loads` by :func:`people_from_json_texts`."""


def people_from_json_texts(texts: Iterable[str]) -> list[Person]:
    """:func:`person_from_dict` over many stored records given as their JSON text.

    The records are decoded :data:`DECODE_CHUNK` at a time, as one JSON array per chunk:
    one ``json.loads`` call per chunk instead of one per record is about a third faster on a
    100,000-person snapshot, and a chunk (not the whole snapshot) is held decoded at a time.
    A chunk that does not decode to exactly one object per text (a damaged row) is decoded
    record by record, so the error is the record's own. The enums are looked up rather than
    constructed (an enum call costs as much as the rest of a record). Same Persons, same
    errors as :func:`person_from_dict`.
    """
    out: list[Person] = []
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == DECODE_CHUNK:
            _people_from_dicts(_decode_records(chunk), out)
            chunk = []
    if chunk:
        _people_from_dicts(_decode_records(chunk), out)
    return out


def _decode_records(texts: list[str]) -> list[Any]:
    try:
        records = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(texts):
        records = [json.loads(t) for t in texts]
    return records


def _people_from_dicts(records: list[Any], out: list[Person]) -> None:
    append = out.append
    genders, statuses, active = _GENDERS, _STATUSES, Status.ACTIVE.value
    for data in records:
        get = data.get
        gender = int(get("gender") or 0)
        status = get("status") or active
        start, end = get("start_date"), get("end_date")
        aliases, departments, labels = get("aliases"), get("departments"), get("labels")
        append(
            Person(  # positional, in field order (a third faster than by keyword)
                str(data["employee_id"]),
                str(get("name", "")),
                get("email"),
                tuple(aliases) if aliases else (),
                tuple(departments) if departments else (),
                str(get("position") or ""),
                str(get("mobile") or ""),
                str(get("tel") or ""),
                genders[gender] if gender in genders else Gender(gender),
                statuses[status] if status in statuses else Status(status),
                _date(start) if start else None,
                _date(end) if end else None,
                _labels(labels) if labels else (),
            )
        )


def person_hash(person: Person) -> str:
    return content_hash(person_to_dict(person))


def department_to_dict(department: Department, parent_hr_id: str | None = None) -> dict[str, Any]:
    return {
        "path": department.path,
        "name": path_name(department.path),
        "hr_id": department.hr_id,
        "parent_hr_id": parent_hr_id,
    }


def department_from_dict(data: dict[str, Any]) -> Department:
    return Department(path=str(data["path"]), hr_id=data.get("hr_id"))


def department_hash(department: Department, parent_hr_id: str | None = None) -> str:
    return content_hash(department_to_dict(department, parent_hr_id))
