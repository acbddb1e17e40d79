"""The guess of the addresses a plan will create, checked with Exmail while the diff runs."""

from __future__ import annotations

from datetime import UTC, datetime

from syncengine.domain import IdentityLink, Mailbox, MailboxState, Person, Status
from syncengine.planner import Desired, diff
from syncengine.policy import Policy
from syncengine.service.address_checks import known_addresses, likely_new_addresses
from syncengine.service.planning import _addresses_to_create

NOW = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def test_the_guess_is_what_the_plan_creates() -> None:
    policy = Policy(domain="example.com")
    state = MailboxState(
        (
            Mailbox("zhangsan@example.com", "张三", ext_id="E1"),
            Mailbox("old.li@example.com", "李四", ext_id="E2", aliases=("li@example.com",)),
            Mailbox("wangwu@example.com", "王五", ext_id="E3"),
        ),
        groups=("all@example.com",),
    )
    links = {"E1": IdentityLink("E1", "zhangsan@example.com", NOW)}
    people = (
        Person("E1", "张三", "zhangsan@example.com"),  # unchanged: nothing new
        Person("E2", "李四", "Lisi.New@Example.com", aliases=("li@example.com",)),  # new primary
        Person("E3", "王五", "wangwu.new@example.com", status=Status.TERMINATED),  # leaving
        Person("E4", "赵六"),  # a hire without an address: one is generated
        Person("E5", "孙七", "sunqi@example.com", aliases=("qi@example.com",)),  # a hire
    )
    desired = Desired(people=people)
    known = known_addresses(state)
    guess = likely_new_addresses(desired, state, links, policy, policy.today(NOW), known)
    planned = _addresses_to_create(diff(desired, state, links, policy, NOW), state)
    assert (
        guess
        == planned
        == {
            "lisi.new@example.com",
            "zhaoliu@example.com",
            "sunqi@example.com",
            "qi@example.com",
        }
    )


def test_known_addresses_are_every_primary_alias_and_group_lower_cased() -> None:
    state = MailboxState(
        (Mailbox("A@Example.com", "A", aliases=("B@example.com",)),), groups=("G@example.com",)
    )
    assert known_addresses(state) == {"a@example.com", "b@example.com", "g@example.com"}


def test_early_checks_give_the_answers_or_raise_the_error_in_the_caller() -> None:
    from syncengine.domain import AddressKind
    from syncengine.errors import RetriableProviderError
    from syncengine.service.address_checks import EarlyChecks

    asked: list[list[str]] = []

    def check(addresses: list[str]) -> dict[str, AddressKind]:
        asked.append(addresses)
        return {a.upper(): AddressKind.GROUP for a in addresses}

    assert EarlyChecks(check, {"b@x.com", "a@x.com"}).result() == {
        "a@x.com": AddressKind.GROUP,
        "b@x.com": AddressKind.GROUP,
    }
    assert asked == [["a@x.com", "b@x.com"]]
    assert EarlyChecks(check, ()).result() == {} and len(asked) == 1  # nothing to ask: no call

    def failing(addresses: list[str]) -> dict[str, AddressKind]:
        raise RetriableProviderError("Exmail is busy", call="user/batchcheck")

    early = EarlyChecks(failing, {"a@x.com"})
    try:
        early.result()
    except RetriableProviderError as exc:
        assert "user/batchcheck" in str(exc)
    else:
        raise AssertionError("the check's error was not raised")


def test_the_guess_without_the_state_is_the_address_changes_and_generated_addresses() -> None:
    """What can be checked while Exmail is still being read: a subset of the full guess,
    nothing that needs the state (aliases, unlinked people who may own a mailbox already) or
    pypinyin (generated addresses)."""
    from syncengine.service.address_checks import likely_new_by_links

    policy = Policy(domain="example.com")
    state = MailboxState(
        (
            Mailbox("zhangsan@example.com", "张三", ext_id="E1"),
            Mailbox("old.li@example.com", "李四", ext_id="E2"),
            Mailbox("wangwu@example.com", "王五", ext_id="E3"),
            Mailbox("zhouba@example.com", "周八", ext_id="E6"),
        )
    )
    links = {
        "E1": IdentityLink("E1", "zhangsan@example.com", NOW),
        "E2": IdentityLink("E2", "old.li@example.com", NOW),
        "E3": IdentityLink("E3", "wangwu@example.com", NOW),
    }
    people = (
        Person("E1", "张三", "ZhangSan@example.com", aliases=("san@example.com",)),  # same
        Person("E2", "李四", "Lisi.New@Example.com"),  # an address change
        Person("E3", "王五", "wangwu.new@example.com", status=Status.TERMINATED),  # leaving
        Person("E4", "赵六"),  # a hire without an address: generated after the read
        Person("E5", "孙七", "sunqi@example.com"),  # unlinked: left to the state
        Person("E6", "周八", "zhouba@example.com"),  # unlinked, owns a mailbox already
    )
    desired = Desired(people=people)
    today = policy.today(NOW)
    early = likely_new_by_links(desired, links, policy, today)
    assert early == {"lisi.new@example.com"}
    full = likely_new_addresses(desired, state, links, policy, today, known_addresses(state))
    assert early <= full
    assert full - early == {"sunqi@example.com", "san@example.com", "zhaoliu@example.com"}
    # A first run (no links at all) checks nothing before the state is read.
    assert likely_new_by_links(desired, {}, policy, today) == set()


def test_later_checks_ask_only_what_earlier_ones_did_not_and_answer_for_both() -> None:
    import threading

    from syncengine.domain import AddressKind
    from syncengine.errors import RetriableProviderError
    from syncengine.service.address_checks import EarlyChecks

    asked: list[list[str]] = []

    def check(addresses: list[str]) -> dict[str, AddressKind]:
        asked.append(addresses)
        return {a: AddressKind.GROUP if a.startswith("g") else AddressKind.FREE for a in addresses}

    first = EarlyChecks(check, {"a@x.com", "g@x.com"})
    both = EarlyChecks(check, {"g@x.com", "b@x.com"}, before=first)
    assert both.addresses == {"a@x.com", "b@x.com", "g@x.com"}
    assert both.result() == {
        "a@x.com": AddressKind.FREE,
        "b@x.com": AddressKind.FREE,
        "g@x.com": AddressKind.GROUP,
    }
    assert sorted(asked) == [["a@x.com", "g@x.com"], ["b@x.com"]]

    # The earlier checks fail: the error is raised once the later ones are done too.
    release = threading.Event()
    done: list[str] = []

    def failing(addresses: list[str]) -> dict[str, AddressKind]:
        raise RetriableProviderError("Exmail is busy", call="user/batchcheck")

    def slow(addresses: list[str]) -> dict[str, AddressKind]:
        release.wait(10)
        done.append("slow")
        return {}

    later = EarlyChecks(slow, {"c@x.com"}, before=EarlyChecks(failing, {"a@x.com"}))
    threading.Timer(0.2, release.set).start()
    try:
        later.result()
    except RetriableProviderError:
        assert done == ["slow"]  # the provider is no thread's any more
    else:
        raise AssertionError("the earlier check's error was not raised")
