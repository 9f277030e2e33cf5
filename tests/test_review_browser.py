"""consist review in a real browser: Playwright (from PyPI) driving Debian's chromium
against the real ``consist review`` command on 127.0.0.1.

A reviewer's session on the demo audit of real photos (accept, reject, relabel, draw a
box, undo, export) checked against the store's history and the exported CSV; the five
planted errors fixed from the keyboard alone; a 10,000-sample audit paged through. The
screenshots of docs/review.md are taken here, so they show the page as it is.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from tests.review_support import copy_audit, make_audit, playwright_ready, serve_cli

why = playwright_ready()
pytestmark = [pytest.mark.skipif(bool(why), reason=why or "ready"), pytest.mark.slow]

import consist  # noqa: E402

if not why:
    from playwright.sync_api import expect

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The demo audit and the planted errors: sample id -> true label."""
    from consist.cli.demo import run_audit_demo

    root = tmp_path_factory.mktemp("review-browser")
    report = run_audit_demo(root, progress=False)
    planted = dict(report["planted"]["truth"])
    return root / "audit", planted


@pytest.fixture
def audit(demo, tmp_path) -> Path:
    return copy_audit(demo[0], tmp_path / "audit")


def _page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append("dialog: " + d.message) or d.dismiss())
    page.goto(url)
    page.wait_for_selector("body[data-ready=overview]")
    return page, errors


def _shot(page, name: str) -> None:
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / f"review-{name}.png"))


def test_a_reviewer_session_lands_in_the_store_history_and_the_export(audit, tmp_path):
    from tests.review_support import browser

    with serve_cli(audit) as info, browser() as b:
        page, errors = _page(b, info["open"])
        assert page.locator(".card.flagged b").inner_text() == "5"
        _shot(page, "overview")

        page.goto(info["url"] + "#/queue?status=flagged")
        page.wait_for_selector("#queue tbody tr")
        rows = page.locator("#queue tbody tr")
        ids = [rows.nth(i).get_attribute("data-id") for i in range(rows.count())]
        suggested = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())]
        given = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
        page.keyboard.press("a")  # accept the first
        expect(page.locator("#queue tbody tr .tag").nth(0)).to_have_text("accepted")
        page.keyboard.press("x")  # the selection moved on: reject the second (keep its label)
        expect(page.locator("#queue tbody tr .tag").nth(1)).to_have_text("kept")
        _shot(page, "queue")

        page.keyboard.press("Enter")  # open the third
        page.wait_for_selector("body[data-ready=sample]")
        assert page.locator("h2").first.inner_text() == ids[2]
        page.fill("#relabel-input", "coins")
        page.press("#relabel-input", "Enter")
        expect(page.locator("#current-label")).to_have_text("coins")

        page.click("#box-btn")
        box = page.locator(".viewer").bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 120, y0 + 90, steps=5)
        page.mouse.up()
        page.wait_for_selector(".viewer svg .region")
        _shot(page, "sample")

        page.locator("h2").first.click()  # focus the page, not an input
        page.keyboard.press("u")  # undo the box
        expect(page.locator(".viewer svg .region")).to_have_count(0)

        with page.expect_download() as dl:
            page.click("#export-btn")
        exported = {r["path"]: r["label"] for r in csv.DictReader(io.StringIO(Path(dl.value.path()).read_text()))}
        assert exported[ids[0]] == suggested[0]
        assert exported[ids[1]] == given[1]
        assert exported[ids[2]] == "coins"

        store = consist.open_store(info["store"])
        try:
            hist = store.history(limit=5, newest_first=False, since=len(store) - 1)
            actions = [(e.action, e.sample_id) for e in store.history(limit=5)][::-1]
            assert actions == [("relabel", ids[0]), ("relabel", ids[1]), ("relabel", ids[2]), ("region", ids[2]), ("undo", ids[2])]
            assert all(e.provenance == "user" for e in store.history(limit=5))
            assert store.get(ids[2]).region is None and store.get(ids[2]).label == "coins"
            assert hist is not None
        finally:
            store.close()

        page.goto(info["url"] + "#/search?id=" + ids[3])
        page.wait_for_selector(".viewer")
        page.click("#search-btn")
        page.wait_for_selector(".result", timeout=120_000)
        _shot(page, "search")
        page.goto(info["url"] + "#/history")
        page.wait_for_selector("#history tbody tr")
        _shot(page, "history")
        assert not errors, errors


