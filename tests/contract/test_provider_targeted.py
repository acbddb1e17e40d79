"""The providers' targeted reads (issue 14), both generations against the emulator over real
HTTP: ``get_users`` (one ``user/get`` per address, concurrently) and
``existing_departments`` (Gen 2: the tree in one call; Gen 1: one ``party/list`` per
parent, never a walk of every party)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from syncengine import service
from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import parse_config
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from tests.fixtures.emulator import RunningEmulator


def build(emu: RunningEmulator) -> ExmailV1Provider | ExmailV2Provider:
    config = parse_config({"exmail": emu.exmail_config()})
    p = service.build_provider(config, calls=CallPolicy(RetryPolicy(max_attempts=1)))
    assert isinstance(p, ExmailV1Provider | ExmailV2Provider)
    return p


def endpoints(emu: RunningEmulator, since: int) -> list[str]:
    """The calls since ``since`` as ``user/get``, ``party/list``... (generation prefix off)."""
    return ["/".join(str(c["endpoint"]).split("/")[-2:]) for c in emu.calls(since)]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_get_users_reads_each_address_once(
    api: str, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api)
    p = build(emu)
    try:
        p.get_user("lisi@example.com")  # the token, fetched once
        mark = len(emu.calls())
        got = p.get_users(["ZhangSan@example.com", "lisi@example.com", "nobody@example.com",
                           "san.zhang@example.com", "zhangsan@example.com"])  # fmt: skip
        assert set(got) == {"zhangsan@example.com", "lisi@example.com", "nobody@example.com",
                            "san.zhang@example.com"}  # fmt: skip
        zs, ls = got["zhangsan@example.com"], got["lisi@example.com"]
        assert zs is not None and zs.ext_id == "E0001" and "san.zhang@example.com" in zs.aliases
        assert ls is not None and ls.email == "lisi@example.com"
        assert got["nobody@example.com"] is None
        assert got["san.zhang@example.com"] is None  # an alias is not a member's address
        assert endpoints(emu, mark) == ["user/get"] * 4  # the duplicate is asked once
    finally:
        p.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_existing_departments_answers_for_the_paths_asked(
    api: str, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api)
    p = build(emu)
    try:
        p.get_user("lisi@example.com")  # the token, fetched once
        mark = len(emu.calls())
        found = {x.path for x in p.existing_departments(
            ["研发中心/平台部", "研发中心/没有这个组", "不存在/更深", "市场部"])}  # fmt: skip
        calls = endpoints(emu, mark)
        if api == "v2":  # the whole tree in one call
            assert found == {
                "研发中心",
                "研发中心/平台部",
                "研发中心/移动部",
                "市场部",
                "人力资源部",
            }
            assert calls == ["department/list"]
        else:  # one party/list per distinct parent: root, 研发中心, 不存在
            assert found == {"研发中心", "研发中心/平台部", "市场部"}
            assert sorted(calls) == ["party/list"] * 3
    finally:
        p.close()
