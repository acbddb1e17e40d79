"""Single sign-on for the OA portal: a signed, expiring link on the receiver redirects to a
fresh Exmail login URL (followed to the emulator's landing page), and is refused for
protected, disabled and unmanaged accounts unless the config allows them. The same rule
holds for ``syncengine sso-url``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import Receiver, make_env, portal_link, running_receiver

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["v1", "v2"])
def env(request: pytest.FixtureRequest, tmp_path: Path,
        emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:  # fmt: skip
    return make_env(ApplyEnv(tmp_path, emulator_factory(request.param)))


@pytest.fixture
def rx(env: ApplyEnv) -> Iterator[Receiver]:
    with running_receiver(env, worker=False) as receiver:
        yield receiver


def test_a_managed_user_is_redirected_to_the_mailbox(env: ApplyEnv, rx: Receiver) -> None:
    r = rx.client.get(portal_link("ZhangSan@example.com"))
    assert r.status_code == 302, r.text
    target = r.headers["location"]
    assert target.startswith(env.emulator.base_url + "/cgi-bin/login")
    assert r.headers["cache-control"] == "no-store"
    landing = httpx.get(target, timeout=10)
    assert landing.status_code == 200 and "zhangsan@example.com" in landing.text
    # Each click gets a fresh single-use URL: the first one is spent now.
    assert httpx.get(target, timeout=10).status_code == 403
    # A portal link is single use too; the portal signs a new one for the next click.
    again = rx.client.get(portal_link("zhangsan@example.com", ts=int(time.time()) + 1))
    assert again.status_code == 302 and again.headers["location"] != target


@pytest.mark.parametrize(
    ("user", "reason"),
    [
        ("admin@example.com", "protected"),  # matches the default admin@* pattern
        ("zhaoliu@example.com", "disabled"),  # terminated in HR, disabled by the sync
        ("hr-shared@example.com", "not managed"),  # in Exmail, in no HR record
    ],
)
def test_refused_accounts_get_403_with_the_reason(
    env: ApplyEnv, rx: Receiver, user: str, reason: str
) -> None:
    r = rx.client.get(portal_link(user))
    assert r.status_code == 403 and reason in r.text, r.text
    assert "login" not in r.headers.get("location", "")


def test_bad_links_are_refused(env: ApplyEnv, rx: Receiver) -> None:
    old = rx.client.get(portal_link("zhangsan@example.com", ts=int(time.time()) - 61))
    assert old.status_code == 403 and "expired" in old.text
    forged = rx.client.get(portal_link("zhangsan@example.com", secret="guess"))
    assert forged.status_code == 403 and "signature" in forged.text
    swapped = portal_link("zhangsan@example.com").replace("zhangsan", "lisi")
    assert rx.client.get(swapped).status_code == 403
    assert rx.client.get("/sso/login?user=zhangsan@example.com").status_code == 403
    assert rx.client.get(portal_link("nobody@example.com")).status_code == 404


def test_the_config_can_allow_what_is_refused_by_default(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")),
                   sso={"allow_unmanaged": True, "allow_protected": True})  # fmt: skip
    with running_receiver(env, worker=False) as rx:
        assert rx.client.get(portal_link("hr-shared@example.com")).status_code == 302
        assert rx.client.get(portal_link("admin@example.com")).status_code == 302
        assert rx.client.get(portal_link("zhaoliu@example.com")).status_code == 403


def test_sso_url_command_applies_the_same_rule(env: ApplyEnv) -> None:
    r = env.cli("sso-url", "admin@example.com")
    assert r.exit_code == 1 and "protected" in r.output and "allow_protected" in r.output
    r = env.cli("sso-url", "hr-shared@example.com")
    assert r.exit_code == 1 and "not managed" in r.output
    r = env.cli("sso-url", "lisi@elsewhere.example.org")
    assert r.exit_code == 1 and "not one of the company's domains" in r.output, r.output
    r = env.cli("sso-url", "lisi@example.com")
    assert r.exit_code == 0, r.output
    assert httpx.get(r.output.strip(), timeout=10).status_code == 200


def test_sso_is_off_without_a_portal_secret(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), sso={"secret": None})
    with running_receiver(env, worker=False) as rx:
        r = rx.client.get(portal_link("zhangsan@example.com"))
        assert r.status_code == 503
