"""``syncengine ingest`` end to end: the samples into a real staging database (SQLite and
PostgreSQL), through the click command line."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncengine import service
from syncengine.cli import main
from syncengine.config import load_config
from syncengine.staging.repository import Repository

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE_URL_LINE = 'url = "sqlite:///syncengine.db"'


@pytest.fixture
def demo(tmp_path: Path, staging_url: str) -> Path:
    """The samples copied to a temp dir, their config pointed at a fresh staging database."""
    folder = tmp_path / "demo"
    folder.mkdir()
    for name in ("hr-export.csv", "hr-export.xlsx", "departments.csv"):
        shutil.copy(SAMPLES / name, folder / name)
    text = (SAMPLES / "syncengine.toml").read_text("utf-8")
    assert SAMPLE_URL_LINE in text
    config = folder / "syncengine.toml"
    config.write_text(text.replace(SAMPLE_URL_LINE, f"url = {json.dumps(staging_url)}"), "utf-8")
    return config


def ingest(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "ingest", *args])


def ingest_json(config: Path) -> dict[str, object]:
    result = ingest(config, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def edit_config(config: Path, old: str, new: str) -> None:
    text = config.read_text("utf-8")
    assert old in text
    config.write_text(text.replace(old, new), "utf-8")


def read_export(folder: Path) -> list[dict[str, str]]:
    text = (folder / "hr-export.csv").read_bytes().decode("gb18030")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def write_export(folder: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    (folder / "hr-export.csv").write_bytes(buffer.getvalue().encode("gbk"))


@pytest.fixture
def repo_of() -> Iterator[Callable[[Path], Repository]]:
    """Open the staging database of a config (closed at the end of the test)."""
    opened: list[Repository] = []

    def open_repo(config: Path) -> Repository:
        repo = service.open_staging(load_config(config))
        opened.append(repo)
        return repo

    yield open_repo
    for repo in opened:
        repo.close()


def test_ingest_the_samples(demo: Path) -> None:
    result = ingest(demo)
    assert result.exit_code == 0, result.output + result.stderr
    out = result.stdout
    assert "Read 301 records from CSV file" in out
    assert "(the first one)" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")
             and len(line.split()) == 2}  # fmt: skip
    assert lines["people"] == "298"
    assert lines["departments"] == "20"
    assert lines["new"] == "298"
    assert lines["quarantined"] == "2"
    assert "row 43, 手机, employee E0042: not a mainland mobile number" in out
    assert "(value '1380013800')" in out
    assert out.count("employee E0121: duplicate employee id with different data") == 2

    second = ingest_json(demo)
    counts = second["counts"]
    assert counts == {"rows": 301, "people": 298, "departments": 20, "new": 0, "changed": 0,
                      "gone": 0, "quarantined": 2, "problems": 3}  # fmt: skip
    assert second["previous_snapshot_id"] is not None
    assert second["quarantined_ids"] == ["E0042", "E0121"]
    problems = second["problems"]
    assert isinstance(problems, list)
    assert {"row": 43, "field": "手机", "value": "1380013800", "employee_id": "E0042",
            "reason": problems[0]["reason"]} == problems[0]  # fmt: skip


def test_second_ingest_reports_new_changed_gone_and_quarantine_is_not_gone(
    demo: Path, repo_of: Callable[[Path], Repository]
) -> None:
    first = ingest_json(demo)
    rows = read_export(demo.parent)
    by_id = {r["工号"]: r for r in rows}
    by_id["E0005"]["职位"] = "区域经理"  # changed
    by_id["E0020"]["手机"] = "123"  # now a bad row: quarantined, NOT gone
    rows.remove(by_id["E0010"])  # gone
    rows.append({**by_id["E0011"], "工号": "E0999", "姓名": "新同事", "邮箱": "xin@example.com"})
    write_export(demo.parent, rows)

    second = ingest_json(demo)
    assert second["previous_snapshot_id"] == first["snapshot_id"]
    counts = second["counts"]
    assert isinstance(counts, dict)
    assert (counts["new"], counts["changed"], counts["gone"]) == (1, 1, 1)
    assert counts["quarantined"] == 3
    assert counts["people"] == 298 - 1 - 1 + 1

    repo = repo_of(demo)
    current = repo.current_snapshot()
    assert current.id == second["snapshot_id"]
    assert "E0020" in current.counts["quarantined_ids"]
    assert {p.employee_id for p in repo.load_problems(current.id)} >= {"E0020", "E0042"}


def test_missing_file_exits_1_and_keeps_the_previous_snapshot(
    demo: Path, repo_of: Callable[[Path], Repository]
) -> None:
    good = ingest_json(demo)
    (demo.parent / "hr-export.csv").unlink()
    result = ingest(demo)
    assert result.exit_code == 1
    assert "hr-export.csv" in result.stderr
    assert "file not found" in result.stderr
    assert "Traceback" not in result.output + result.stderr

    repo = repo_of(demo)
    assert repo.current_snapshot().id == good["snapshot_id"]
    latest = repo.list_snapshots(limit=1)[0]
    assert latest.status == "failed"
    assert "file not found" in (latest.error or "")
    assert repo.list_runs(limit=1)[0].status == "failed"


def test_zero_rows_exit_1(demo: Path, repo_of: Callable[[Path], Repository]) -> None:
    good = ingest_json(demo)
    header = (demo.parent / "hr-export.csv").read_bytes().split(b"\r\n")[0] + b"\r\n"
    (demo.parent / "hr-export.csv").write_bytes(header)
    result = ingest(demo, "--json")
    assert result.exit_code == 1
    assert "no data rows" in result.stderr
    repo = repo_of(demo)
    assert repo.current_snapshot().id == good["snapshot_id"]


def test_the_xlsx_export_gives_the_same_snapshot(demo: Path) -> None:
    csv_counts = ingest_json(demo)["counts"]
    edit_config(
        demo,
        'type = "csv"\npath = "hr-export.csv"',
        'type = "xlsx"\npath = "hr-export.xlsx"\nsheet = "员工"',
    )
    report = ingest_json(demo)
    assert "Excel file" in str(report["source"])
    counts = report["counts"]
    assert isinstance(counts, dict) and isinstance(csv_counts, dict)
    assert (counts["new"], counts["changed"], counts["gone"]) == (0, 0, 0)
    assert counts["people"] == csv_counts["people"]


def test_departments_from_the_people_rows(demo: Path) -> None:
    text = demo.read_text("utf-8")
    text = text[: text.index("[departments]")]  # no department table
    text = text.replace('departments = { field = "部门编号", split = ";" }',
                        'departments = { field = "部门", split = ";" }')  # fmt: skip
    demo.write_text(text, "utf-8")
    report = ingest_json(demo)
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert counts["people"] == 298
    # only departments someone is in, plus their ancestors
    assert 10 <= counts["departments"] <= 20


def test_a_wrong_option_names_the_key(demo: Path) -> None:
    edit_config(demo, 'path = "hr-export.csv"', 'path = "hr-export.csv"\nencodng = "gbk"')
    result = ingest(demo)
    assert result.exit_code == 1
    assert "source.encodng" in result.stderr


def test_a_misspelt_employee_id_column_fails_the_ingest(
    demo: Path, repo_of: Callable[[Path], Repository]
) -> None:
    edit_config(demo, 'employee_id = "工号"', 'employee_id = "员工号"')
    result = ingest(demo)
    assert result.exit_code == 1
    assert "mapping.employee_id" in result.stderr
    assert "工号" in result.stderr  # the columns the source does have
    repo = repo_of(demo)
    assert repo.current_snapshot() is None


def test_ingest_has_help() -> None:
    result = CliRunner().invoke(main, ["ingest", "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output


def test_hostile_values_are_quarantined_not_a_database_error(
    tmp_path: Path, staging_url: str
) -> None:
    """NUL bytes, control characters and over-long values must never reach a VARCHAR column
    (PostgreSQL refuses NUL and enforces lengths; SQLite would quietly store them)."""
    rows = [
        {"id": "E1", "name": "张三", "tel": "010\u00006200", "dept": "研发\u0000中心"},
        {"id": "E2", "name": "李\u0000四", "dept": "市场部"},
        {"id": "E" * 300, "name": "王五"},
        {"id": "E4", "name": "赵六", "email": "a" * 400 + "@example.com"},
        {"id": "E5", "name": "钱七", "mobile": "1" * 10_000, "dept": "市场部"},
        {"id": "E6", "name": "孙八", "dept": "市场部/" + "很长" * 40},
        {"id": "E7", "name": "周九", "dept": "市场部"},
    ]
    (tmp_path / "people.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8"
    )
    config = tmp_path / "syncengine.toml"
    config.write_text(
        f"""
[exmail]
corp_id = "wwdemo0001"
secrets = {{ contacts = "demo-contacts-secret-0001" }}
[database]
url = {json.dumps(staging_url)}
[source]
type = "jsonl"
path = "people.jsonl"
[mapping]
employee_id = "id"
name = "name"
email = "email"
tel = "tel"
mobile = "mobile"
departments = "dept"
""",
        "utf-8",
    )
    report = ingest_json(config)
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert counts["people"] == 1
    assert counts["quarantined"] == 5  # E1, E2, E4, E5, E6; the 300-character id is no key
    problems = report["problems"]
    assert isinstance(problems, list)
    assert all("\x00" not in f"{p['value']}{p['reason']}" for p in problems)
    assert any(p["value"] == "010\\x006200" for p in problems)
