"""With no URLs in ``[exmail]``, each generation reaches the real service's hosts.

Gen 1's token lives on ``exmail.qq.com`` and its API on ``openapi.exmail.qq.com:12211`` over
plain HTTP; Gen 2 is ``api.exmail.qq.com``. The requests are caught by a MockTransport (the
real hosts cannot be called from a test); the emulator, which serves everything of one
generation on one host, is reached with ``base_url`` alone.
"""

from __future__ import annotations

import httpx

from syncengine.config import parse_config
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from syncengine.providers.http import new_http_client


def _recording(seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.netloc.decode()}{request.url.path}")
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 86400})
        if request.url.path.endswith("/gettoken"):
            return httpx.Response(200, json={"errcode": 0, "access_token": "t", "expires_in": 7200})
        if request.url.path.endswith("/department/list"):
            return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", "department": []})
        return httpx.Response(200, json={"Count": 0, "List": []})

    return httpx.MockTransport(handler)


def test_gen1_defaults_are_the_real_hosts() -> None:
    cfg = parse_config({"exmail": {"api": "v1", "client_id": "admin@corp.test",
                                   "client_secret": "0" * 32}})  # fmt: skip
    seen: list[str] = []
    client = new_http_client(timeout=2, max_connections=2, transport=_recording(seen))
    with ExmailV1Provider(cfg.exmail, client) as provider:
        provider.party_list("")
    assert seen == [
        "https://exmail.qq.com/cgi-bin/token",
        "http://openapi.exmail.qq.com:12211/openapi/party/list",
    ]


def test_gen2_defaults_are_the_real_hosts() -> None:
    cfg = parse_config({"exmail": {"api": "v2", "corp_id": "wm1", "secrets": {"contacts": "s"}}})
    seen: list[str] = []
    client = new_http_client(timeout=2, max_connections=2, transport=_recording(seen))
    with ExmailV2Provider(cfg.exmail, client) as provider:
        provider.read_state()
    # the token first; department/list and user/list then go out together (in either order)
    assert seen[0] == "https://api.exmail.qq.com/cgi-bin/gettoken"
    assert "https://api.exmail.qq.com/cgi-bin/department/list" in seen[1:3]


def test_gen1_base_url_alone_serves_both_token_and_api() -> None:
    """The emulator's shape: one host for the token and the API."""
    table = {"api": "v1", "base_url": "http://127.0.0.1:9/", "client_id": "a@corp.test"}
    cfg = parse_config({"exmail": {**table, "client_secret": "0" * 32}})
    assert cfg.exmail.token_url == "http://127.0.0.1:9/cgi-bin/token"
    assert cfg.exmail.openapi_base == "http://127.0.0.1:9"
