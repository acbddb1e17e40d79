"""Sign-off in the browser (issue 12): the real ``syncengine serve`` process, the emulator over
real HTTP, a SQLite staging file, and Playwright driving the system Chromium through the
review pages: sign in, filter, approve, see the decision and its audit row, reject, and the
refusals (wrong password, missing CSRF token, stale plan, edited plan). Also the approval
policy: ``apply`` and the nightly ``sync`` wait for an approval."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from bench.render import CHROMIUM
from syncengine import service
from syncengine.domain import UserUpdate
from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_BLOCKED
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_plan_review import DELETE_ADMIN, forge
from tests.e2e.test_serve_restart import free_port, serve_process
from tests.e2e.test_serve_support import make_env, seed_rows

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

PASSWORD = "correct horse battery 1"


def review_table(**extra: Any) -> dict[str, Any]:
    return {
        "lang": "en",
        "require_approval": "removals",
        "approvers": [{"name": "wang.hr", "password_hash": PasswordHasher().hash(PASSWORD)}],
        **extra,
    }


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    tables = {"review": review_table(), "policy": {"max_shrink_share": 1.0}}
    return make_env(ApplyEnv(tmp_path, emulator_factory("v2")), tables=tables)


def plan_without(env: ApplyEnv, *gone: str, out: str = "plan.json") -> tuple[Path, dict[str, Any]]:
    """HR loses ``gone``; ingest and plan; the plan file and the plan's --json summary."""
    env.write([r for r in seed_rows() if r["employee_id"] not in gone])
    assert env.cli("ingest").exit_code == 0
    path = env.root / out
    r = env.cli("plan", "--out", str(path), "--json")
    assert r.exit_code in (0, 3), r.output
    return path, json.loads(r.output)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def sign_in(page: Any, base: str, password: str = PASSWORD) -> Any:
    page.goto(f"{base}/review/")
    assert page.url.endswith("/review/login")
    page.fill("#name", "wang.hr")
    page.fill("#password", password)
    with page.expect_navigation() as nav:
        page.click("#signin")
    return nav.value


def test_sign_off_in_the_browser(env: ApplyEnv, browser: Any) -> None:
    plan_file, made = plan_without(env, "E0002")  # 李四 leaves: a removal
    plan_id, checksum = made["plan_id"], made["checksum"]
    r = env.cli("apply", str(plan_file))
    assert r.exit_code == EXIT_BLOCKED and "waiting for approval" in r.output, r.output

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve_process(env, port):
        context = browser.new_context()
        page = context.new_page()
        # Wrong password: refused, no session.
        answer = sign_in(page, base, "wrong password 123")
        assert answer.status == 401 and "Wrong name or password" in page.inner_text("#error")
        assert not [c for c in context.cookies() if c["name"] == "syncengine_review"]
        # Right password: the list of plans waiting, with this one.
        sign_in(page, base)
        assert page.url.endswith("/review/")
        session = [c for c in context.cookies() if c["name"] == "syncengine_review"]
        assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        assert session[0]["secure"]
        assert f"#{plan_id}" in page.inner_text("#pending")
        page.click(f"text=#{plan_id}")
        assert checksum[:12] in page.inner_text("h1")
        assert "disables or deletes 1" in page.inner_text("#approval")
        # The filter: only 李四's row stays.
        page.fill("#filter", "lisi")
        rows = page.locator("tr[data-q]:not(.hide)")
        assert rows.count() == 1 and "lisi@example.com" in rows.first.inner_text()
        # A POST without the CSRF token is refused and records nothing.
        answer = page.request.post(
            f"{base}/review/plans/{plan_id}/decision",
            form={"decision": "approved", "checksum": checksum, "comment": "sneaky"},
        )
        assert answer.status == 403 and "CSRF" in answer.text()
        # Approve with a comment.
        page.fill("#comment", "李四 left on the 28th; checked with HR")
        with page.expect_navigation():
            page.click("#approve")
        assert page.locator("#flash").count() == 1, page.inner_text("body")[:2000]
        assert "Approved." in page.inner_text("#flash")
        decision = page.inner_text("#decisions")
        assert "approved" in decision and "wang.hr" in decision and checksum[:12] in decision
        assert "sneaky" not in decision
        context.close()

    rows = json.loads(env.cli("audit", "--json").output)
    approvals = [x for x in rows if x["kind"] == "approve_plan"]
    assert len(approvals) == 1
    assert approvals[0]["actor"] == "approver:wang.hr" and approvals[0]["target"] == checksum
    assert approvals[0]["errmsg"] == "李四 left on the 28th; checked with HR"
    assert approvals[0]["plan_id"] == plan_id
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    assert env.users()["lisi@example.com"]["enable"] in (0, "0")


