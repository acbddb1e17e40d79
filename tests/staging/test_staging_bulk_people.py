"""Loading a whole snapshot in bulk gives exactly what :meth:`load_people` gives."""

from __future__ import annotations

import json
from datetime import date

import pytest

from syncengine.domain import Gender, Person, Status
from syncengine.staging import codec
from syncengine.staging.repository import Repository


def people(n: int) -> list[Person]:
    """Every field in use, in every form it is stored in (no address, dates, enums...)."""
    out = []
    for i in range(n):
        out.append(
            Person(
                employee_id=f"E{i:05d}",
                name=("欧阳娜娜", 'John "Q" Smith', "a\\b", "")[i % 4],
                email=None if i % 5 == 0 else f"u{i}@example.com",
                aliases=tuple(f"a{i}.{k}@example.com" for k in range(i % 3)),
                departments=("研发中心/平台部", "研发中心")[: i % 3],
                position="工程师" if i % 2 else "",
                mobile=f"138{i:08d}" if i % 3 else "",
                tel="010-1234" if i % 7 == 0 else "",
                gender=list(Gender)[i % 3],
                status=list(Status)[i % 3],
                start_date=date(2020, 2, 29) if i % 4 == 0 else None,
                end_date=date(2027, 1, 1) if i % 6 == 0 else None,
            )
        )
    return out


def test_bulk_load_equals_record_by_record(staging_repo: Repository) -> None:
    repo = staging_repo
    run_id = repo.start_run("ingest", "cli:test")
    snap = repo.begin_snapshot(run_id, "test")
    everyone = people(1000)
    repo.add_people(snap, reversed(everyone))
    repo.complete_snapshot(snap, {"people": len(everyone)})
    one_by_one = repo.load_people(snap)
    assert one_by_one == everyone  # ordered by employee id
    assert repo.load_people_bulk(snap) == one_by_one
    assert repo.load_people_bulk(snap + 1) == []


def test_bulk_decoding_refuses_what_record_by_record_refuses() -> None:
    bad = codec.canonical_json({**codec.person_to_dict(people(1)[0]), "gender": 7})
    with pytest.raises(ValueError, match="7 is not a valid Gender"):
        codec.person_from_dict(json.loads(bad))
    with pytest.raises(ValueError, match="7 is not a valid Gender"):
        codec.people_from_json_texts([bad])


def test_bulk_decoding_of_many_records_keeps_each_records_own_error() -> None:
    """Records are decoded many per ``json.loads``: a damaged record (here two objects in one
    text, which would shift every record after it) still fails as that record fails alone,
    also when it is not in the first chunk."""
    texts = [
        codec.canonical_json(codec.person_to_dict(p)) for p in people(2 * codec.DECODE_CHUNK + 5)
    ]
    assert codec.people_from_json_texts(texts) == people(len(texts))
    damaged = list(texts)
    damaged[codec.DECODE_CHUNK + 3] = texts[0] + "," + texts[1]
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        codec.people_from_json_texts(damaged)
    damaged[codec.DECODE_CHUNK + 3] = "[]"
    with pytest.raises(AttributeError):
        codec.people_from_json_texts(damaged)