def test_the_planted_errors_are_fixed_from_the_keyboard(demo, tmp_path):
    """A new user: open the page, go to the queue, press a five times."""
    from tests.review_support import browser

    audit = copy_audit(demo[0], tmp_path / "audit")
    planted = demo[1]
    with serve_cli(audit) as info, browser() as b:
        started = time.monotonic()
        page, errors = _page(b, info["open"])
        page.click("nav a[data-nav=queue]")
        page.wait_for_selector("#queue tbody tr")
        for i in range(5):
            page.keyboard.press("a")
            expect(page.locator("#queue tbody tr .tag").nth(i)).to_have_text("accepted")
        elapsed = time.monotonic() - started
        store = consist.open_store(info["store"])
        try:
            fixed = {sid: store.get(sid).label for sid in planted}
        finally:
            store.close()
        assert fixed == planted, f"after {elapsed:.1f} s"
        assert not errors, errors


def test_two_tabs_never_undo_or_overwrite_each_other(audit):
    from tests.review_support import browser

    with serve_cli(audit) as info, browser() as b:
        tab_a, errors_a = _page(b, info["open"])
        tab_b, errors_b = _page(b, info["open"])
        sid = None
        for tab in (tab_a, tab_b):
            tab.goto(info["url"] + "#/queue?status=flagged")
            tab.wait_for_selector("#queue tbody tr")
            sid = tab.locator("#queue tbody tr").first.get_attribute("data-id")
            tab.keyboard.press("Enter")
            tab.wait_for_selector("#keep-btn")
        tab_a.keyboard.press("a")
        expect(tab_a.locator("#decision")).to_have_text("accepted")
        tab_b.keyboard.press("x")  # B still shows the given label: refused, and B shows what A did
        expect(tab_b.locator("#toast")).to_contain_text("changed elsewhere")
        expect(tab_b.locator("#decision")).to_have_text("accepted")
        tab_b.keyboard.press("u")  # B did nothing: it must not undo A's accept
        expect(tab_b.locator("#toast")).to_contain_text("nothing of yours to undo")
        store = consist.open_store(info["store"])
        try:
            assert store.history(sample_id=sid, limit=1)[0].action == "relabel"
        finally:
            store.close()
        # the sentence box shows what it understood before anything is written
        tab_b.fill("#tell-input", "it's not a rocket, it's a hubble")
        tab_b.click("#tell-btn")
        expect(tab_b.locator("#tell-msg")).to_contain_text("relabel")
        tab_b.click("#tell-apply")
        expect(tab_b.locator("#current-label")).to_have_text("hubble")
        assert not errors_a and not errors_b, errors_a + errors_b


def test_labels_are_shown_as_text_never_as_markup(audit):
    from tests.review_support import browser

    store = consist.open_store(f"sqlite:///{audit / 'store.db'}")
    sid = next(iter(store.samples())).id
    store.relabel(sid, '<img src=x onerror="alert(1)">', provenance="user", reason="hostile label")
    store.close()
    with serve_cli(audit) as info, browser() as b:
        page, errors = _page(b, info["open"])
        page.goto(info["url"] + "#/queue?q=" + sid.split("/")[-1])
        page.wait_for_selector("#queue tbody tr")
        assert '<img src=x onerror="alert(1)">' in page.locator("#queue tbody tr").first.inner_text()
        assert page.locator("#queue tbody img[src=x]").count() == 0
        assert not errors, errors


def test_a_10000_sample_audit_pages_in_the_browser(tmp_path):
    from tests.review_support import browser

    audit = make_audit(tmp_path, 10_000)
    with serve_cli(audit) as info, browser() as b:
        page, errors = _page(b, info["open"])
        assert page.locator(".card.flagged b").inner_text() != "0"
        page.goto(info["url"] + "#/queue")
        page.wait_for_selector("#page-info")
        assert page.locator("#page-info").first.inner_text() == "1–50 of 10000"
        for n in range(2, 7):
            page.locator("button:has-text('next page')").first.click()
            expect(page.locator("#page-info").first).to_have_text(f"{(n - 1) * 50 + 1}–{n * 50} of 10000")
        assert page.locator("#queue tbody tr").count() == 50
        assert not errors, errors
