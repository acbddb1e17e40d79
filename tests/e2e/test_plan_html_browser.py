"""The approvers' HTML page opened in a real headless Chromium (Debian's ``chromium``).

The plan comes from the real command: a truncated HR export against the emulator, so a brake
blocks it, and a new hire whose name carries markup. Chromium loads the file (JavaScript on,
as in any browser) and dumps the DOM it built; the test reads what the page shows: the blocked
reason first, the summary counts, and the hostile name as plain text, never as an element.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_plan_command import ROWS, Workspace

pytestmark = pytest.mark.timeout(180)

EVIL = "孙<b>七</b><script>document.title='pwned'</script>"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "headless Chromium is needed for this test: run 'apt-get install -y chromium' "
            "(.ci/run installs it)"
        )
    return path


def dump_dom(page: Path, profile: Path) -> str:
    try:
        done = subprocess.run(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 90 s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


class Shown(HTMLParser):
    """What the browser's DOM holds: elements, the title, text by element id, summary counts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.stack: list[str | None] = []
        self.text_by_id: dict[str, str] = {}
        self.counts: dict[str, str] = {}
        self.title = ""
        self.order: list[str] = []
        self.all_text: list[str] = []
        self._count_key: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        ident = a.get("id")
        if ident:
            self.order.append(ident)
        self.stack.append(ident)
        self._count_key = a.get("data-key") if a.get("class") == "count" else None
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if self.stack:
            self.stack.pop()
        self._in_title = False
        self._count_key = None

    def handle_data(self, data: str) -> None:
        self.all_text.append(data)
        if self._in_title:
            self.title += data
        if self._count_key:
            self.counts[self._count_key] = data.strip()
        for ident in self.stack:
            if ident:
                self.text_by_id[ident] = self.text_by_id.get(ident, "") + data


def test_blocked_plan_page_in_chromium(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    ws = Workspace(tmp_path, emulator_factory("v2"))
    ws.ingest(*ROWS.values())
    ws.link(("E0001", "zhangsan@example.com"), ("E0002", "lisi@example.com"),
            ("E0003", "wangwu@example.com"))  # fmt: skip
    hostile = f"E0009,{EVIL},qianshi@example.com,研发中心,工程师,,,male,active"
    ws.ingest(ROWS["E0001"], ROWS["E0005"], hostile)  # 5 people -> 3: the shrink brake

    page = tmp_path / "plan.html"
    result = ws.run("plan", "--format", "html", "--out", str(page), "--lang", "en")
    assert result.exit_code == 3, result.output

    shown = Shown()
    shown.feed(dump_dom(page, tmp_path / "chromium-profile"))
    shown.close()

    # The hostile name is text on the page; no script ran and no element came from it.
    assert shown.tags.count("script") == 1  # the page's own filter script only
    assert shown.title.startswith("syncengine plan ") and "pwned" not in shown.title
    assert EVIL in "".join(shown.all_text)

    # Blocked reason first, with how to release it.
    assert shown.order.index("meta") < shown.order.index("blocked") < shown.order.index("summary")
    blocked = shown.text_by_id["blocked"]
    assert "Blocked by 1 safety brake" in blocked
    assert "source_shrank" in blocked and "shrank from 5 to 3 people" in blocked
    assert "--allow-removals 2" in blocked

    # The summary counts: 孙七 and the hostile hire created (and 研发中心/数据部), 李四 and
    # 王五 disabled (linked, gone from HR).
    assert shown.counts["to create"] == "3"
    assert shown.counts["to disable"] == "2"
    assert shown.counts["to delete"] == "0"
    assert shown.counts["protected"] == "2"
    assert "E0009 " + EVIL in "".join(shown.all_text)
