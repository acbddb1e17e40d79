"""The plan page of 10,000 people in a real browser (Playwright driving the system Chromium):
the filter finds exactly the rows it should and shows at most its cap. How fast it renders and
filters is measured by ``bench/render.py`` (the same code), never asserted here: a loaded CI
machine must not fail a test over time."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bench.render import filter_times, plans
from syncengine import render
from syncengine.plan_page import FILTER_CAP, ReviewContext

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def test_ten_thousand_people_filter_in_the_browser(tmp_path: Path) -> None:
    plan, names = plans(10_000)["first import"]
    ctx = ReviewContext(names=names, lang="zh", zone=ZoneInfo("Asia/Shanghai"), plan_id=1)
    page = render.render_html(plan, context=ctx)
    path = tmp_path / "plan.html"
    path.write_text(page, encoding="utf-8")
    name = names["E0000123"]
    best = {q: (ms, shown) for q, ms, shown in filter_times(path, [name, "u123@", "研发", ""])}
    assert best["u123@"][1] == 1  # exactly that mailbox's row
    assert 1 <= best[name][1] <= FILTER_CAP
    assert best["研发"][1] == FILTER_CAP  # more match; the count says so, the cap is shown
    assert best[""][1] < len(plan.actions)  # the first rows of each section, not 10,000
