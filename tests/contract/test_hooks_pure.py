"""The pure parts of the hooks: signatures, payload validation, folding events into a person,
cron schedules, the metrics text; and the sample payloads against the sample config."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import tomllib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncengine import service
from syncengine.config import parse_config
from syncengine.domain import Person, Status
from syncengine.hooks.metrics import Metrics
from syncengine.hooks.payloads import Change, PayloadError, UpsertEvent, fold, parse_event
from syncengine.hooks.schedule import CronSchedule
from syncengine.hooks.signing import (
    check_hook_signature,
    check_sso_link,
    sso_link,
    sso_signature,
)

REPO = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def mac(secret: str, ts: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body,
                                hashlib.sha256).hexdigest()  # fmt: skip


# --- signatures ------------------------------------------------------------------------------


def test_hook_signature_accepts_only_the_right_secret_body_and_time() -> None:
    body = b'{"kind":"terminate"}'
    ts = str(int(NOW))
    good = mac("s3cret", ts, body)
    assert check_hook_signature("s3cret", ts, good, body, now=NOW, tolerance=300) is None
    assert check_hook_signature("other", ts, good, body, now=NOW, tolerance=300)
    assert check_hook_signature("s3cret", ts, good, body + b" ", now=NOW, tolerance=300)
    assert check_hook_signature("s3cret", ts, good, body, now=NOW + 301, tolerance=300)
    assert check_hook_signature("s3cret", ts, good, body, now=NOW - 301, tolerance=300)
    assert check_hook_signature("s3cret", ts, good[7:], body, now=NOW, tolerance=300)
    assert check_hook_signature("s3cret", "abc", good, body, now=NOW, tolerance=300)
    assert check_hook_signature("s3cret", None, good, body, now=NOW, tolerance=300)
    why = check_hook_signature("s3cret", ts, mac("x", ts, body), body, now=NOW, tolerance=300)
    assert why is not None and "s3cret" not in why


@given(st.binary(max_size=200), st.text(min_size=1, max_size=30))
def test_hook_signature_round_trip(body: bytes, secret: str) -> None:
    ts = str(int(NOW))
    assert check_hook_signature(secret, ts, mac(secret, ts, body), body, now=NOW,
                                tolerance=300) is None  # fmt: skip


def test_sso_link_is_signed_expiring_and_bound_to_the_user() -> None:
    sig = sso_signature("portal", "ZhangSan@Example.com", 100)
    expected = hmac.new(b"portal", b"100.zhangsan@example.com", hashlib.sha256).hexdigest()
    assert sig == expected
    ok = dict(secret="portal", now=130.0, lifetime=60.0)
    assert check_sso_link(user="zhangsan@example.com", timestamp="100", signature=sig, **ok) is None
    assert "expired" in (check_sso_link(user="zhangsan@example.com", timestamp="100",
                                        signature=sig, secret="portal", now=161.0,
                                        lifetime=60.0) or "")  # fmt: skip
    assert check_sso_link(user="lisi@example.com", timestamp="100", signature=sig, **ok)
    assert check_sso_link(user="zhangsan@example.com", timestamp="101", signature=sig, **ok)
    assert check_sso_link(user="zhangsan@example.com", timestamp="200", signature=sig, **ok)
    assert check_sso_link(user=None, timestamp="100", signature=sig, **ok)
    link = sso_link("http://h:1/", "portal", "a@example.com", 5)
    assert link.startswith("http://h:1/sso/login?user=a%40example.com&ts=5&sig=")


# --- payloads --------------------------------------------------------------------------------


def test_parse_event_fills_the_delivery_from_the_header() -> None:
    event = parse_event(b'{"kind":"terminate","employee_id":"E1"}', "h-1")
    assert event.delivery_id == "h-1" and event.kind == "terminate"
    with pytest.raises(PayloadError) as info:
        parse_event(b'{"kind":"terminate","employee_id":"E1","end_date":"2026-02-30"}', "h")
    assert info.value.field == "end_date"
    with pytest.raises(PayloadError) as info:
        parse_event(b'{"kind":"department_change","employee_id":"E1","departments":[1]}', "h")
    assert info.value.field == "departments.0"
    with pytest.raises(PayloadError) as info:
        parse_event(b"\xff\xfe", "h")
    assert info.value.field == ""


@given(st.binary(max_size=300))
def test_parse_event_never_raises_anything_but_payload_error(body: bytes) -> None:
    try:
        parse_event(body, "d")
    except PayloadError:
        pass


TODAY = date(2026, 11, 29)
BASE = Person("E1", "张三", "zhangsan@example.com", departments=("研发中心",))


def test_fold_applies_events_in_order_over_the_snapshot_record() -> None:
    moved = fold(BASE, [Change("department_change", departments=("市场部",))], TODAY)
    assert moved.person is not None and moved.person.departments == ("市场部",)
    renamed = Person("E1", "张三丰", "zhangsan@example.com")
    both = fold(BASE, [Change("upsert", person=renamed),
                       Change("department_change", departments=("市场部",))], TODAY)  # fmt: skip
    assert both.person is not None and both.person.name == "张三丰"
    assert both.person.departments == ("市场部",)
    gone = fold(BASE, [Change("terminate", end_date=TODAY)], TODAY)
    assert gone.person is not None and gone.person.status is Status.TERMINATED
    later = fold(BASE, [Change("terminate", end_date=TODAY + timedelta(days=30))], TODAY)
    assert later.person is not None and later.person.status is Status.ACTIVE
    assert later.person.end_date == TODAY + timedelta(days=30)
    rehired = fold(BASE, [Change("terminate", end_date=TODAY), Change("upsert", person=BASE)],
                   TODAY)  # fmt: skip
    assert rehired.person == BASE


def test_fold_without_a_record() -> None:
    assert fold(None, [Change("terminate", end_date=TODAY)], TODAY).person is None
    stuck = fold(None, [Change("department_change", departments=("A",))], TODAY)
    assert stuck.problem and "upsert" in stuck.problem
    hired = fold(None, [Change("upsert", person=BASE)], TODAY)
    assert hired.person == BASE and hired.problem is None


# --- cron ------------------------------------------------------------------------------------


def test_cron_next_firing_times() -> None:
    tz = timezone(timedelta(hours=8))
    at = datetime(2026, 11, 29, 2, 30, tzinfo=tz)  # a Sunday
    nightly = CronSchedule.parse("30 2 * * *")
    assert nightly.next_after(at) == datetime(2026, 11, 30, 2, 30, tzinfo=tz)
    assert nightly.next_after(at - timedelta(seconds=1)) == at
    weekdays = CronSchedule.parse("0 3 * * 1-5")
    assert weekdays.next_after(at) == datetime(2026, 11, 30, 3, 0, tzinfo=tz)  # Monday
    every15 = CronSchedule.parse("*/15 * * * *")
    assert every15.next_after(at) == datetime(2026, 11, 29, 2, 45, tzinfo=tz)
    either = CronSchedule.parse("0 0 1 * 0")  # the 1st or a Sunday
    assert either.next_after(at) == datetime(2026, 12, 1, 0, 0, tzinfo=tz)
    leap = CronSchedule.parse("0 0 29 2 *")
    assert leap.next_after(at) == datetime(2028, 2, 29, 0, 0, tzinfo=tz)
    assert CronSchedule.parse("0 0 31 2 *").next_after(at) is None


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "a * * * *", "*/0 * * * *",
                                 "5-1 * * * *"])  # fmt: skip
def test_bad_cron_is_a_config_error_naming_the_field(bad: str, tmp_path: Path) -> None:
    from syncengine.errors import ConfigError

    data = {"exmail": {"corp_id": "c", "secrets": {"contacts": "x"}}, "hooks": {"schedule": bad}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, path=tmp_path / "c.toml")
    assert "hooks.schedule" in str(info.value)


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_text_format() -> None:
    m = Metrics()
    m.inc("syncengine_actions_total", 3, kind="create_user", result="done")
    m.inc("syncengine_hook_requests_total", code="401")
    text = m.render({"syncengine_event_queue_depth": 7, "syncengine_worker_alive": 1})
    lines = text.splitlines()
    assert 'syncengine_actions_total{kind="create_user",result="done"} 3' in lines
    assert "syncengine_event_queue_depth 7" in lines
    assert "syncengine_api_calls_total 0" in lines
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or " " in line
    with pytest.raises(KeyError):
        m.inc("nope")


# --- the samples -----------------------------------------------------------------------------


def test_sample_payloads_map_through_the_sample_config(tmp_path: Path) -> None:
    for name in ("syncengine.toml", "hr-export.csv", "departments.csv"):
        shutil.copy(REPO / "samples" / name, tmp_path / name)
    data = tomllib.loads((tmp_path / "syncengine.toml").read_text(encoding="utf-8"))
    data["database"] = {"url": f"sqlite:///{tmp_path / 'staging.db'}"}
    data["hooks"] = {"secret": "x"}
    config = parse_config(data, path=tmp_path / "syncengine.toml")
    engine = service.Engine(config)
    service.ingest(engine)
    backend = service.HookBackend(engine)
    try:
        for name, employee in (("upsert", "E0107"), ("terminate", "E0107"),
                               ("department_change", "E0107")):  # fmt: skip
            body = (REPO / "samples" / "hooks" / f"{name}.json").read_bytes()
            event = parse_event(body, None)
            assert event.kind == name and event.delivery_id == json.loads(body)["delivery_id"]
            assert backend.employee_of(event) == employee
        upsert = parse_event((REPO / "samples" / "hooks" / "upsert.json").read_bytes())
        assert isinstance(upsert, UpsertEvent)
        person = backend.map_person(upsert.person, backend._current_base().table)
        assert person.departments == ("研发中心/平台部/基础架构组",)
        assert person.email == "xiaoming.wang@example.com"
        with pytest.raises(PayloadError) as info:
            backend.resolve_departments(["9999"], backend._current_base().table)
        assert info.value.field == "departments"
    finally:
        backend.close()


def test_the_actor_of_a_coalesced_batch_names_its_deliveries_within_bounds() -> None:
    assert service.hook_actor(["hr-1"]) == "hook:hr-1"
    assert service.hook_actor(["a", "b"]) == "hook:a,b"
    many = service.hook_actor([f"delivery-{n:04d}" for n in range(100)])
    assert len(many) <= service.HOOK_ACTOR_MAX and many.startswith("hook:delivery-0000,")
    assert many.endswith(" more") and "+" in many
