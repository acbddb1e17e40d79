"""The emulator's Gen 1 (open protocol) over real HTTP: token forms, empty write bodies,
string errcodes, path-addressed parties, the journal, user/check and groups."""

from __future__ import annotations

import base64

import pytest

from tests.fixtures.emulator import RawV1

pytestmark = pytest.mark.timeout(60)

PW = "Init#2026pass"


def err(code: int, error: str) -> dict[str, str]:
    return {"errcode": str(code), "error": error}


# --- token -------------------------------------------------------------------------------


def test_token_by_form_and_basic(raw_v1: RawV1) -> None:
    client_id, secret = raw_v1.credentials
    form = raw_v1.http.post(
        "/cgi-bin/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert form.status_code == 200
    body = form.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    assert body["refresh_token"] == ""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    again = raw_v1.http.post(
        "/cgi-bin/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert again.status_code == 200
    assert again.json()["access_token"] == body["access_token"]  # same token while valid


def test_wrong_credentials_are_401_invalid_client(raw_v1: RawV1) -> None:
    client_id, _ = raw_v1.credentials
    bad = raw_v1.http.post(
        "/cgi-bin/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": "0" * 32,
        },
    )
    assert bad.status_code == 401 and bad.json() == {"error": "invalid_client"}
    basic = base64.b64encode(b"nobody@example.com:x").decode()
    bad_basic = raw_v1.http.post(
        "/cgi-bin/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert bad_basic.status_code == 401


@pytest.mark.parametrize("how", ["bearer", "bare", "form", "query"])
def test_token_accepted_four_ways(raw_v1: RawV1, how: str) -> None:
    token = raw_v1.token()
    headers, data, params = {}, {"alias": "lisi@example.com"}, {}
    if how == "bearer":
        headers = {"Authorization": f"Bearer {token}"}
    elif how == "bare":
        headers = {"Authorization": token}
    elif how == "form":
        data["access_token"] = token
    else:
        params = {"access_token": token}
    response = raw_v1.http.post("/openapi/user/get", data=data, headers=headers, params=params)
    assert response.json()["Alias"] == "lisi@example.com"


def test_invalid_missing_and_expired_token_is_1200(raw_v1: RawV1) -> None:
    forged = raw_v1.http.post(
        "/openapi/user/get",
        data={"alias": "lisi@example.com"},
        headers={"Authorization": "Bearer forged"},
    )
    assert forged.status_code == 200 and forged.json() == err(1200, "invalid_token")
    none = raw_v1.http.post("/openapi/user/get", data={"alias": "lisi@example.com"})
    assert none.json() == err(1200, "invalid_token")
    assert raw_v1.json("user/get", {"alias": "lisi@example.com"})["Name"] == "李四"
    raw_v1.emu.expire_tokens()
    assert raw_v1.json("user/get", {"alias": "lisi@example.com"}) == err(1200, "invalid_token")


# --- members -----------------------------------------------------------------------------


def test_user_get_shape_and_alias_resolution(raw_v1: RawV1) -> None:
    got = raw_v1.json("user/get", {"ALIAS": "San.Zhang@example.com"})  # name case, alias
    assert got == {
        "Alias": "zhangsan@example.com",
        "Name": "张三",
        "Gender": 1,
        "SlaveList": "san.zhang@example.com",
        "Position": "高级工程师",
        "Tel": "010-62000001",
        "Mobile": "13800000001",
        "ExtId": "E0001",
        "PartyList": {"Count": 1, "List": [{"Value": "研发中心/平台部"}]},
        "OpenType": 1,
        "Status": 1,
    }
    root_member = raw_v1.json("user/get", {"alias": "admin@example.com"})
    assert root_member["PartyList"] == {"Count": 0, "List": []}
    assert raw_v1.json("user/get", {"alias": "zhaoliu@example.com"})["OpenType"] == 2
    assert raw_v1.json("user/get", {"alias": "ghost@example.com"}) == err(1301, "user_not_found")


def test_user_sync_add_mod_del_answer_empty_bodies(raw_v1: RawV1) -> None:
    added = raw_v1.write(
        "user/sync",
        [
            ("Action", "2"),
            ("Alias", "new@example.com"),
            ("Name", "新人"),
            ("Gender", "2"),
            ("Password", PW),
            ("Md5", "0"),
            ("PartyPath", "研发中心/平台部"),
            ("PartyPath", "市场部"),
            ("Slave", "n1@example.com"),
            ("Slave", "n2@example.com"),
            ("ExtId", "E7"),
            ("OpenType", "1"),
        ],
    )
    assert added.status_code == 200 and added.content == b""
    got = raw_v1.json("user/get", {"alias": "new@example.com"})
    assert got["SlaveList"] == "n1@example.com,n2@example.com"
    assert [p["Value"] for p in got["PartyList"]["List"]] == ["研发中心/平台部", "市场部"]
    assert raw_v1.emu.check_password("new@example.com", PW)
    # MOD: omitted fields stay; present lists replace; one empty Slave clears
    modded = raw_v1.write(
        "user/sync",
        [
            ("action", "3"),
            ("alias", "new@example.com"),
            ("position", "经理"),
            ("slave", ""),
            ("partypath", "市场部"),
            ("opentype", "2"),
        ],
    )
    assert modded.content == b""
    got = raw_v1.json("user/get", {"alias": "new@example.com"})
    assert (got["Name"], got["Position"], got["SlaveList"], got["OpenType"], got["ExtId"]) == (
        "新人",
        "经理",
        "",
        2,
        "E7",
    )
    assert got["PartyList"]["List"] == [{"Value": "市场部"}]
    deleted = raw_v1.write("user/sync", {"action": "1", "alias": "new@example.com"})
    assert deleted.content == b""
    assert raw_v1.json("user/get", {"alias": "new@example.com"})["errcode"] == "1301"


def test_md5_password(raw_v1: RawV1) -> None:
    import hashlib

    digest = hashlib.md5(PW.encode()).hexdigest()
    raw_v1.write(
        "user/sync",
        {"action": "2", "alias": "m@example.com", "name": "M", "password": digest, "md5": "1"},
    )
    assert raw_v1.emu.check_password("m@example.com", PW)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"alias": "zhangsan@example.com"}, err(1302, "user_exists")),
        ({"alias": "san.zhang@example.com"}, err(1302, "user_exists")),
        ({"alias": "bad-address"}, err(1100, "invalid_param")),
        ({"alias": "x@foreign.org"}, err(1100, "invalid_param")),
        ({"name": "名" * 22}, err(1100, "invalid_param")),
        ({"position": "职" * 22}, err(1100, "invalid_param")),
        ({"partypath": "不存在"}, err(1310, "party_not_found")),
        ({"slave": [f"s{i}@example.com" for i in range(6)]}, err(1100, "invalid_param")),
        ({"slave": "lisi@example.com"}, err(1303, "alias_conflict")),
        ({"slave": "all@example.com"}, err(1303, "alias_conflict")),
        ({"password": ""}, err(1100, "invalid_param")),
        ({"name": ""}, err(1100, "invalid_param")),
    ],
)
def test_user_sync_add_refusals(
    raw_v1: RawV1, fields: dict[str, object], expected: dict[str, str]
) -> None:
    body: dict[str, object] = {
        "action": "2",
        "alias": "fresh@example.com",
        "name": "新",
        "password": PW,
        **fields,
    }
    if body["name"] == "":
        del body["name"]
    response = raw_v1.write("user/sync", body)
    assert response.status_code == 200 and response.json() == expected


