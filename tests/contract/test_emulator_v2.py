"""The emulator's Gen 2 API over real HTTP: exact codes and body shapes (raw httpx calls)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.emulator import RawV2

pytestmark = pytest.mark.timeout(60)

PW = "Init#2026pass"


def new_user(raw: RawV2, userid: str, **fields: Any) -> dict[str, Any]:
    body = {"userid": userid, "name": "测试", "department": [1], "password": PW, **fields}
    return raw.post("user/create", body)


# --- tokens ------------------------------------------------------------------------------


def test_gettoken_success_shape_and_reuse(raw_v2: RawV2) -> None:
    params = {"corpid": "wwdemo0001", "corpsecret": raw_v2.emu.seed["secrets"]["contacts"]}
    first = raw_v2.http.get("/cgi-bin/gettoken", params=params).json()
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert first["expires_in"] == 7200 and len(first["access_token"]) >= 64
    second = raw_v2.http.get("/cgi-bin/gettoken", params=params).json()
    assert second["access_token"] == first["access_token"]
    assert 0 < second["expires_in"] <= 7200


def test_gettoken_bad_secret_is_40001_and_bad_corp_40013(raw_v2: RawV2) -> None:
    bad = raw_v2.http.get(
        "/cgi-bin/gettoken", params={"corpid": "wwdemo0001", "corpsecret": "nope"}
    )
    assert bad.status_code == 200
    assert bad.json() == {"errcode": 40001, "errmsg": "invalid credential"}
    corp = raw_v2.http.get(
        "/cgi-bin/gettoken",
        params={"corpid": "other", "corpsecret": raw_v2.emu.seed["secrets"]["contacts"]},
    ).json()
    assert corp["errcode"] == 40013


def test_token_of_another_application_is_602005(raw_v2: RawV2) -> None:
    sso = raw_v2.token("sso")
    answer = raw_v2.http.get(
        "/cgi-bin/user/get", params={"access_token": sso, "userid": "zhangsan@example.com"}
    ).json()
    assert answer["errcode"] == 602005
    mail_on_sso = raw_v2.http.get(
        "/cgi-bin/service/get_login_url",
        params={"access_token": raw_v2.token("mail"), "userid": "zhangsan@example.com"},
    ).json()
    assert mail_on_sso["errcode"] == 602005


def test_unknown_missing_and_expired_tokens(raw_v2: RawV2) -> None:
    unknown = raw_v2.http.get(
        "/cgi-bin/user/get", params={"access_token": "forged", "userid": "zhangsan@example.com"}
    ).json()
    assert unknown["errcode"] == 40014
    missing = raw_v2.http.get("/cgi-bin/user/get", params={"userid": "zhangsan@example.com"}).json()
    assert missing["errcode"] == 41001
    assert raw_v2.get("user/get", userid="zhangsan@example.com")["errcode"] == 0
    raw_v2.emu.expire_tokens()
    assert raw_v2.get("user/get", userid="zhangsan@example.com")["errcode"] == 40014
    raw_v2.tokens.clear()  # a fresh gettoken gives a new, working token
    assert raw_v2.get("user/get", userid="zhangsan@example.com")["errcode"] == 0


def test_expired_token_code_is_configurable(emulator_factory: Any) -> None:
    raw = RawV2(emulator_factory("v2", invalid_token_code=42001))
    raw.token()
    raw.emu.expire_tokens()
    assert raw.get("user/get", userid="zhangsan@example.com")["errcode"] == 42001
    raw.close()


def test_short_token_lifetime(emulator_factory: Any) -> None:
    raw = RawV2(emulator_factory("v2", token_lifetime=30))
    answer = raw.http.get(
        "/cgi-bin/gettoken",
        params={"corpid": "wwdemo0001", "corpsecret": raw.emu.seed["secrets"]["contacts"]},
    ).json()
    assert answer["expires_in"] == 30
    raw.close()


def test_wrong_http_method_and_bad_json(raw_v2: RawV2) -> None:
    as_get = raw_v2.get("user/create", userid="x@example.com")
    assert as_get["errcode"] == 43002
    bad = raw_v2.http.post(
        "/cgi-bin/user/create", content=b"{not json", params={"access_token": raw_v2.token()}
    ).json()
    assert bad["errcode"] == 47001


# --- departments -------------------------------------------------------------------------


def test_department_crud_and_list_shape(raw_v2: RawV2) -> None:
    created = raw_v2.post("department/create", {"name": "法务部", "parentid": 1, "order": 5})
    assert created["errcode"] == 0 and created["errmsg"] == "created"
    new_id = created["id"]
    assert isinstance(new_id, int) and new_id > 2**53  # int64-looking ids
    child = raw_v2.post("department/create", {"name": "合规组", "parentid": new_id})["id"]
    listed = raw_v2.get("department/list", id=new_id)
    assert listed["errcode"] == 0
    # sorted by order ascending (as documented), so the child (order 0) precedes its parent
    assert [d["id"] for d in listed["department"]] == [child, new_id]
    assert listed["department"][0] == {
        "id": child,
        "name": "合规组",
        "parentid": new_id,
        "order": 0,
    }
    whole = raw_v2.get("department/list", id=1)["department"]
    assert whole[0] == {"id": 1, "name": "示例科技", "parentid": 0, "order": 0}
    assert len(whole) == 8
    updated = raw_v2.post("department/update", {"id": child, "name": "合规与风控"})
    assert updated == {"errcode": 0, "errmsg": "updated"}
    search = raw_v2.post("department/search", {"name": "合规", "fuzzy": 1})
    assert search["department"][0]["path"] == "法务部/合规与风控"
    exact = raw_v2.post("department/search", {"name": "合规", "fuzzy": 0})
    assert exact["department"] == []
    assert raw_v2.get("department/delete", id=child) == {"errcode": 0, "errmsg": "deleted"}
    assert raw_v2.get("department/delete", id=child)["errcode"] == 60003


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("研发:中心", 60009),
        ("a*b", 60009),
        ('引号"', 60009),
        ("a<b>", 60009),
        ("全角｜", 60009),
        ("a|b", 60009),
        ("a/b", 60009),
        ("a\\b", 60009),
        ("问?", 60009),
        ("", 60001),
        ("长" * 22, 60001),
    ],
)
def test_department_name_rules(raw_v2: RawV2, name: str, code: int) -> None:
    answer = raw_v2.post("department/create", {"name": name, "parentid": 1})
    assert answer["errcode"] == code, answer


def test_department_name_of_exactly_64_bytes_is_fine(raw_v2: RawV2) -> None:
    assert (
        raw_v2.post("department/create", {"name": "长" * 21 + "a", "parentid": 1})["errcode"] == 0
    )


def test_department_depth_duplicates_parents_cycles_root(raw_v2: RawV2) -> None:
    parent = 1
    for level in range(5):
        parent = raw_v2.post("department/create", {"name": f"L{level}", "parentid": parent})["id"]
    too_deep = raw_v2.post("department/create", {"name": "L5", "parentid": parent})
    assert too_deep["errcode"] == 60002
    dup = raw_v2.post("department/create", {"name": "研发中心", "parentid": 1})
    assert dup["errcode"] == 60008
    orphan = raw_v2.post("department/create", {"name": "孤儿", "parentid": 12345})
    assert orphan["errcode"] == 60004
    top = raw_v2.dept_id("研发中心")
    below = raw_v2.dept_id("研发中心/平台部")
    assert raw_v2.post("department/update", {"id": top, "parentid": below})["errcode"] == 60010
    assert raw_v2.post("department/update", {"id": 999, "name": "x"})["errcode"] == 60003
    assert raw_v2.get("department/delete", id=1)["errcode"] == 60007
    l1 = raw_v2.dept_id("L0/L1")
    # moving a 4-level subtree one level down would make it 6 deep
    assert raw_v2.post("department/update", {"id": l1, "parentid": below})["errcode"] == 60002


def test_deleting_non_empty_departments(raw_v2: RawV2) -> None:
    with_members = raw_v2.dept_id("研发中心/平台部")
    assert raw_v2.get("department/delete", id=with_members)["errcode"] == 60005
    leafless = raw_v2.post("department/create", {"name": "空壳", "parentid": 1})["id"]
    raw_v2.post("department/create", {"name": "子部门", "parentid": leafless})
    assert raw_v2.get("department/delete", id=leafless)["errcode"] == 60006


# --- users -------------------------------------------------------------------------------


def test_user_create_get_update_delete(raw_v2: RawV2) -> None:
    dept = raw_v2.dept_id("研发中心/平台部")
    created = new_user(
        raw_v2,
        "New.Person@Example.com",
        name="新同事",
        department=[dept],
        gender=2,
        slaves=["np@example.com"],
        extid="E9001",
        mobile="13900000000",
        position="测试工程师",
    )
    assert created == {"errcode": 0, "errmsg": "created"}
    got = raw_v2.get("user/get", userid="new.person@example.com")
    assert got == {
        "errcode": 0,
        "errmsg": "ok",
        "userid": "new.person@example.com",
        "name": "新同事",
        "department": [dept],
        "position": "测试工程师",
        "mobile": "13900000000",
        "tel": "",
        "extid": "E9001",
        "gender": "2",
        "enable": 1,
        "slaves": ["np@example.com"],
        "cpwd_login": 0,
    }
    assert raw_v2.emu.check_password("new.person@example.com", PW)
    updated = raw_v2.post(
        "user/update",
        {"userid": "new.person@example.com", "enable": "0", "slaves": [], "name": "新同事二"},
    )
    assert updated == {"errcode": 0, "errmsg": "updated"}
    got = raw_v2.get("user/get", userid="new.person@example.com")
    assert (got["enable"], got["slaves"], got["name"], got["extid"]) == (0, [], "新同事二", "E9001")
    assert raw_v2.get("user/delete", userid="new.person@example.com")["errmsg"] == "deleted"
    missing = raw_v2.get("user/get", userid="new.person@example.com")
    assert missing["errcode"] == 60111 and "userid not found" in missing["errmsg"]


def test_missing_users_and_alias_lookup(raw_v2: RawV2) -> None:
    assert raw_v2.get("user/get", userid="san.zhang@example.com")["errcode"] == 60111
    assert (
        raw_v2.post("user/update", {"userid": "ghost@example.com", "name": "x"})["errcode"] == 60111
    )
    assert raw_v2.get("user/delete", userid="ghost@example.com")["errcode"] == 60111


@pytest.mark.parametrize(
    ("userid", "code"),
    [
        ("not-an-email", 40003),
        ("a@b", 40003),
        ("someone@foreign.org", 40003),
        ("zhangsan@example.com", 60102),
        ("ZhangSan@Example.COM", 60102),
        ("san.zhang@example.com", 600001),
        ("all@example.com", 600002),
    ],
)
def test_user_address_rules(raw_v2: RawV2, userid: str, code: int) -> None:
    assert new_user(raw_v2, userid)["errcode"] == code


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"name": "名" * 22}, 60112),  # 66 bytes
        ({"name": ""}, 60112),
        ({"position": "职" * 22}, 60104),
        ({"slaves": [f"a{i}@example.com" for i in range(6)]}, 600006),
        ({"slaves": ["x@foreign.org"]}, 600004),
        ({"slaves": ["san.zhang@example.com"]}, 600005),
        ({"slaves": ["lisi@example.com"]}, 600005),
        ({"slaves": ["all@example.com"]}, 600005),
        ({"department": [999]}, 60003),
        ({"gender": "3"}, 60114),
        ({"mobile": "call me"}, 60103),
        ({"tel": "tel:abc"}, 600025),
        ({"password": "short"}, 600003),
        ({"password": "lettersonly"}, 600003),
    ],
)
def test_user_field_rules(raw_v2: RawV2, fields: dict[str, Any], code: int) -> None:
    assert new_user(raw_v2, "fresh@example.com", **fields)["errcode"] == code
    assert raw_v2.get("user/get", userid="fresh@example.com")["errcode"] == 60111


def test_name_and_position_limits_count_bytes(raw_v2: RawV2) -> None:
    ok = new_user(raw_v2, "edge@example.com", name="名" * 21 + "x", position="职" * 21 + "x")
    assert ok["errcode"] == 0  # 64 bytes each


def test_twenty_one_departments_is_60105(raw_v2: RawV2) -> None:
    ids = [
        raw_v2.post("department/create", {"name": f"D{i}", "parentid": 1})["id"] for i in range(21)
    ]
    assert new_user(raw_v2, "many@example.com", department=ids)["errcode"] == 60105
    assert new_user(raw_v2, "many@example.com", department=ids[:20])["errcode"] == 0


def test_five_aliases_fine_sixth_refused_on_update(raw_v2: RawV2) -> None:
    five = [f"z{i}@example.com" for i in range(5)]
    assert (
        raw_v2.post("user/update", {"userid": "zhangsan@example.com", "slaves": five})["errcode"]
        == 0
    )
    answer = raw_v2.post(
        "user/update", {"userid": "zhangsan@example.com", "slaves": [*five, "z5@example.com"]}
    )
    assert answer["errcode"] == 600006
    assert raw_v2.get("user/get", userid="zhangsan@example.com")["slaves"] == five


def test_lists_simple_and_full(raw_v2: RawV2) -> None:
    top = raw_v2.dept_id("研发中心")
    direct = raw_v2.get("user/simplelist", department_id=top, fetch_child=0)
    assert direct == {"errcode": 0, "errmsg": "ok", "userlist": []}
    deep = raw_v2.get("user/simplelist", department_id=top, fetch_child=1)["userlist"]
    assert sorted(u["userid"] for u in deep) == ["lisi@example.com", "zhangsan@example.com"]
    assert set(deep[0]) == {"userid", "name", "department"}
    full = raw_v2.get("user/list", department_id=1, fetch_child=1)["userlist"]
    assert len(full) == 6
    zhaoliu = next(u for u in full if u["userid"] == "zhaoliu@example.com")
    assert zhaoliu["enable"] == "0" and zhaoliu["gender"] == "2"
    assert raw_v2.get("user/list", department_id=999, fetch_child=1)["errcode"] == 60003


def test_batchcheck_types_and_limit(raw_v2: RawV2) -> None:
    names = [
        "zhangsan@example.com",
        "san.zhang@example.com",
        "all@example.com",
        "free@example.com",
        "x@foreign.org",
        "garbage",
    ]
    answer = raw_v2.post("user/batchcheck", {"userlist": names})
    assert answer["list"] == [
        {"user": n, "type": t} for n, t in zip(names, [1, 2, 3, 0, -1, -1], strict=True)
    ]
    over = raw_v2.post("user/batchcheck", {"userlist": [f"u{i}@example.com" for i in range(21)]})
    assert over["errcode"] == 600027


def test_swapalias(raw_v2: RawV2) -> None:
    answer = raw_v2.get(
        "user/swapalias", alias="zhangsan@example.com", slavealias="san.zhang@example.com"
    )
    assert answer == {"errcode": 0, "errmsg": "ok"}
    got = raw_v2.get("user/get", userid="san.zhang@example.com")
    assert got["slaves"] == ["zhangsan@example.com"] and got["extid"] == "E0001"
    assert raw_v2.get("user/get", userid="zhangsan@example.com")["errcode"] == 60111
    group = raw_v2.get("group/get", groupid="all@example.com")
    assert "san.zhang@example.com" in group["userlist"]
    bad = raw_v2.get("user/swapalias", alias="lisi@example.com", slavealias="nope@example.com")
    assert bad["errcode"] == 600004


# --- groups ------------------------------------------------------------------------------


def test_group_crud(raw_v2: RawV2) -> None:
    dept = raw_v2.dept_id("市场部")
    body = {
        "groupid": "team@example.com",
        "groupname": "团队",
        "userlist": ["lisi@example.com"],
        "grouplist": ["all@example.com"],
        "department": [dept],
        "allow_type": 3,
        "allow_userlist": ["zhangsan@example.com"],
    }
    assert raw_v2.post("group/create", body) == {"errcode": 0, "errmsg": "created"}
    got = raw_v2.get("group/get", groupid="team@example.com")
    assert got == {"errcode": 0, "errmsg": "ok", **body}
    assert raw_v2.post("group/create", body)["errcode"] == 600015
    assert (
        raw_v2.post("group/update", {"groupid": "team@example.com", "groupname": "新团队"})[
            "errmsg"
        ]
        == "updated"
    )
    loop = raw_v2.post(
        "group/update", {"groupid": "all@example.com", "grouplist": ["team@example.com"]}
    )
    assert loop["errcode"] == 600020
    assert raw_v2.get("group/delete", groupid="team@example.com")["errmsg"] == "deleted"
    assert raw_v2.get("group/get", groupid="team@example.com")["errcode"] == 600008
    assert raw_v2.get("group/delete", groupid="team@example.com")["errcode"] == 600008


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"groupid": "zhangsan@example.com"}, 600024),
        ({"groupid": "san.zhang@example.com"}, 600024),
        ({"groupid": "g@foreign.org"}, 600007),
        ({"userlist": []}, 600009),
        ({"userlist": ["ghost@example.com"]}, 600016),
        ({"grouplist": ["nogroup@example.com"], "userlist": []}, 600017),
        ({"department": [999]}, 600018),
        ({"allow_type": 7}, 600013),
        ({"allow_type": 3}, 600023),
        ({"groupname": "bad:name"}, 600019),
    ],
)
def test_group_rules(raw_v2: RawV2, body: dict[str, Any], code: int) -> None:
    base = {
        "groupid": "g1@example.com",
        "groupname": "组",
        "userlist": ["lisi@example.com"],
        "allow_type": 0,
    }
    assert raw_v2.post("group/create", {**base, **body})["errcode"] == code


def test_user_clashing_with_new_group_and_alias_with_group(raw_v2: RawV2) -> None:
    raw_v2.post(
        "group/create",
        {
            "groupid": "g2@example.com",
            "groupname": "组二",
            "userlist": ["lisi@example.com"],
            "allow_type": 1,
        },
    )
    assert new_user(raw_v2, "g2@example.com")["errcode"] == 600002
    assert new_user(raw_v2, "n@example.com", slaves=["g2@example.com"])["errcode"] == 600005


def test_deleting_a_user_removes_it_from_groups(raw_v2: RawV2) -> None:
    raw_v2.get("user/delete", userid="lisi@example.com")
    assert "lisi@example.com" not in raw_v2.get("group/get", groupid="all@example.com")["userlist"]


# --- sso, newcount -----------------------------------------------------------------------


def test_login_url_single_use(raw_v2: RawV2) -> None:
    answer = raw_v2.get("service/get_login_url", app="sso", userid="zhangsan@example.com")
    assert answer["errcode"] == 0 and answer["expires_in"] == 300
    url = answer["login_url"]
    assert url.startswith(raw_v2.emu.base_url + "/cgi-bin/login?fun=bizopenssologin")
    page = raw_v2.http.get(url)
    assert page.status_code == 200 and "zhangsan@example.com" in page.text
    assert "张三" in page.text
    assert raw_v2.http.get(url).status_code == 403  # single use
    missing = raw_v2.get("service/get_login_url", app="sso", userid="ghost@example.com")
    assert missing["errcode"] == 60111


def test_login_of_a_disabled_member_is_refused(raw_v2: RawV2) -> None:
    url = raw_v2.get("service/get_login_url", app="sso", userid="zhaoliu@example.com")["login_url"]
    assert raw_v2.http.get(url).status_code == 403


def test_newcount_get_and_post(raw_v2: RawV2) -> None:
    assert raw_v2.get("mail/newcount", app="mail", userid="lisi@example.com") == {
        "errcode": 0,
        "errmsg": "ok",
        "count": 0,
    }
    raw_v2.emu.deliver_mail("lisi@example.com")
    raw_v2.emu.deliver_mail("lisi@example.com")
    assert raw_v2.get("mail/newcount", app="mail", userid="lisi@example.com")["count"] == 2
    posted = raw_v2.post(
        "mail/newcount",
        {"type": 0, "begin_date": "2000-01-01", "end_date": "2999-12-31"},
        app="mail",
        userid="lisi@example.com",
    )
    assert posted["count"] == 2
    window = raw_v2.get(
        "mail/newcount",
        app="mail",
        userid="lisi@example.com",
        begin_date="2000-01-01",
        end_date="2000-01-02",
    )
    assert window["count"] == 0
    assert raw_v2.get("mail/newcount", app="mail", userid="ghost@example.com")["errcode"] == 60111
    assert (
        raw_v2.get("mail/newcount", app="mail", userid="lisi@example.com", begin_date="yesterday")[
            "errcode"
        ]
        == 40092
    )


def test_mail_to_an_alias_counts_for_the_primary(raw_v2: RawV2) -> None:
    raw_v2.emu.deliver_mail("san.zhang@example.com")
    assert raw_v2.get("mail/newcount", app="mail", userid="zhangsan@example.com")["count"] == 1
