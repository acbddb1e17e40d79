"""The provider contract: the same scenarios through each generation's client, against that
generation's emulator over real HTTP on loopback.

Everything here goes through the public :class:`MailboxProvider` interface (built by
``service.build_provider``) except where a scenario is generation-specific (Gen 1 ``listen``
and ``user/list``, Gen 2 groups), which is said in the test's name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from syncengine import service
from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import parse_config
from syncengine.domain import AddressKind, Gender, Mailbox, MailEvent, UserUpdate
from syncengine.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    FatalProviderError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
)
from syncengine.providers.base import GroupPosting, GroupProvider, MailboxProvider, MailGroup
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from tests.fixtures.emulator import RunningEmulator

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Welcome2026x"

# The default seed, as the engine should read it (root membership is an empty tuple).
SEED_MAILBOXES = {
    Mailbox("admin@example.com", "系统管理员", position="管理员"),
    Mailbox(
        "hr-shared@example.com",
        "人力资源共享邮箱",
        departments=("人力资源部",),
        aliases=("hr@example.com",),
    ),
    Mailbox(
        "zhangsan@example.com",
        "张三",
        ext_id="E0001",
        departments=("研发中心/平台部",),
        aliases=("san.zhang@example.com",),
        position="高级工程师",
        tel="010-62000001",
        mobile="13800000001",
        gender=Gender.MALE,
    ),
    Mailbox(
        "lisi@example.com",
        "李四",
        ext_id="E0002",
        departments=("研发中心/移动部",),
        position="工程师",
        mobile="13800000002",
        gender=Gender.FEMALE,
    ),
    Mailbox(
        "wangwu@example.com",
        "王五",
        ext_id="E0003",
        departments=("市场部",),
        position="市场经理",
        gender=Gender.MALE,
    ),
    Mailbox(
        "zhaoliu@example.com",
        "赵六",
        ext_id="E0004",
        departments=("人力资源部",),
        gender=Gender.FEMALE,
        enabled=False,
    ),
}
SEED_PATHS = {"研发中心", "研发中心/平台部", "研发中心/移动部", "市场部", "人力资源部"}


def build(emu: RunningEmulator, **overrides: Any) -> MailboxProvider:
    """A provider under a call policy that tries each call once and never waits: these tests
    check how each answer is classified (retrying is the call policy's, tested on its own)."""
    config = parse_config({"exmail": {**emu.exmail_config(), **overrides}})
    return service.build_provider(config, calls=CallPolicy(RetryPolicy(max_attempts=1)))


@pytest.fixture
def provider(emulator: RunningEmulator) -> Iterator[MailboxProvider]:
    p = build(emulator)
    yield p
    p.close()


def count_of(emu: RunningEmulator, endpoint_suffix: str) -> int:
    return sum(n for e, n in emu.call_counts().items() if e.endswith(endpoint_suffix))


# --- reading ------------------------------------------------------------------------------


def test_read_state_of_the_seed(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    state = provider.read_state()
    assert set(state.mailboxes) == SEED_MAILBOXES
    assert {p.path for p in state.parties} == SEED_PATHS
    assert provider.api == emulator.api and isinstance(provider, MailboxProvider)


def test_read_state_is_the_same_through_both_generations(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    states = {}
    for api in ("v1", "v2"):
        emu = emulator_factory(api)
        p = build(emu)
        p.create_department("研发中心/平台部/数据组")
        p.create_user(
            Mailbox(
                "ouyang@example.com",
                "欧阳娜娜",
                ext_id="E9",
                departments=("研发中心/平台部/数据组", "市场部"),
                aliases=("nana@example.com",),
            ),
            password=PASSWORD,
        )
        states[api] = p.read_state()
        p.close()
    assert set(states["v1"].mailboxes) == set(states["v2"].mailboxes)
    assert states["v1"].fingerprint() == states["v2"].fingerprint()
    assert all(p.id is None for p in states["v1"].parties)
    assert all(isinstance(p.id, int) and p.id > 1 for p in states["v2"].parties)


def test_read_state_reports_progress(provider: MailboxProvider) -> None:
    seen: list[tuple[int, int | None]] = []
    provider.read_state(progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(SEED_MAILBOXES), len(SEED_MAILBOXES))


def test_v1_read_state_lists_accounts_walks_parties_then_fetches_each_member(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v1")
    with closing(build(emu)) as p:
        p.read_state()
    counts = emu.call_counts()
    assert counts["/openapi/party/list"] == len(SEED_PATHS) + 1  # every party and the root
    # user/list Ver=0 names every account (and gives the cursor of the next incremental read)
    assert counts["/openapi/user/list"] == 1
    assert "/openapi/partyuser/list" not in counts
    assert counts["/openapi/user/get"] == len(SEED_MAILBOXES)
    assert counts["/cgi-bin/token"] == 1


def test_v2_read_state_is_two_list_calls(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v2")
    with closing(build(emu)) as p:
        p.read_state()
    counts = emu.call_counts()
    assert counts == {
        "/cgi-bin/gettoken": 1,
        "/cgi-bin/department/list": 1,
        "/cgi-bin/user/list": 1,
    }


def test_get_user(provider: MailboxProvider) -> None:
    got = provider.get_user("ZhangSan@Example.com")
    assert got is not None and got in SEED_MAILBOXES and got.email == "zhangsan@example.com"
    assert provider.get_user("nobody@example.com") is None
    assert provider.get_user("san.zhang@example.com") is None  # an alias is not a member


# --- departments --------------------------------------------------------------------------


def test_department_create_move_delete(provider: MailboxProvider) -> None:
    provider.create_department("研发中心/平台部/数据组")
    provider.move_department("研发中心/移动部", "市场部/移动组")
    provider.create_department("财务部")
    provider.delete_department("财务部")
    state = provider.read_state()
    paths = {p.path for p in state.parties}
    assert "研发中心/平台部/数据组" in paths and "财务部" not in paths
    assert "市场部/移动组" in paths and "研发中心/移动部" not in paths
    lisi = provider.get_user("lisi@example.com")
    assert lisi is not None and lisi.departments == ("市场部/移动组",)


def test_deep_tree_of_five_levels_and_no_sixth(provider: MailboxProvider) -> None:
    path = ""
    for level in range(1, 6):
        path = f"{path}/第{level}级" if path else "第1级"
        provider.create_department(path)
    provider.create_user(
        Mailbox("deep@example.com", "深层", departments=(path,)), password=PASSWORD
    )
    got = provider.get_user("deep@example.com")
    assert got is not None and got.departments == ("第1级/第2级/第3级/第4级/第5级",)
    with pytest.raises(FatalProviderError):
        provider.create_department(path + "/第6级")
    provider.delete_user("deep@example.com")
    while path:
        provider.delete_department(path)
        path = path.rpartition("/")[0]
    assert not any(p.path.startswith("第1级") for p in provider.read_state().parties)


def test_duplicate_department_is_already_exists(provider: MailboxProvider) -> None:
    with pytest.raises(AlreadyExistsError):
        provider.create_department("研发中心/平台部")


def test_department_under_missing_parent_is_not_found(provider: MailboxProvider) -> None:
    with pytest.raises(NotFoundError):
        provider.create_department("不存在/子部门")


def test_deleting_a_department_with_members_is_a_conflict(provider: MailboxProvider) -> None:
    with pytest.raises(ConflictError):
        provider.delete_department("市场部")
    with pytest.raises(ConflictError):
        provider.delete_department("研发中心")  # has children


def test_deleting_a_missing_department_is_not_found(provider: MailboxProvider) -> None:
    with pytest.raises(NotFoundError):
        provider.delete_department("不存在")


# --- users --------------------------------------------------------------------------------


def test_user_create_read_update_delete(
    emulator: RunningEmulator, provider: MailboxProvider
) -> None:
    box = Mailbox(
        "ouyang@example.com",
        "欧阳娜娜",
        ext_id="E1001",
        departments=("研发中心/平台部", "市场部"),
        aliases=("nana@example.com",),
        position="数据工程师",
        tel="010-1234",
        mobile="13900000000",
        gender=Gender.FEMALE,
    )
    provider.create_user(box, password=PASSWORD)
    assert provider.get_user(box.email) == box
    assert emulator.check_password(box.email, PASSWORD)

    provider.update_user(
        box.email,
        UserUpdate(name="欧阳娜", position="组长", departments=(), aliases=(), enabled=False),
    )
    got = provider.get_user(box.email)
    assert got is not None
    assert (got.name, got.position, got.departments, got.aliases, got.enabled) == (
        "欧阳娜",
        "组长",
        (),
        (),
        False,
    )
    assert (got.ext_id, got.mobile, got.gender) == ("E1001", "13900000000", Gender.FEMALE)

    provider.update_user(box.email, UserUpdate(enabled=True, departments=("人力资源部",)))
    got = provider.get_user(box.email)
    assert got is not None and got.enabled and got.departments == ("人力资源部",)

    provider.delete_user(box.email)
    assert provider.get_user(box.email) is None


def test_create_disabled_user(provider: MailboxProvider) -> None:
    provider.create_user(Mailbox("off@example.com", "停用", enabled=False), password=PASSWORD)
    got = provider.get_user("off@example.com")
    assert got is not None and not got.enabled and got.departments == ()


def test_v2_create_user_sets_change_password_at_login(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v2")
    with closing(build(emu)) as p:
        p.create_user(Mailbox("a1@example.com", "甲"), password=PASSWORD)
        p.create_user(
            Mailbox("a2@example.com", "乙"), password=PASSWORD, change_password_at_login=False
        )
    users = {u["userid"]: u for u in emu.state()["users"]}
    assert users["a1@example.com"]["cpwd_login"] == 1
    assert users["a2@example.com"]["cpwd_login"] == 0


def test_duplicate_user_is_already_exists(provider: MailboxProvider) -> None:
    with pytest.raises(AlreadyExistsError):
        provider.create_user(Mailbox("lisi@example.com", "李四"), password=PASSWORD)


def test_missing_user_update_and_delete_are_not_found(provider: MailboxProvider) -> None:
    with pytest.raises(NotFoundError):
        provider.update_user("nobody@example.com", UserUpdate(name="无"))
    with pytest.raises(NotFoundError):
        provider.delete_user("nobody@example.com")


def test_name_over_64_bytes_is_refused(provider: MailboxProvider) -> None:
    with pytest.raises(FatalProviderError) as info:
        provider.create_user(Mailbox("long@example.com", "长" * 22), password=PASSWORD)
    assert info.value.errcode is not None


def test_empty_update_makes_no_call(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    provider.update_user("lisi@example.com", UserUpdate())
    assert emulator.call_counts() == {}


# --- aliases and addresses ----------------------------------------------------------------


def test_aliases_set_clash_and_swap(provider: MailboxProvider) -> None:
    provider.update_user("lisi@example.com", UserUpdate(aliases=("si.li@example.com",)))
    got = provider.get_user("lisi@example.com")
    assert got is not None and got.aliases == ("si.li@example.com",)

    with pytest.raises(ConflictError):  # already zhangsan's alias
        provider.update_user("lisi@example.com", UserUpdate(aliases=("san.zhang@example.com",)))

    provider.swap_alias("lisi@example.com", "si.li@example.com")
    assert provider.get_user("lisi@example.com") is None
    swapped = provider.get_user("si.li@example.com")
    assert swapped is not None and swapped.aliases == ("lisi@example.com",)
    assert swapped.ext_id == "E0002"


def test_check_addresses(provider: MailboxProvider) -> None:
    kinds = provider.check_addresses(
        [
            "LiSi@example.com",
            "hr@example.com",
            "all@example.com",
            "free@example.com",
            "someone@elsewhere.org",
        ]
    )
    assert kinds == {
        "lisi@example.com": AddressKind.USER,
        "hr@example.com": AddressKind.ALIAS,
        "all@example.com": AddressKind.GROUP,
        "free@example.com": AddressKind.FREE,
        "someone@elsewhere.org": AddressKind.INVALID,
    }


def test_check_addresses_batches_by_twenty(
    emulator: RunningEmulator, provider: MailboxProvider
) -> None:
    names = [f"n{i}@example.com" for i in range(45)]
    kinds = provider.check_addresses(names)
    assert len(kinds) == 45 and set(kinds.values()) == {AddressKind.FREE}
    assert count_of(emulator, "check") == 3  # user/check or user/batchcheck


# --- tokens, credentials, faults ----------------------------------------------------------


def test_token_expiry_in_the_middle_of_a_sequence(
    emulator: RunningEmulator, provider: MailboxProvider
) -> None:
    assert provider.get_user("lisi@example.com") is not None
    emulator.expire_tokens()
    provider.update_user("lisi@example.com", UserUpdate(position="架构师"))
    got = provider.get_user("lisi@example.com")
    assert got is not None and got.position == "架构师"
    assert count_of(emulator, "token") == 2  # gettoken / token: once, then once more


def test_a_token_cached_for_a_restarted_server_costs_one_refused_call(
    emulator: RunningEmulator,
) -> None:
    """The process shares tokens per (token URL, credential): a server restarted on the same
    address without its state refuses the token the provider kept, and the call is resent
    once with a fresh token; nothing fails. (Why each test starts with no process tokens: an
    emulator given an earlier test's port behaves like this restart, and call counts grew by
    one now and then.)"""
    from syncengine.providers.tokens import PROCESS_TOKENS

    assert len(PROCESS_TOKENS) == 0  # the autouse fixture's fresh start
    with closing(build(emulator)) as p:
        p.check_addresses(["a@example.com"])
    assert len(PROCESS_TOKENS) == 1
    emulator.restart()  # no state file: the tokens it issued are gone
    emulator.clear_calls()
    with closing(build(emulator)) as p:
        kinds = p.check_addresses([f"n{i}@example.com" for i in range(45)])
    assert len(kinds) == 45
    assert count_of(emulator, "check") == 4  # the first batch refused once, then resent
    assert count_of(emulator, "token") == 1
    PROCESS_TOKENS.clear()
    emulator.clear_calls()
    with closing(build(emulator)) as p:
        p.check_addresses([f"n{i}@example.com" for i in range(45)])
    assert count_of(emulator, "check") == 3 and count_of(emulator, "token") == 1


def test_token_is_cached_across_calls(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    for _ in range(5):
        provider.get_user("lisi@example.com")
    assert count_of(emulator, "token") == 1


@pytest.mark.parametrize("code", [42001, 40001])
def test_v2_tolerates_other_invalid_token_codes(
    emulator_factory: Callable[..., RunningEmulator], code: int
) -> None:
    emu = emulator_factory("v2", invalid_token_code=code)
    with closing(build(emu)) as p:
        p.get_user("lisi@example.com")
        emu.expire_tokens()
        assert p.get_user("lisi@example.com") is not None
    assert emu.call_counts()["/cgi-bin/gettoken"] == 2


def test_invalid_credentials_are_an_authentication_error(emulator: RunningEmulator) -> None:
    wrong: dict[str, Any]
    if emulator.api == "v2":
        wrong = {"secrets": {**emulator.exmail_config()["secrets"], "contacts": "wrong-secret"}}
    else:
        wrong = {"client_secret": "ffffffffffffffffffffffffffffffff"}
    with closing(build(emulator, **wrong)) as p, pytest.raises(AuthenticationError) as info:
        p.read_state()
    assert "wrong-secret" not in str(info.value) and "ffffffff" not in str(info.value)


def test_v1_basic_token_auth(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v1")
    with closing(build(emu, token_auth="basic")) as p:
        assert p.get_user("lisi@example.com") is not None


def test_rate_limit_is_retriable(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    provider.get_user("lisi@example.com")  # token fetched before the limit
    emulator.set_faults(rate_limit_per_token=1)
    with pytest.raises(RetriableProviderError) as info:
        for _ in range(10):
            provider.get_user("lisi@example.com")
    assert str(info.value.errcode) in ("45009", "1002")


def test_http_503_is_retriable(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    emulator.set_faults(fail_rate=1.0)
    with pytest.raises(RetriableProviderError) as info:
        provider.get_user("lisi@example.com")
    assert info.value.http_status == 503


def test_dropped_connection_is_retriable(
    emulator: RunningEmulator, provider: MailboxProvider
) -> None:
    provider.get_user("lisi@example.com")
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(RetriableProviderError) as info:
        provider.update_user("lisi@example.com", UserUpdate(position="x"))
    assert "connection" in str(info.value)
    emulator.set_faults(drop_rate=0.0)
    got = provider.get_user("lisi@example.com")
    if emulator.api == "v2":  # the write happened (drop after the effect)
        assert got is not None and got.position == "x"
    else:  # Gen 1 reads the record first (a MOD carries all of it): that read was dropped
        assert got is not None and got.position != "x"


def test_unreachable_server_is_retriable(emulator: RunningEmulator) -> None:
    p = build(emulator)
    emulator.stop()
    with pytest.raises(RetriableProviderError):
        p.get_user("lisi@example.com")
    p.close()


def test_secrets_never_in_errors_or_reprs(emulator: RunningEmulator) -> None:
    config = emulator.exmail_config()
    secrets = (
        list(config["secrets"].values()) if emulator.api == "v2" else [config["client_secret"]]
    )
    p = build(emulator)
    p.get_user("lisi@example.com")
    emulator.set_faults(drop_rate=1.0)
    with pytest.raises(RetriableProviderError) as info:
        p.get_user("lisi@example.com")
    token = None
    if isinstance(p, ExmailV2Provider):
        token = p.token_cache("contacts").get()
    elif isinstance(p, ExmailV1Provider):
        token = p.tokens.get()
    texts = [str(info.value), repr(info.value), repr(p)]
    for text in texts:
        for secret in [*secrets, token]:
            assert secret and secret not in text
    p.close()


# --- SSO, mail count, new-mail events -----------------------------------------------------


def test_sso_url_lands_once(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    url = provider.login_url("zhangsan@example.com")
    assert url.startswith(emulator.base_url + "/cgi-bin/login?")
    first = httpx.get(url, timeout=10)
    assert first.status_code == 200 and "zhangsan@example.com" in first.text
    again = httpx.get(url, timeout=10)
    assert again.status_code == 403  # single use


def test_sso_url_of_missing_user_is_not_found(provider: MailboxProvider) -> None:
    with pytest.raises(NotFoundError):
        provider.login_url("nobody@example.com")


def test_new_mail_count(emulator: RunningEmulator, provider: MailboxProvider) -> None:
    assert provider.new_mail_count("wangwu@example.com") == 0
    emulator.deliver_mail("wangwu@example.com")
    emulator.deliver_mail("wangwu@example.com")
    assert provider.new_mail_count("wangwu@example.com") == 2
    with pytest.raises(NotFoundError):
        provider.new_mail_count("nobody@example.com")


def test_v1_listen_receives_a_delivered_mail(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v1", listen_hold=10)
    p = build(emu)
    assert isinstance(p, ExmailV1Provider)
    start, _ = p.user_changes("0")
    result: list[tuple[list[MailEvent], str]] = []
    waiter = threading.Thread(target=lambda: result.append(p.listen(start, timeout=15)))
    waiter.start()
    delivered = emu.deliver_mail("lisi@example.com", subject="周报")
    waiter.join(20)
    assert result, "listen did not return"
    events, version = result[0]
    assert [(e.email, e.subject, e.new_count) for e in events] == [("lisi@example.com", "周报", 1)]
    assert version == delivered["Ver"] and int(version) > int(start)
    # Nothing newer: the long poll is held and ends with no event and the same version.
    emu.set_faults(listen_hold=0.2)
    assert p.listen(version, timeout=5) == ([], version)
    p.close()


def test_v1_user_changes_journal(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v1")
    p = build(emu)
    assert isinstance(p, ExmailV1Provider)
    version, everyone = p.user_changes("0")
    assert {a for a, _ in everyone} == {m.email for m in SEED_MAILBOXES}
    assert {act for _, act in everyone} == {2}
    p.create_user(Mailbox("new@example.com", "新人"), password=PASSWORD)
    p.update_user("lisi@example.com", UserUpdate(tel="8888"))
    p.delete_user("wangwu@example.com")
    later, changes = p.user_changes(version)
    assert changes == [("new@example.com", 2), ("lisi@example.com", 3), ("wangwu@example.com", 1)]
    assert int(later) > int(version)
    p.close()


def test_watch_mail_through_the_service(emulator: RunningEmulator) -> None:
    """Gen 1 long-polls listen; Gen 2 polls newcount (first poll = baseline)."""
    emulator.set_faults(listen_hold=1.0)
    config = parse_config({"exmail": emulator.exmail_config()})
    got: list[MailEvent] = []

    def run() -> None:
        got.extend(
            service.watch_mail(
                service.Engine(config),
                users=["lisi@example.com"],
                interval=0.1,
                max_events=1,
                timeout=20,
            )
        )

    watcher = threading.Thread(target=run)
    watcher.start()
    # Mail from before the watch is not news: wait until the watcher has polled once (Gen 2:
    # its baseline; Gen 1: a listen held 1 s and answered {"Ret":0}), then deliver.
    first_poll = "mail/newcount" if emulator.api == "v2" else "listen"
    for _ in range(400):
        if count_of(emulator, first_poll):
            break
        threading.Event().wait(0.05)
    emulator.deliver_mail("wangwu@example.com")  # filtered out (Gen 1) / not polled (Gen 2)
    emulator.deliver_mail("lisi@example.com", subject="hi")
    watcher.join(25)
    assert not watcher.is_alive()
    assert len(got) == 1 and got[0].email == "lisi@example.com" and got[0].new_count == 1


# --- mail groups --------------------------------------------------------------------------


def test_the_group_calls_the_engine_makes(
    emulator: RunningEmulator, provider: MailboxProvider
) -> None:
    """What the executor's group handlers rely on, the same on both generations."""
    assert isinstance(provider, GroupProvider)

    def live() -> dict[str, list[str]]:
        return {g["groupid"]: g["userlist"] for g in emulator.state()["groups"]}

    group = MailGroup("dept-1@example.com", "平台部", members=("zhangsan@example.com",))
    provider.create_group(group)
    assert live()["dept-1@example.com"] == ["zhangsan@example.com"]
    after = MailGroup("dept-1@example.com", "平台部", members=("lisi@example.com",))
    provider.change_group(after, add=("lisi@example.com",), remove=("zhangsan@example.com",))
    assert live()["dept-1@example.com"] == ["lisi@example.com"]
    if provider.can_read_groups:
        assert provider.get_group("dept-1@example.com") == after
    else:  # Gen 1 has no group/get
        assert provider.get_group("dept-1@example.com") is None
    # An unknown member, a group left empty: refused, and the group is as it was.
    ghost = MailGroup("dept-1@example.com", "平台部", members=("lisi@example.com",
                                                          "nobody@example.com"))  # fmt: skip
    with pytest.raises(ProviderError, match=r"nobody@example\.com|1301"):
        provider.change_group(ghost, add=("nobody@example.com",), remove=())
    with pytest.raises(ProviderError):
        provider.change_group(MailGroup("dept-1@example.com", "平台部"), add=(),
                              remove=("lisi@example.com",))  # fmt: skip
    assert live()["dept-1@example.com"] == ["lisi@example.com"]
    # A group address that is a mailbox, an alias or another group is refused.
    for taken in ("zhangsan@example.com", "san.zhang@example.com", "all@example.com"):
        with pytest.raises(ProviderError):
            provider.create_group(MailGroup(taken, "x", members=("lisi@example.com",)))
    assert set(live()) == {"all@example.com", "dept-1@example.com"}
    provider.delete_group("dept-1@example.com")
    assert provider.check_addresses(["dept-1@example.com"]) == {
        "dept-1@example.com": AddressKind.FREE
    }


def test_v2_groups(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v2")
    p = build(emu)
    assert isinstance(p, ExmailV2Provider)
    group = MailGroup(
        "dev@example.com",
        "研发群",
        members=("zhangsan@example.com",),
        departments=("研发中心/移动部",),
        posting=GroupPosting.ALLOW_LIST,
        allow_list=("lisi@example.com",),
    )
    p.create_group(group)
    assert p.get_group("dev@example.com") == group
    with pytest.raises(AlreadyExistsError):
        p.create_group(group)
    changed = MailGroup(
        "dev@example.com", "研发", members=("lisi@example.com",), groups=("all@example.com",)
    )
    p.update_group(changed)
    got = p.get_group("dev@example.com")
    assert got is not None and got.name == "研发" and got.groups == ("all@example.com",)
    assert got.members == ("lisi@example.com",) and got.posting is GroupPosting.COMPANY
    p.delete_group("dev@example.com")
    assert p.get_group("dev@example.com") is None
    with pytest.raises(NotFoundError):
        p.delete_group("dev@example.com")
    p.close()


def test_v1_groups(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v1")
    p = build(emu)
    assert isinstance(p, ExmailV1Provider)
    p.create_group(
        MailGroup(
            "dev@example.com",
            "研发群",
            members=("zhangsan@example.com",),
            posting=GroupPosting.ANYONE,
        )
    )
    assert p.check_addresses(["dev@example.com"]) == {"dev@example.com": AddressKind.GROUP}
    p.add_group_members("dev@example.com", ["lisi@example.com", "wangwu@example.com"])
    p.remove_group_members("dev@example.com", ["zhangsan@example.com"])
    groups = {g["groupid"]: g for g in emu.state()["groups"]}
    assert groups["dev@example.com"]["userlist"] == ["lisi@example.com", "wangwu@example.com"]
    assert groups["dev@example.com"]["allow_type"] == int(GroupPosting.ANYONE)
    p.delete_group("dev@example.com")
    assert "dev@example.com" not in {g["groupid"] for g in emu.state()["groups"]}
    with pytest.raises(FatalProviderError):
        p.create_group(MailGroup("x@example.com", "x", departments=("市场部",)))
    p.close()


def test_v1_allow_list_group(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v1")
    p = build(emu)
    assert isinstance(p, ExmailV1Provider)
    p.create_group(
        MailGroup(
            "ops@example.com",
            "运维",
            members=("lisi@example.com",),
            posting=GroupPosting.ALLOW_LIST,
            allow_list=("zhangsan@example.com",),
        )
    )

    def allowed() -> list[str]:
        groups = {g["groupid"]: g for g in emu.state()["groups"]}
        return list(groups["ops@example.com"]["allow_userlist"])

    assert allowed() == ["zhangsan@example.com"]
    p.add_group_allow_list("ops@example.com", ["wangwu@example.com", "lisi@example.com"])
    p.remove_group_allow_list("ops@example.com", ["zhangsan@example.com"])
    assert allowed() == ["wangwu@example.com", "lisi@example.com"]
    with pytest.raises(FatalProviderError):  # the list may not become empty
        p.remove_group_allow_list("ops@example.com", ["wangwu@example.com", "lisi@example.com"])
    p.close()


def test_v2_department_search_and_id_map(emulator_factory: Callable[..., RunningEmulator]) -> None:
    emu = emulator_factory("v2")
    p = build(emu)
    assert isinstance(p, ExmailV2Provider)
    found = p.search_departments("平台部")
    assert [(d.name, d.path) for d in found] == [("平台部", "研发中心/平台部")]
    assert found[0].id == p.department_id("研发中心/平台部")
    assert p.department_path(found[0].id) == "研发中心/平台部"
    assert {d.path for d in p.search_departments("部", fuzzy=True)} >= {"市场部", "人力资源部"}
    # A department made behind the client's back is found by re-reading the tree.
    other = build(emu)
    other.create_department("新部门")
    other.close()
    p.create_user(Mailbox("x@example.com", "某人", departments=("新部门",)), password=PASSWORD)
    got = p.get_user("x@example.com")
    assert got is not None and got.departments == ("新部门",)
    with pytest.raises(NotFoundError):
        p.department_id("没有这个部门")
    p.close()