def test_user_sync_mod_and_del_of_unknown_is_1301(raw_v1: RawV1) -> None:
    for action in ("1", "3"):
        answer = raw_v1.write(
            "user/sync", {"action": action, "alias": "ghost@example.com", "name": "x"}
        ).json()
        assert answer == err(1301, "user_not_found")


def test_user_list_journal(raw_v1: RawV1) -> None:
    everything = raw_v1.json("user/list", {"Ver": "0"})
    assert everything["Count"] == 6 and isinstance(everything["Ver"], int)
    assert {e["Action"] for e in everything["List"]} == {2}
    ver = everything["Ver"]
    assert raw_v1.json("user/list", {"ver": str(ver)}) == {"Ver": ver, "Count": 0, "List": []}
    raw_v1.write(
        "user/sync", {"action": "2", "alias": "j@example.com", "name": "J", "password": PW}
    )
    raw_v1.write("user/sync", {"action": "3", "alias": "lisi@example.com", "name": "李四四"})
    raw_v1.write("user/sync", {"action": "1", "alias": "wangwu@example.com"})
    later = raw_v1.json("user/list", {"ver": str(ver)})
    assert later["List"] == [
        {"Alias": "j@example.com", "Action": 2},
        {"Alias": "lisi@example.com", "Action": 3},
        {"Alias": "wangwu@example.com", "Action": 1},
    ]
    assert later["Ver"] > ver
    assert raw_v1.json("user/list", {"ver": "abc"}) == err(1100, "invalid_param")


