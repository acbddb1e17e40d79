"""Issue 10: a damaged CSV export never makes people vanish from the snapshot.

Each test converges Exmail with a clean export first (the real ``sync`` against the emulator
over HTTP), then writes a damaged GBK export and runs the real ``ingest`` / ``sync``: the
damage is named (file, line, column), the damaged row is quarantined or the source refused,
and nobody whose row is in the file is disabled, moved to the root or blanked.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import COLUMNS, ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(180)


def gbk_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_gbk(env: ApplyEnv, text: str | bytes) -> None:
    data = text if isinstance(text, bytes) else text.encode("gb18030")
    (env.root / "hr.csv").write_bytes(data)


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows() + people(6))
    r = e.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    e.assert_converged()
    return e


def ingest_json(env: ApplyEnv) -> tuple[int, dict[str, Any]]:
    r = env.cli("ingest", "--json")
    try:
        return r.exit_code, json.loads(r.stdout)
    except json.JSONDecodeError:
        return r.exit_code, {"output": r.output}


def enabled(env: ApplyEnv) -> dict[str, bool]:
    return {e: int(u.get("enable", 1)) == 1 for e, u in env.users().items()}


def sync_keeps_everyone(env: ApplyEnv) -> dict[str, Any]:
    before = enabled(env)
    r = env.cli("sync", "--json")
    assert r.exit_code in (0, 1), r.output
    after = enabled(env)
    lost = sorted(e for e, on in before.items() if on and not after.get(e, False))
    assert lost == [], f"disabled by a damaged export: {lost}"
    try:
        out: dict[str, Any] = json.loads(r.stdout)
    except json.JSONDecodeError:
        out = {"output": r.output}
    return out


def problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    got = doc.get("problems")
    assert isinstance(got, list), doc
    return got


def test_an_unclosed_quote_quarantines_its_row_and_keeps_every_row_after_it(
    env: ApplyEnv,
) -> None:
    lines = gbk_text(env.rows).split("\r\n")
    # line 1 is the header; line 5 is T00100's row (E0001, E0002, E0004 come first)
    assert lines[4].startswith("T00100,")
    lines[4] = lines[4].replace("T00100,", 'T00100,"', 1)
    write_gbk(env, "\r\n".join(lines))
    code, doc = ingest_json(env)
    assert code == 0, doc
    assert doc["counts"]["people"] == 8 and doc["counts"]["gone"] == 0
    assert doc["quarantined_ids"] == ["T00100"]
    reasons = " ".join(p["reason"] for p in problems(doc))
    assert "line 5" in reasons and "quote" in reasons and "column 8" in reasons
    sync_keeps_everyone(env)


def test_a_short_row_is_quarantined_not_moved_to_the_root_nor_blanked(env: ApplyEnv) -> None:
    lines = gbk_text(env.rows).split("\r\n")
    assert lines[1].startswith("E0001,")
    lines[1] = "E0001,张三"
    write_gbk(env, "\r\n".join(lines))
    code, doc = ingest_json(env)
    assert code == 0, doc
    assert doc["quarantined_ids"] == ["E0001"]
    reason = problems(doc)[0]["reason"]
    assert "2 values" in reason and "9 columns" in reason and "line 2" in reason
    before = env.users()["zhangsan@example.com"]
    sync_keeps_everyone(env)
    after = env.users()["zhangsan@example.com"]
    assert after.get("position") == before.get("position") == "架构师"
    assert after.get("paths") == before.get("paths")


def test_a_file_cut_in_the_middle_of_a_row_is_refused(env: ApplyEnv) -> None:
    text = gbk_text(env.rows)
    cut = text[: text.index("T00102,") + len("T00102,测试员102,t1")]
    write_gbk(env, cut)
    code, doc = ingest_json(env)
    assert code == 1, doc
    assert "ends in the middle of a row" in doc["output"] and "line 7" in doc["output"]
    mark = env.emulator.calls()[-1]["seq"]
    sync_keeps_everyone(env)
    assert [c for c in env.write_calls(int(mark))] == []


def test_a_nul_byte_quarantines_its_row(env: ApplyEnv) -> None:
    lines = gbk_text(env.rows).split("\r\n")
    lines[5] = lines[5].replace("测试员101", "测试员\x00101")
    write_gbk(env, "\r\n".join(lines))
    code, doc = ingest_json(env)
    assert code == 0, doc
    assert doc["quarantined_ids"] == ["T00101"]
    reason = problems(doc)[0]["reason"]
    assert "NUL" in reason and "line 6" in reason and "column 11" in reason
    sync_keeps_everyone(env)


def test_undecodable_bytes_are_named_by_line_and_column(env: ApplyEnv) -> None:
    data = gbk_text(env.rows).encode("gb18030")
    at = data.index(b"T00103")
    write_gbk(env, data[:at] + b"T0\xff\xff0103" + data[at + 6 :])
    code, doc = ingest_json(env)
    assert code == 1, doc
    out = doc["output"]
    assert "line 8, column 3" in out and "0xff" in out and "hr.csv" in out
    assert "base64" not in out
    sync_keeps_everyone(env)


def test_a_file_cut_inside_the_last_value_of_a_row_is_refused(env: ApplyEnv) -> None:
    # The cut leaves T00102 with every value (its status "active" cut to "acti"): only the
    # missing final line break tells that the rows after it are gone.
    text = gbk_text(env.rows)
    start = text.index("T00102,")
    end = text.index("\r\n", start)
    assert text[start:end].endswith(",active")
    write_gbk(env, text[: end - 2])
    code, doc = ingest_json(env)
    assert code == 1, doc
    assert "does not end with a line break" in doc["output"]
    sync_keeps_everyone(env)


def test_a_nul_byte_in_a_row_an_unclosed_quote_swallowed_is_still_found(env: ApplyEnv) -> None:
    lines = gbk_text(env.rows).split("\r\n")
    lines[4] = lines[4].replace("T00100,", 'T00100,"', 1)
    lines[6] = lines[6].replace("测试员102", "测试员\x00102")
    write_gbk(env, "\r\n".join(lines))
    code, doc = ingest_json(env)
    assert code == 0, doc
    assert doc["quarantined_ids"] == ["T00100", "T00102"]
    assert "line 7, column 11: a NUL byte" in problems(doc)[1]["reason"]
    sync_keeps_everyone(env)
