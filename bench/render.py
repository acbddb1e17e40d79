"""Benchmark: the approvers' page of a 10,000-person plan (issue 12).

Builds two plans with the real planner over the same deterministic 10,000 people as
``bench/plan.py``: a *first import* (every person and department created into an empty
directory) and an *all changed* plan (every person renamed, moved, re-addressed, promoted or
leaving). For each: the time to render the HTML page (best of ``--repeat``; the Done-when
limit is 2 s), its size, and the text rendering for comparison. Then the page is opened in
the system Chromium through Playwright and the filter is timed in the browser: from typing a
query to the next painted frame (the limit is 200 ms), for a query matching one person, one
department, and the empty query that shows every row again.

    .venv/bin/python bench/render.py [--people 10000] [--repeat 3] [--lang zh] [--no-browser]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.plan import NOW, build_inputs
from syncengine import render
from syncengine.domain import MailboxState
from syncengine.plan import Plan
from syncengine.plan_page import ReviewContext
from syncengine.planner import diff

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]

# Typing the query, running the page's own input handler, then waiting for two animation
# frames: the second fires after the frame that shows the filtered rows was laid out.
_MEASURE = """
(q) => new Promise((resolve) => {
  const input = document.getElementById('filter');
  const t0 = performance.now();
  input.value = q;
  input.dispatchEvent(new Event('input'));
  requestAnimationFrame(() => requestAnimationFrame(() => {
    const shown = document.querySelectorAll('tr[data-q]:not(.hide)').length;
    resolve({ms: performance.now() - t0, shown: shown});
  }));
})
"""


def plans(people: int) -> dict[str, tuple[Plan, dict[str, str]]]:
    desired, state, links, policy = build_inputs(people, 1.0)
    names = {p.employee_id: p.name for p in desired.people}
    first = diff(desired, MailboxState((), (), ()), {}, policy, NOW)
    changed = diff(desired, state, links, policy, NOW)
    return {"first import": (first, names), "all changed": (changed, names)}


def filter_times(page: Path, queries: list[str]) -> list[tuple[str, float, int]]:
    """(query, milliseconds to the painted frame, rows shown) per query, in Chromium."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.goto(page.as_uri())
            tab.wait_for_selector("#filter")
            for q in queries:
                got = tab.evaluate(_MEASURE, q)
                out.append((q, float(got["ms"]), int(got["shown"])))
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lang", choices=["zh", "en"], default="zh")
    ap.add_argument("--no-browser", action="store_true", help="skip the in-browser filter")
    args = ap.parse_args()
    t = time.perf_counter()
    made = plans(args.people)
    print(f"planning both plans: {time.perf_counter() - t:.2f} s")
    folder = Path(tempfile.mkdtemp(prefix="bench-render-"))
    for label, (plan, names) in made.items():
        ctx = ReviewContext(names=names, lang=args.lang, zone=ZoneInfo("Asia/Shanghai"), plan_id=1)
        plan = replace(plan, signature="0" * 64)
        best = float("inf")
        page = ""
        for _ in range(args.repeat):
            gc.collect()
            t = time.perf_counter()
            page = render.render_html(plan, context=ctx)
            best = min(best, time.perf_counter() - t)
        t = time.perf_counter()
        text = render.render_text(plan, names=names)
        text_s = time.perf_counter() - t
        print(
            f"== {label}: {len(plan.actions):,} actions ==\n"
            f"HTML: {best:.2f} s (best of {args.repeat}), {len(page) / 1e6:.1f} MB, "
            f"{page.count('<tr data-q'):,} filterable rows\n"
            f"text: {text_s:.2f} s, {text.count(chr(10)):,} lines, {len(text) / 1e6:.1f} MB"
        )
        path = folder / f"{label.replace(' ', '-')}.html"
        path.write_text(page, encoding="utf-8")
        if args.no_browser:
            continue
        first_name = next(iter(names.values()))
        queries = [first_name, "研发", "u123@", ""]
        for q, ms, shown in filter_times(path, queries):
            print(f"filter {q!r:>12}: {ms:6.1f} ms to the painted frame, {shown:,} rows shown")
    print(f"pages kept in {folder}")


if __name__ == "__main__":
    main()
