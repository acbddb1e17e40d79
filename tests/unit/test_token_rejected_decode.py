"""An answer is decoded once: the token check reads the bytes first (Gen 2 as Gen 1)."""

from __future__ import annotations

import json
import types
from typing import Any

import httpx
import pytest

from syncengine.providers import http as provider_http
from syncengine.providers.http import v1_token_rejected, v2_token_rejected


def answer(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode())


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bodies the module decodes (its ``json.loads``, counted)."""
    seen: list[int] = []

    def loads(text: Any, **kw: Any) -> Any:
        seen.append(len(text))
        return json.loads(text, **kw)

    monkeypatch.setattr(provider_http, "json", types.SimpleNamespace(loads=loads, dumps=json.dumps))
    return seen


USERS = {"errcode": 0, "errmsg": "ok",
         "userlist": [{"userid": f"u{i}@x.com", "name": "某", "mobile": f"138{i:08d}"}
                      for i in range(2000)]}  # fmt: skip


@pytest.mark.parametrize("rejected", [v2_token_rejected, v1_token_rejected])
def test_a_data_answer_is_not_decoded_by_the_token_check(rejected: Any, decodes: list[int]) -> None:
    assert rejected(answer({"errcode": 0, "userlist": [{"userid": "a@x.com"}] * 500})) is False
    assert decodes == []


@pytest.mark.parametrize("code", [40014, 40001, 42001, "40014"])
def test_gen2_rejections_are_still_seen(code: int | str) -> None:
    assert v2_token_rejected(answer({"errcode": code, "errmsg": "invalid access_token"}))
    assert v2_token_rejected(httpx.Response(401))


def test_a_code_inside_the_data_is_decoded_and_not_taken_for_a_rejection() -> None:
    body = {"errcode": 0, "userlist": [{"userid": "a@x.com", "mobile": "13840014000"}]}
    assert v2_token_rejected(answer(body)) is False
    assert v2_token_rejected(answer(USERS)) is False
