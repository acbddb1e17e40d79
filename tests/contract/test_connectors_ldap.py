"""The LDAP / AD connector against a real slapd (``tests/fixtures/ldap.py``)."""

from __future__ import annotations

import base64
import math
import uuid
from pathlib import Path
from typing import Any

import ldap3
import pytest

from syncengine.connectors.base import make_connector
from syncengine.connectors.ldap_source import (
    LdapConnector,
    filetime_text,
    generalized_time_text,
    guid_text,
    ou_path,
    sid_text,
)
from syncengine.errors import ConfigError, SourceError
from tests.fixtures.ldap import PHOTO, LdapServer, SeedPerson, _free_port

pytestmark = [pytest.mark.ldap, pytest.mark.timeout(60)]

ATTRS = ["employeeNumber", "cn", "mail", "mobile", "title", "departmentNumber"]
AD_ATTRS = ["objectGUID", "objectSid", "accountExpires", "jpegPhoto", "sAMAccountName"]


def options(server: LdapServer, **over: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "type": "ldap",
        "url": server.url,
        "bind_dn": server.bind_dn,
        "password": "env:TEST_LDAP_PASSWORD",
        "base_dn": server.base_dn,
        "filter": "(objectClass=inetOrgPerson)",
        "attributes": ATTRS + AD_ATTRS,
        "list_attributes": ["departmentNumber"],
        "page_size": 7,
    }
    opts.update(over)
    return {k: v for k, v in opts.items() if v is not None}


@pytest.fixture
def ldap_env(ldap_server: LdapServer, monkeypatch: pytest.MonkeyPatch) -> LdapServer:
    monkeypatch.setenv("TEST_LDAP_PASSWORD", ldap_server.password)
    return ldap_server


def build(opts: dict[str, Any], tmp_path: Path) -> LdapConnector:
    conn = make_connector(opts, tmp_path)
    assert isinstance(conn, LdapConnector)
    return conn


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["employeeNumber"]: r for r in records}