def test_reject_stale_and_edited_plans_are_refused(env: ApplyEnv, browser: Any) -> None:
    rejected_file, rejected = plan_without(env, "E0002", out="a.json")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serve_process(env, port):
        page = browser.new_context().new_page()
        sign_in(page, base)
        # Reject: apply stays refused, naming who and why.
        page.goto(f"{base}/review/plans/{rejected['plan_id']}")
        page.fill("#comment", "wrong export")
        with page.expect_navigation():
            page.click("#reject")
        assert "Rejected." in page.inner_text("#flash")
        r = env.cli("apply", str(rejected_file))
        assert r.exit_code == EXIT_BLOCKED and "rejected by wang.hr (wrong export)" in r.output

        # Stale: Exmail changes, a newer plan is made; the older one can no longer be signed.
        old_file, old = plan_without(env, "E0003", out="old.json")
        provider = service.build_provider(env.config())
        try:
            provider.update_user("zhangsan@example.com", UserUpdate(position="手改"))
        finally:
            provider.close()
        plan_without(env, "E0003", out="new.json")
        page.goto(f"{base}/review/plans/{old['plan_id']}")
        assert page.locator("#approve").count() == 0  # the page says why instead
        assert "stale" in page.inner_text("#approval")
        page.goto(f"{base}/review/")  # the session's token, from the sign-out form
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        answer = page.request.post(
            f"{base}/review/plans/{old['plan_id']}/decision",
            form={"decision": "approved", "checksum": old["checksum"], "csrf": csrf or ""},
        )
        assert answer.status == 409 and "stale" in answer.text()

        # Edited: someone rewrites a stored plan (and its unkeyed checksum) in the database.
        _, latest = plan_without(env, "E0003", out="latest.json")
        document = json.loads(old_file.read_text(encoding="utf-8"))
        forged = forge(document, DELETE_ADMIN)
        text = json.dumps(forged, ensure_ascii=False)
        with sqlite3.connect(env.db_path) as db:  # the document and its hash, as a forger would
            db.execute(
                "UPDATE plan_documents SET document = ?, sha256 = ? WHERE plan_id = ?",
                (text, hashlib.sha256(text.encode("utf-8")).hexdigest(), latest["plan_id"]),
            )
            db.execute(
                "UPDATE plans SET checksum = ? WHERE id = ?",
                (forged["checksum"], latest["plan_id"]),
            )
        page.goto(f"{base}/review/plans/{latest['plan_id']}")
        page.fill("#comment", "looks fine")
        with page.expect_navigation() as nav:
            page.click("#approve")
        answer_page = nav.value
        assert answer_page.status == 409
        assert "signature" in page.inner_text("#error")
    rows = json.loads(env.cli("audit", "--json").output)
    assert [x["result"] for x in rows if x["kind"] in ("approve_plan", "reject_plan")] == [
        "rejected"
    ]


def test_nightly_run_waits_for_approval_notifies_then_applies(env: ApplyEnv) -> None:
    from syncengine import approvals
    from tests.e2e.test_sync import write
    from tests.fixtures.notify_receiver import notification_receiver

    with notification_receiver() as rx:
        write(env, [r for r in seed_rows() if r["employee_id"] != "E0002"], rx)
        r = env.cli("sync", "--json")
        assert r.exit_code == EXIT_BLOCKED, r.output
        report = json.loads(r.stdout)
        assert "waiting for approval" in report["error"]
        note = rx.wait_for(1)[0]
        assert note.signature_ok and note.document["event"] == "blocked"
        assert "waiting for approval" in json.dumps(note.document, ensure_ascii=False)
    assert env.users()["lisi@example.com"]["enable"] in (1, "1")
    # An approver signs off the plan the run made; the next run makes the same plan again
    # (same changes, same directory) and applies it.
    repo = service.open_staging(env.config())
    try:
        record = approvals.waiting_plans(repo)[0]
        approvals.decide(env.config(), repo, record, decision="approved", approver="wang.hr",
                         comment="ok")  # fmt: skip
    finally:
        repo.close()
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    assert env.users()["lisi@example.com"]["enable"] in (0, "0")
