"""Answers the real Exmail may give but the emulator does not (protocol "tolerate" cases).

The emulator answers one reading of each disagreement in the sources; the client must accept
the others too. Those other shapes can only be produced by a scripted transport.
"""

from __future__ import annotations

import httpx
import pytest

from syncengine.domain import Gender
from syncengine.errors import FatalProviderError
from tests.unit.test_provider_http import ok, v1_provider, v2_provider


def v1_answering(answers: dict[str, httpx.Response]) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            return ok({"access_token": "t", "expires_in": 86400})
        return answers[request.url.path.removeprefix("/openapi/")]

    return v1_provider(handler)


@pytest.mark.parametrize("key", ["auth_key", "authkey"])
def test_v1_sso_url_reads_auth_key_or_authkey(key: str) -> None:
    p = v1_answering({"mail/authkey": ok({key: "ABCDEF0123"})})
    url = p.login_url("bob@corp.test")  # type: ignore[attr-defined]
    assert url == (
        "https://exmail.qq.com/cgi-bin/login?fun=bizopenssologin&method=bizauth"
        "&agent=admin%40corp.test&user=bob%40corp.test&ticket=ABCDEF0123"
    )


@pytest.mark.parametrize("value", ["7", 7])
def test_v1_newcount_as_string_or_int(value: object) -> None:
    p = v1_answering({"mail/newcount": ok({"Alias": "bob@corp.test", "NewCount": value})})
    assert p.new_mail_count("bob@corp.test") == 7  # type: ignore[attr-defined]


def test_v1_newcount_missing_is_fatal() -> None:
    p = v1_answering({"mail/newcount": ok({"Alias": "bob@corp.test"})})
    with pytest.raises(FatalProviderError):
        p.new_mail_count("bob@corp.test")  # type: ignore[attr-defined]


def test_v1_listen_shapes() -> None:
    p = v1_answering({"listen": ok({"Ver": "1364460338051"})})
    assert p.listen("5", timeout=1) == ([], "1364460338051")  # type: ignore[attr-defined]
    p = v1_answering({"listen": ok({"Ret": 0})})
    assert p.listen("5", timeout=1) == ([], "5")  # type: ignore[attr-defined]
    p = v1_answering(
        {"listen": ok({"UserName": "Bob@Corp.test", "NewCount": "550"})}  # count only
    )
    events, ver = p.listen("9", timeout=1)  # type: ignore[attr-defined]
    assert ver == "9" and events[0].email == "bob@corp.test" and events[0].new_count == 550


def test_v1_user_get_tolerates_list_aliases_and_string_gender() -> None:
    record = {
        "Alias": "bob@corp.test",
        "Name": "鲍勃",
        "Gender": "2",
        "SlaveList": ["b@corp.test"],
        "ExtId": "7",
        "PartyList": {"Count": 2, "List": [{"Value": "/A/B/"}, {"Value": ""}]},
        "OpenType": "2",
    }
    p = v1_answering({"user/get": ok(record)})
    box = p.get_user("bob@corp.test")  # type: ignore[attr-defined]
    assert box is not None
    assert box.aliases == ("b@corp.test",) and box.gender is Gender.FEMALE
    assert box.departments == ("A/B",) and box.enabled is False


def test_v2_user_fields_as_ints_or_strings() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/cgi-bin/", 1)[1]
        if name == "gettoken":
            return ok({"errcode": 0, "access_token": "t", "expires_in": 7200})
        if name == "department/list":
            return ok(
                {
                    "errcode": 0,
                    "department": [
                        {"id": 1, "name": "corp", "parentid": 0},
                        {"id": 4913577855806636138, "name": "研发", "parentid": 1, "order": 3},
                    ],
                }
            )
        return ok(
            {
                "errcode": 0,
                "userid": "Bob@Corp.test",
                "name": "鲍勃",
                "gender": 1,
                "enable": "0",
                "department": [1, 4913577855806636138],
                "slaves": [],
            }
        )

    with v2_provider(handler) as p:
        box = p.get_user("bob@corp.test")
    assert box is not None
    assert box.email == "bob@corp.test" and box.gender is Gender.MALE and not box.enabled
    assert box.departments == ("研发",)


def test_v2_gettoken_without_errcode_is_accepted() -> None:
    """The doc's gettoken sample has no errcode; a body with a token is success."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"access_token": "t", "expires_in": 7200})
        return ok({"errcode": 0, "errmsg": "deleted"})

    with v2_provider(handler) as p:
        p.delete_user("a@corp.test")


def test_v1_listen_read_timeout_is_a_quiet_poll_but_other_failures_raise() -> None:
    from syncengine.errors import RetriableProviderError

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            return ok({"access_token": "t", "expires_in": 86400})
        if request.url.path.endswith("listen") and b"Ver=1" in request.content:
            raise httpx.ReadTimeout("timed out", request=request)
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    p = v1_provider(handler)
    assert p.listen("1", timeout=0.1) == ([], "1")
    with pytest.raises(RetriableProviderError):
        p.listen("2", timeout=0.1)
    p.close()