def test_user_check(raw_v1: RawV1) -> None:
    names = [
        "zhangsan@example.com",
        "san.zhang@example.com",
        "all@example.com",
        "free@example.com",
        "x@foreign.org",
    ]
    answer = raw_v1.json("user/check", [("email", n) for n in names])
    assert answer == {
        "Count": 5,
        "List": [{"Email": n, "Type": t} for n, t in zip(names, [1, 2, 3, 0, -1], strict=True)],
    }
    over = raw_v1.json("user/check", [("email", f"u{i}@example.com") for i in range(21)])
    assert over == err(1100, "invalid_param")


def test_swapalias(raw_v1: RawV1) -> None:
    done = raw_v1.write(
        "user/swapalias", {"alias": "zhangsan@example.com", "slavealias": "san.zhang@example.com"}
    )
    assert done.content == b""
    got = raw_v1.json("user/get", {"alias": "zhangsan@example.com"})  # the alias resolves
    assert got["Alias"] == "san.zhang@example.com"
    assert got["SlaveList"] == "zhangsan@example.com"


# --- parties -----------------------------------------------------------------------------


def test_party_add_creates_ancestors_and_is_idempotent(raw_v1: RawV1) -> None:
    for _ in range(2):
        response = raw_v1.write("party/sync", {"action": "2", "dstpath": "/新部/一组/甲"})
        assert response.status_code == 200 and response.content == b""
    assert raw_v1.json("party/list", {"partypath": "新部"}) == {
        "Count": 1,
        "List": [{"Value": "一组"}],
    }
    assert raw_v1.json("party/list", {"partypath": "新部/一组/甲"}) == {"Count": 0, "List": []}
    top = raw_v1.json("party/list", {"partypath": ""})
    assert [x["Value"] for x in top["List"]] == ["研发中心", "市场部", "人力资源部", "新部"]


def test_party_limits_and_missing(raw_v1: RawV1) -> None:
    deep = raw_v1.write("party/sync", {"action": "2", "dstpath": "a/b/c/d/e/f"}).json()
    assert deep == err(1100, "invalid_param")
    assert raw_v1.write("party/sync", {"action": "2", "dstpath": "a/b:c"}).json() == err(
        1100, "invalid_param"
    )
    long_name = "部" * 22
    assert raw_v1.write("party/sync", {"action": "2", "dstpath": long_name}).json() == err(
        1100, "invalid_param"
    )
    assert raw_v1.json("party/list", {"partypath": "无"}) == err(1310, "party_not_found")
    assert raw_v1.json("partyuser/list", {"partypath": "无"}) == err(1310, "party_not_found")
    assert raw_v1.write("party/sync", {"action": "1", "dstpath": "无"}).json() == err(
        1310, "party_not_found"
    )