def test_paged_search_reads_everyone_past_the_servers_size_limit(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    people = ldap_env.people
    assert len(people) > ldap_env.size_limit > 7  # paging is the only way to read them all
    conn = build(options(ldap_env), tmp_path)
    records = list(conn.records())
    assert len(records) == len(people)
    assert conn.pages_read == math.ceil(len(people) / 7)
    assert set(by_id(records)) == {p.employee_id for p in people}


def test_values_are_flat_chinese_multi_valued_and_binary_safe(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    got = by_id(list(build(options(ldap_env), tmp_path).records()))
    for p in ldap_env.people:
        r = got[p.employee_id]
        assert r["cn"] == p.cn
        assert r["dn"].lower() == p.dn.lower()
        assert r["ou_path"] == p.ou_path
        assert r["mail"] == (list(p.mails) if len(p.mails) > 1 else p.mails[0])
        assert r["departmentNumber"] == list(p.departments)  # list_attributes: always a list
        assert r["title"] == p.title
        assert r["disabled"] is p.disabled
        if p.uac is None:
            assert r["objectGUID"] is None and r["sAMAccountName"] is None
        else:
            assert r["objectGUID"] == str(uuid.UUID(bytes_le=p.guid))
            assert r["objectSid"].startswith("S-1-5-21-") and r["objectSid"].endswith(
                str(1100 + ldap_env.people.index(p))
            )
        if p.photo is not None:
            assert base64.b64decode(r["jpegPhoto"]) == PHOTO
        else:
            assert r["jpegPhoto"] is None
    expiring = next(p for p in ldap_env.people if p.account_expires)
    never = next(p for p in ldap_env.people if p.account_expires == 0)
    assert got[expiring.employee_id]["accountExpires"] == "2030-12-31T00:00:00+00:00"
    assert got[never.employee_id]["accountExpires"] is None


def test_disabled_accounts_come_from_user_account_control(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    got = by_id(list(build(options(ldap_env, attributes=["employeeNumber"]), tmp_path).records()))
    disabled = {k for k, r in got.items() if r["disabled"] is True}
    assert disabled == {p.employee_id for p in ldap_env.people if p.uac and p.uac & 0x2}
    assert len(disabled) == 4
    # userAccountControl was requested for the computation, but only asked-for keys are kept.
    assert set(next(iter(got.values()))) == {"employeeNumber", "dn", "ou_path", "disabled"}


def test_attribute_map_renames_and_computed_fields_can_be_turned_off(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    opts = options(
        ldap_env,
        attributes=None,
        list_attributes=None,
        attribute_map={"employee_id": "employeeNumber", "name": "CN", "email": "mail"},
        dn_field="",
        ou_path_field="department",
        disabled_field="is_disabled",
        filter="(&(objectClass=inetOrgPerson)(title=经理))",
    )
    records = list(build(opts, tmp_path).records())
    managers = [p for p in ldap_env.people if p.title == "经理"]
    assert sorted(r["employee_id"] for r in records) == sorted(p.employee_id for p in managers)
    for r in records:
        assert set(r) == {"employee_id", "name", "email", "department", "is_disabled"}
        seed = next(p for p in managers if p.employee_id == r["employee_id"])
        assert (r["name"], r["department"]) == (seed.cn, seed.ou_path)


def test_scope_level_stays_in_one_ou(ldap_env: LdapServer, tmp_path: Path) -> None:
    first: SeedPerson = ldap_env.people[0]
    ou_dn = first.dn.split(",", 1)[1]
    opts = options(ldap_env, base_dn=ou_dn, scope="level")
    records = list(build(opts, tmp_path).records())
    expected = {p.employee_id for p in ldap_env.people if p.ou_path == first.ou_path}
    assert {r["employeeNumber"] for r in records} == expected
    assert all(r["ou_path"] == "" for r in records)  # the OUs are all above the base now


def test_anonymous_bind_reads_what_the_acl_allows(ldap_env: LdapServer, tmp_path: Path) -> None:
    opts = options(ldap_env, bind_dn=None, password=None)
    conn = build(opts, tmp_path)
    assert "anonymous" in conn.describe()
    assert len(list(conn.records())) == len(ldap_env.people)


def test_wrong_password_is_a_source_error_without_the_password(
    ldap_server: LdapServer, tmp_path: Path
) -> None:
    conn = build(options(ldap_server, password="Wrong-Pa55word!"), tmp_path)
    with pytest.raises(SourceError) as err:
        list(conn.records())
    text = str(err.value)
    assert "invalidCredentials" in text and "bind_dn" in text
    assert "Wrong-Pa55word!" not in text


def test_the_directory_really_caps_an_unpaged_search(ldap_server: LdapServer) -> None:
    """The premise of the paging test: without the paged-results control, slapd stops early."""
    server = ldap3.Server(ldap_server.url, get_info=ldap3.NONE, connect_timeout=2)
    conn = ldap3.Connection(server, ldap_server.bind_dn, ldap_server.password, receive_timeout=5)
    try:
        assert conn.bind()
        conn.search(ldap_server.base_dn, "(objectClass=inetOrgPerson)", attributes=["cn"])
        assert conn.result["description"] == "sizeLimitExceeded"
        assert len(conn.entries) == ldap_server.size_limit
    finally:
        conn.unbind()


def test_a_server_that_stops_the_search_half_way_fails_rather_than_truncating(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    conn = build(options(ldap_env, bind_dn=ldap_env.limited_dn), tmp_path)
    with pytest.raises(SourceError) as err:
        list(conn.records())
    assert "sizeLimitExceeded" in str(err.value)
    assert "after 14 entries" in str(err.value)  # two full pages of 7 were read, then refused


def test_missing_base_dn_and_empty_result_are_source_errors(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    missing = build(options(ldap_env, base_dn=f"ou=nowhere,{ldap_env.suffix}"), tmp_path)
    with pytest.raises(SourceError, match="noSuchObject"):
        list(missing.records())
    empty = build(options(ldap_env, filter="(employeeNumber=nobody)"), tmp_path)
    with pytest.raises(SourceError, match="zero entries"):
        list(empty.records())


def test_refused_connection_is_a_source_error(tmp_path: Path) -> None:
    port = _free_port()
    conn = build(
        {
            "type": "ldap",
            "url": f"ldap://127.0.0.1:{port}",
            "base_dn": "dc=x",
            "attributes": ["cn"],
            "connect_timeout": 2,
        },
        tmp_path,
    )
    with pytest.raises(SourceError, match="cannot reach the directory"):
        list(conn.records())


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"filter": "(cn=unclosed"}, "source.filter"),
        ({"url": "http://dc1"}, "source.url"),
        ({"pagesize": 10}, "source.pagesize"),
        ({"attributes": None}, "source"),
        ({"password": None}, "source"),
        ({"page_size": 0}, "source.page_size"),
    ],
)
def test_bad_options_name_the_key(over: dict[str, Any], key: str, tmp_path: Path) -> None:
    opts = {
        "type": "ldap",
        "url": "ldap://dc1.corp:389",
        "bind_dn": "cn=x",
        "password": "literal-secret-value",
        "base_dn": "dc=corp",
        "attributes": ["cn"],
    }
    opts.update(over)
    opts = {k: v for k, v in opts.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        make_connector(opts, tmp_path)
    assert key in str(err.value)
    assert "literal-secret-value" not in str(err.value)


def test_describe_shows_no_password(tmp_path: Path) -> None:
    conn = make_connector(
        {
            "type": "ldap",
            "url": "ldaps://dc1.corp",
            "bind_dn": "cn=svc,dc=corp",
            "password": "S3cret-value",
            "base_dn": "dc=corp",
            "attributes": ["cn"],
        },
        tmp_path,
    )
    assert "S3cret-value" not in conn.describe() and "S3cret-value" not in repr(conn.__dict__)
    assert "ldaps://dc1.corp" in conn.describe()


# --- the value helpers (pure) -------------------------------------------------------------


def test_ou_path_is_relative_to_the_base_and_unescaped() -> None:
    base = "OU=Staff,DC=corp,DC=example"
    assert (
        ou_path("CN=张三,OU=平台部,OU=研发中心,OU=Staff,DC=corp,DC=example", base)
        == "研发中心/平台部"
    )
    assert ou_path(r"CN=x,OU=市场部\, 华南,OU=Staff,DC=corp,DC=example", base) == "市场部, 华南"
    assert ou_path(r"CN=x,OU=\E7\A0\94\E5\8F\91,OU=Staff,DC=corp,DC=example", base) == "研发"
    assert ou_path("CN=x,OU=Staff,DC=corp,DC=example", base) == ""


def test_ad_value_formats() -> None:
    raw = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef").bytes_le
    assert guid_text(raw) == "01234567-89ab-cdef-0123-456789abcdef"
    sid = (
        bytes([1, 2])
        + (5).to_bytes(6, "big")
        + (32).to_bytes(4, "little")
        + (544).to_bytes(4, "little")
    )
    assert sid_text(sid) == "S-1-5-32-544"  # BUILTIN\Administrators
    assert filetime_text(0) is None and filetime_text(0x7FFFFFFFFFFFFFFF) is None
    assert filetime_text(116444736000000000) == "1970-01-01T00:00:00+00:00"
    assert generalized_time_text("20240131120000.0Z") == "2024-01-31T12:00:00+00:00"
    assert generalized_time_text("20240131120000+0800") == "2024-01-31T12:00:00+08:00"
    assert generalized_time_text("not a time") == "not a time"


def test_mapping_turns_the_directory_into_people_with_status_and_departments(
    ldap_env: LdapServer, tmp_path: Path
) -> None:
    """The README's recipe: disabled → status, ou_path → the department path."""
    from syncengine.connectors.config import MappingConfig
    from syncengine.connectors.mapping import map_records
    from syncengine.domain import Status

    mapping = MappingConfig.model_validate(
        {
            "employee_id": "employeeNumber",
            "name": "cn",
            "email": "mail",
            "mobile": "mobile",
            "position": "title",
            "departments": "ou_path",
            "status": {"field": "disabled", "map": {"true": "terminated", "false": "active"}},
        }
    )
    opts = options(ldap_env, attributes=["employeeNumber", "cn", "mobile", "title"])
    opts["attribute_map"] = {"mail": "mail"}
    opts["list_attributes"] = []
    # Only single-mail people: a person with two mail values is a row problem for mapping.
    opts["filter"] = "(&(objectClass=inetOrgPerson)(!(mail=*.alias@example.com)))"
    result = map_records(build(opts, tmp_path).records(), mapping)
    assert result.problems == ()
    seeds = {p.employee_id: p for p in ldap_env.people if len(p.mails) == 1}
    assert {p.employee_id for p in result.people} == set(seeds)
    for person in result.people:
        seed = seeds[person.employee_id]
        assert person.name == seed.cn
        assert person.departments == (seed.ou_path,)
        assert person.status is (Status.TERMINATED if seed.disabled else Status.ACTIVE)


def test_syncengine_ingest_from_the_directory(
    ldap_env: LdapServer, tmp_path: Path, staging_url: str
) -> None:
    """The whole path: TOML config → ldap connector → mapping → staging, via the CLI."""
    import json

    from click.testing import CliRunner

    from syncengine.cli import main

    config = tmp_path / "syncengine.toml"
    config.write_text(
        f"""
[exmail]
api = "v2"
corp_id = "wwtest"
secrets = {{ contacts = "not-used-here" }}

[database]
url = {json.dumps(staging_url)}

[source]
type = "ldap"
url = "{ldap_env.url}"
bind_dn = "{ldap_env.bind_dn}"
password = "env:TEST_LDAP_PASSWORD"
base_dn = "{ldap_env.base_dn}"
filter = "(objectClass=inetOrgPerson)"
attributes = ["employeeNumber", "cn", "mail", "title"]
page_size = 7

[mapping]
employee_id = "employeeNumber"
name = "cn"
email = "mail"
position = "title"
departments = "ou_path"
status = {{ field = "disabled", map = {{ "true" = "terminated", "false" = "active" }} }}
""",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["--config", str(config), "ingest", "--json"])
    # The two people with two mail values are quarantined (not a valid single address).
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    two_mails = {p.employee_id for p in ldap_env.people if len(p.mails) > 1}
    assert data["counts"]["people"] == len(ldap_env.people) - len(two_mails)
    assert data["counts"]["quarantined"] == len(two_mails)
    assert {p["employee_id"] for p in data["problems"]} == two_mails
    assert data["source"].startswith(f"ldap {ldap_env.url}")
    assert ldap_env.password not in result.output
