"""The review pages' sign-in rules in process (Starlette's TestClient over the real app and a
real SQLite staging file): CSRF on the sign-in form, the lockout after repeated failures, the
security headers, and a config that requires approvals without approvers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.testclient import TestClient

from syncengine import service
from syncengine.config import Config, parse_config
from syncengine.errors import ConfigError
from syncengine.hooks import review as pages
from syncengine.service.review_pages import review_backend

PASSWORD = "correct horse battery 1"


def config(tmp_path: Path, **review: object) -> Config:
    data = {
        "exmail": {"api": "v2", "corp_id": "c", "secrets": {"contacts": "s"},
                   "domains": ["example.com"]},
        "database": {"url": f"sqlite:///{tmp_path / 'staging.db'}"},
        "review": {"lang": "en", "approvers": [{"name": "wang.hr",
                   "password_hash": PasswordHasher().hash(PASSWORD)}], **review},
    }  # fmt: skip
    return parse_config(data, path=tmp_path / "syncengine.toml")


def login_token(client: TestClient) -> str:
    page = client.get("/review/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_sign_in_needs_the_forms_token_and_locks_out_after_five_failures(
    tmp_path: Path,
) -> None:
    app = pages.with_review(
        Starlette(), review_backend(service.Engine(config(tmp_path, secure_cookies=False)))
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.post("/review/login", data={"name": "wang.hr", "password": PASSWORD})
        assert r.status_code == 403  # no token: refused even with the right password
        for _ in range(pages.MAX_FAILURES):
            token = login_token(client)
            wrong = {"csrf": token, "name": "wang.hr", "password": "nope nope"}
            r = client.post("/review/login", data=wrong)
            assert r.status_code == 401
        token = login_token(client)
        r = client.post("/review/login",
                        data={"csrf": token, "name": "wang.hr", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 429 and "wait a few minutes" in r.text
        assert PASSWORD not in r.text
        assert "script-src 'sha256-" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"


def test_a_form_past_the_cap_is_refused_413_and_not_taken_for_an_empty_form(
    tmp_path: Path,
) -> None:
    """A sign-in body past MAX_FORM_BYTES is answered 413 saying so (it was read whole and then
    treated as an empty form: "the form expired"), by its declared length or as it streams."""
    app = pages.with_review(
        Starlette(), review_backend(service.Engine(config(tmp_path, secure_cookies=False)))
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        token = login_token(client)
        big = {"csrf": token, "name": "wang.hr", "password": PASSWORD,
               "pad": "x" * pages.MAX_FORM_BYTES}  # fmt: skip
        r = client.post("/review/login", data=big)
        assert r.status_code == 413, r.text
        assert f"larger than {pages.MAX_FORM_BYTES} bytes" in r.text
        assert PASSWORD not in r.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: the cap holds as it streams
            yield f"csrf={token}&name=wang.hr&pad=".encode()
            for _ in range(64):
                yield b"x" * 1024

        r = client.post("/review/login", content=chunks(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code == 413, r.text
        token = login_token(client)  # a form within the cap still signs in
        r = client.post("/review/login", follow_redirects=False,
                        data={"csrf": token, "name": "wang.hr", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 303


def test_an_unknown_name_is_refused_like_a_wrong_password(tmp_path: Path) -> None:
    backend = review_backend(service.Engine(config(tmp_path, secure_cookies=False, lang="zh")))
    app = pages.with_review(Starlette(), backend)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        token = login_token(client)
        r = client.post("/review/login",
                        data={"csrf": token, "name": "nobody", "password": PASSWORD})  # fmt: skip
        assert r.status_code == 401 and "用户名或密码错误" in r.text and 'lang="zh-CN"' in r.text
        assert client.get("/review/", follow_redirects=False).status_code == 303


def test_no_approvers_no_pages(tmp_path: Path) -> None:
    base = Starlette()
    assert (
        pages.with_review(base, review_backend(service.Engine(config(tmp_path, approvers=[]))))
        is base
    )


def test_requiring_approvals_without_approvers_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"review.*approvers"):
        config(tmp_path, require_approval="removals", approvers=[])