def test_party_delete_only_empty_leaf(raw_v1: RawV1) -> None:
    assert raw_v1.write("party/sync", {"action": "1", "dstpath": "研发中心/平台部"}).json() == err(
        1311, "party_not_empty"
    )
    assert raw_v1.write("party/sync", {"action": "1", "dstpath": "研发中心"}).json() == err(
        1311, "party_not_empty"
    )
    raw_v1.write("party/sync", {"action": "2", "dstpath": "临时/子"})
    assert raw_v1.write("party/sync", {"action": "1", "dstpath": "临时/子"}).content == b""
    assert raw_v1.json("party/list", {"partypath": "临时"})["Count"] == 0


def test_party_mod_moves_with_members(raw_v1: RawV1) -> None:
    moved = raw_v1.write(
        "party/sync", {"action": "3", "srcpath": "/研发中心/平台部", "dstpath": "/基础平台"}
    )
    assert moved.content == b""
    assert raw_v1.json("partyuser/list", {"partypath": "基础平台"}) == {
        "Count": 1,
        "List": [{"Value": "zhangsan@example.com"}],
    }
    got = raw_v1.json("user/get", {"alias": "zhangsan@example.com"})
    assert got["PartyList"]["List"] == [{"Value": "基础平台"}]
    clash = raw_v1.write(
        "party/sync", {"action": "3", "srcpath": "市场部", "dstpath": "基础平台"}
    ).json()
    assert clash == err(1100, "invalid_param")
    missing = raw_v1.write("party/sync", {"action": "3", "srcpath": "无", "dstpath": "有"}).json()
    assert missing == err(1310, "party_not_found")


def test_partyuser_list_is_direct_members(raw_v1: RawV1) -> None:
    assert raw_v1.json("partyuser/list", {"partypath": "研发中心"}) == {"Count": 0, "List": []}
    root = raw_v1.json("partyuser/list", {"partypath": ""})
    assert root == {"Count": 1, "List": [{"Value": "admin@example.com"}]}


# --- groups ------------------------------------------------------------------------------


def test_groups(raw_v1: RawV1) -> None:
    added = raw_v1.write(
        "group/add",
        [
            ("group_name", "小组"),
            ("group_admin", "g@example.com"),
            ("status", "inner"),
            ("members", "lisi@example.com"),
            ("members", "wangwu@example.com"),
        ],
    )
    assert added.content == b""
    state = {g["groupid"]: g for g in raw_v1.emu.state()["groups"]}
    assert state["g@example.com"]["userlist"] == ["lisi@example.com", "wangwu@example.com"]
    assert state["g@example.com"]["allow_type"] == 0
    assert (
        raw_v1.write(
            "group/addmember", {"group_alias": "g@example.com", "members": "zhangsan@example.com"}
        ).content
        == b""
    )
    assert (
        raw_v1.write(
            "group/deletemember", {"group_alias": "g@example.com", "members": "lisi@example.com"}
        ).content
        == b""
    )
    state = {g["groupid"]: g for g in raw_v1.emu.state()["groups"]}
    assert state["g@example.com"]["userlist"] == ["wangwu@example.com", "zhangsan@example.com"]
    assert raw_v1.json("user/check", {"email": "g@example.com"})["List"][0]["Type"] == 3
    assert raw_v1.write(
        "group/add",
        {"group_name": "x", "group_admin": "lisi@example.com", "members": "wangwu@example.com"},
    ).json() == err(1303, "alias_conflict")
    assert raw_v1.write(
        "group/add",
        {"group_name": "x", "group_admin": "h@example.com", "members": "ghost@example.com"},
    ).json() == err(1301, "user_not_found")
    assert raw_v1.write("group/delete", {"group_alias": "g@example.com"}).content == b""
    assert raw_v1.write("group/delete", {"group_alias": "g@example.com"}).json() == err(
        1301, "user_not_found"
    )


# --- sso, newcount -----------------------------------------------------------------------


