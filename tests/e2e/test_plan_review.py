"""Plan review end to end (issue 12): one artifact many views, checksum prefixes, signed plans
and apply-time enforcement. The real CLI, a real SQLite file, the emulator over real HTTP.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_ERROR, EXIT_FAILED_ACTIONS
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows() + people(4))
    return e


def checksum_in_html(page: str) -> str:
    found = re.search(r'data-checksum="([0-9a-f]{64})"', page)
    assert found, "the page names no checksum"
    return found.group(1)


def forge(document: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """What someone editing the file does: add an action and recompute the unkeyed sha256."""
    data = json.loads(json.dumps(document))
    data["actions"].append(action)
    body = {k: v for k, v in data.items() if k not in ("checksum", "signature")}
    blob = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    data["checksum"] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
    return data


DELETE_ADMIN = {
    "key": "delete_user:admin@example.com",
    "kind": "delete_user",
    "target": "admin@example.com",
    "employee_id": "",
    "reason": "cleanup",
    "changes": {},
    "depends_on": [],
    "mailbox": None,
    "update": None,
    "new_path": None,
    "alias": None,
    "link": None,
    "password": None,
}


def test_out_html_writes_the_html_of_the_same_plan_beside_its_json(env: ApplyEnv) -> None:
    assert env.cli("ingest").exit_code == 0
    page_path = env.root / "review.html"
    r = env.cli("plan", "--out", str(page_path))  # no --format: inferred from .html
    assert r.exit_code == 0, r.output
    page = page_path.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    json_path = env.root / "review.json"
    assert json_path.exists(), r.output
    document = json.loads(json_path.read_text(encoding="utf-8"))
    assert checksum_in_html(page) == document["checksum"]
    # The approver copies the 12 characters the page shows; apply takes them.
    shown = checksum_in_html(page)[:12]
    assert shown in page
    r = env.cli("apply", str(json_path), "--checksum", shown, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["status"] == "applied"


def test_out_infers_text_and_json_from_the_extension(env: ApplyEnv) -> None:
    assert env.cli("ingest").exit_code == 0
    r = env.cli("plan", "--out", str(env.root / "p.txt"))
    assert r.exit_code == 0, r.output
    text = (env.root / "p.txt").read_text(encoding="utf-8")
    assert not text.lstrip().startswith("{") and "t100@example.com" in text
    r = env.cli("plan", "--out", str(env.root / "p.json"))
    assert json.loads((env.root / "p.json").read_text(encoding="utf-8"))["actions"]
    r = env.cli("plan", "--out", str(env.root / "p.html"), "--format", "json")
    assert r.exit_code == 64 and "--format json" in r.output and ".html" in r.output


def test_checksum_prefix_of_12_or_more_is_accepted_else_refused(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    checksum = json.loads(plan_file.read_text(encoding="utf-8"))["checksum"]
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(plan_file), "--checksum", checksum[:11])
    assert r.exit_code == EXIT_ERROR and "at least 12" in r.output
    wrong = ("0" if checksum[0] != "0" else "1") + checksum[1:12]
    r = env.cli("apply", str(plan_file), "--checksum", wrong)
    assert r.exit_code == EXIT_ERROR and "not the reviewed" in r.output
    r = env.cli("apply", str(plan_file), "--checksum", checksum[:12] + "zz")
    assert r.exit_code == EXIT_ERROR and "hex" in r.output
    assert env.write_calls(since=mark) == []
    r = env.cli("apply", str(plan_file), "--checksum", checksum[:12].upper())
    assert r.exit_code == 0, r.output


def test_show_renders_a_saved_file_or_a_stored_plan_by_id_or_prefix(env: ApplyEnv) -> None:
    assert env.cli("ingest").exit_code == 0
    plan_file = env.root / "plan.json"
    r = env.cli("plan", "--out", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    made = json.loads(r.output)
    checksum, plan_id = made["checksum"], made["plan_id"]
    r = env.cli("show", str(plan_file), "--format", "html")
    assert r.exit_code == 0, r.output
    assert checksum_in_html(r.output) == checksum
    r = env.cli("show", str(plan_id), "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["checksum"] == checksum
    r = env.cli("show", checksum[:12], "--format", "summary")
    assert r.exit_code == 0, r.output
    assert checksum[:12] in r.output and "4" in r.output
    r = env.cli("show", str(plan_file))  # text by default
    assert r.exit_code == 0 and "t100@example.com" in r.output
    r = env.cli("show", "999")
    assert r.exit_code == EXIT_ERROR and "999" in r.output
    r = env.cli("show", "abc")
    assert r.exit_code == EXIT_ERROR and "at least 12" in r.output


def test_edited_plan_file_that_deletes_admin_is_refused_before_any_write(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    forged = forge(json.loads(plan_file.read_text(encoding="utf-8")), DELETE_ADMIN)
    edited = env.root / "edited.json"
    edited.write_text(json.dumps(forged, ensure_ascii=False), encoding="utf-8")
    mark = len(env.emulator.calls())
    r = env.cli("apply", str(edited), "--yes")
    assert r.exit_code == EXIT_ERROR, r.output
    assert "signature" in r.output and "edited" in r.output
    assert env.write_calls(since=mark) == []
    assert "admin@example.com" in env.users()
    # Its page says so, where the approver looks.
    r = env.cli("show", str(edited), "--format", "html", "--lang", "en")
    assert r.exit_code == 0 and "NO: the plan was changed after this engine made it" in r.output
    r = env.cli("show", str(plan_file), "--format", "html", "--lang", "en")
    assert '<td id="signature"><code>yes</code>' in r.output
    # Unsigned (signature removed) is refused the same way.
    del forged["signature"]
    edited.write_text(json.dumps(forged, ensure_ascii=False), encoding="utf-8")
    r = env.cli("apply", str(edited), "--yes")
    assert r.exit_code == EXIT_ERROR and "signature" in r.output
    assert env.write_calls(since=mark) == []


def test_the_key_file_is_0600_and_a_loose_one_is_refused(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    key = env.root / "plan-signing.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    r = env.cli("apply", str(plan_file))
    assert r.exit_code == EXIT_ERROR and "0600" in r.output and str(key) in r.output
    assert key.read_text(encoding="utf-8") not in r.output


def test_a_signed_action_against_policy_is_refused_at_apply_and_audited(env: ApplyEnv) -> None:
    """Defence in depth: even a plan signed by the engine (a planner bug) cannot delete a
    protected account; the executor re-checks every action before its call."""
    from syncengine import signing
    from syncengine.plan import Plan

    plan_file = env.ingest_and_plan()
    forged = forge(json.loads(plan_file.read_text(encoding="utf-8")), DELETE_ADMIN)
    foreign = dict(DELETE_ADMIN, key="update_user:x@other.org", kind="update_user",
                   target="x@other.org", update={"position": "x"})  # fmt: skip
    forged = forge(forged, foreign)
    plan = Plan.from_dict(forged, source="test")
    signed = signing.sign_plan(plan, signing.plan_key(env.config()))
    path = env.root / "signed.json"
    path.write_text(signed.to_json(), encoding="utf-8")
    r = env.cli("apply", str(path), "--json")
    assert r.exit_code == EXIT_FAILED_ACTIONS, r.output
    failures = {f["key"]: f for f in json.loads(r.output)["applied"]["failures"]}
    assert "protected" in failures["delete_user:admin@example.com"]["reason"]
    assert "other.org" in failures["update_user:x@other.org"]["reason"]
    assert "admin@example.com" in env.users()
    assert "t100@example.com" in env.users()  # the rest of the plan went through
    r = env.cli("audit", "--email", "admin@example.com", "--json")
    rows = json.loads(r.output)
    assert [x["result"] for x in rows] == ["refused"]
    assert "protected" in rows[0]["errmsg"]
    assert not [c for c in env.write_calls(since=0) if "admin@" in json.dumps(c)]


def test_only_with_an_unknown_or_quarantined_id_is_an_error(env: ApplyEnv) -> None:
    from tests.e2e.test_apply_support import person

    env.write([*env.rows, person("Q0001", "", "q@example.com")])  # no name: quarantined
    assert env.cli("ingest").exit_code == 0
    r = env.cli("plan", "--only", "NOPE")
    assert r.exit_code == EXIT_ERROR, r.output
    assert "NOPE" in r.output and "not in the current HR snapshot" in r.output
    r = env.cli("plan", "--only", "Q0001")
    assert r.exit_code == EXIT_ERROR, r.output
    assert "Q0001 is quarantined" in r.output and "name is missing" in r.output
    r = env.cli("plan", "--only", "T00100")
    assert r.exit_code == 0 and "T00100" in r.output


def test_page_names_leavers_and_gives_quarantine_reasons_in_chinese(env: ApplyEnv) -> None:
    from tests.e2e.test_apply_support import person

    first = env.ingest_and_plan()
    assert env.cli("apply", str(first)).exit_code == 0
    # T00100 leaves HR entirely; Q0001 arrives without a name (quarantined).
    env.write([r for r in env.rows if r["employee_id"] != "T00100"]
              + [person("Q0001", "", "q@example.com")])  # fmt: skip
    assert env.cli("ingest").exit_code == 0
    r = env.cli("plan", "--out", str(env.root / "leave.html"), "--lang", "zh")
    assert r.exit_code in (0, 3), r.output
    page = (env.root / "leave.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page and "要停用的邮箱" in page
    assert "T00100 测试员100" in page  # the leaver's name, from the snapshot that had them
    assert "Q0001" in page and "name is missing" in page
    sections = re.findall(r'data-section="([a-z_]+)"', page)
    assert sections[0] == "users_disable", sections  # removals first
    r = env.cli("show", str(env.root / "leave.json"), "--format", "html", "--lang", "en")
    assert r.exit_code == 0 and '<html lang="en">' in r.output and "T00100 测试员100" in r.output