def test_authkey_and_login_url(raw_v1: RawV1) -> None:
    answer = raw_v1.json("mail/authkey", {"alias": "lisi@example.com"})
    key = answer["auth_key"]
    assert len(key) >= 80 and key == key.upper()
    client_id, _ = raw_v1.credentials
    params = {
        "fun": "bizopenssologin",
        "method": "bizauth",
        "agent": client_id,
        "user": "lisi@example.com",
        "ticket": key,
    }
    page = raw_v1.http.get("/cgi-bin/login", params=params)
    assert page.status_code == 200 and "lisi@example.com" in page.text
    assert raw_v1.http.get("/cgi-bin/login", params=params).status_code == 403
    other = raw_v1.json("mail/authkey", {"alias": "lisi@example.com"})["auth_key"]
    wrong_agent = {**params, "ticket": other, "agent": "someone@example.com"}
    assert raw_v1.http.get("/cgi-bin/login", params=wrong_agent).status_code == 403
    assert raw_v1.json("mail/authkey", {"alias": "ghost@example.com"}) == err(
        1301, "user_not_found"
    )


def test_newcount_is_a_string(raw_v1: RawV1) -> None:
    assert raw_v1.json("mail/newcount", {"alias": "lisi@example.com"}) == {
        "Alias": "lisi@example.com",
        "NewCount": "0",
    }
    raw_v1.emu.deliver_mail("lisi@example.com")
    assert raw_v1.json("mail/newcount", {"alias": "lisi@example.com"})["NewCount"] == "1"
    assert raw_v1.json("mail/newcount", {"alias": "ghost@example.com"}) == err(
        1400, "user_not_found"
    )


def test_allow_list_groups(raw_v1: RawV1) -> None:
    added = raw_v1.write(
        "group/add",
        {
            "group_name": "运维",
            "group_admin": "ops@example.com",
            "status": "list",
            "members": "lisi@example.com",
        },
    )
    assert added.content == b""
    assert (
        raw_v1.write(
            "group/addallowlist",
            {
                "group_alias": "ops@example.com",
                "allow_list": "zhangsan@example.com,wangwu@example.com",
            },
        ).content
        == b""
    )
    assert (
        raw_v1.write(
            "group/delallowlist",
            {"group_alias": "ops@example.com", "allow_list": "wangwu@example.com"},
        ).content
        == b""
    )
    groups = {g["groupid"]: g for g in raw_v1.emu.state()["groups"]}
    assert groups["ops@example.com"]["allow_type"] == 3
    assert groups["ops@example.com"]["allow_userlist"] == ["zhangsan@example.com"]
    emptied = raw_v1.write(
        "group/delallowlist",
        {"group_alias": "ops@example.com", "allow_list": "zhangsan@example.com"},
    )
    assert emptied.json() == err(1100, "invalid_param")
    not_list = raw_v1.write(
        "group/addallowlist", {"group_alias": "all@example.com", "allow_list": "lisi@example.com"}
    )
    assert not_list.json() == err(1100, "invalid_param")


def test_a_party_mod_journals_a_mod_for_each_member_it_moves(raw_v1: RawV1) -> None:
    """A member's ``PartyList`` is part of what ``user/get`` answers: renaming or moving a
    party changes the record of every member in its subtree, so each is journaled as a MOD
    (see the README's emulator section); members elsewhere and empty parties are not."""
    ver = raw_v1.json("user/list", {"Ver": "0"})["Ver"]
    raw_v1.write("party/sync", {"action": "3", "srcpath": "研发中心", "dstpath": "技术中心"})
    raw_v1.write("party/sync", {"action": "2", "dstpath": "空部门"})
    raw_v1.write("party/sync", {"action": "3", "srcpath": "空部门", "dstpath": "另一个空部门"})
    later = raw_v1.json("user/list", {"ver": str(ver)})
    assert sorted((e["Alias"], e["Action"]) for e in later["List"]) == [
        ("lisi@example.com", 3),
        ("zhangsan@example.com", 3),
    ]
    got = raw_v1.json("user/get", {"alias": "lisi@example.com"})
    assert [p["Value"] for p in got["PartyList"]["List"]] == ["技术中心/移动部"]
