"""The dashboard in a real browser (Debian's Chromium, headless, driven by Playwright; no browser
download): a rollout goes from pending to rolled back while the page is open and the page shows each
phase as it happens, the e-value chart grows, and an abort clicked on the page (with the admin
token, confirmed in the dialog) rolls back a second rollout.  A screenshot of each state is kept
under the test's tmp directory or ``$CANARY_TEST_ARTIFACTS`` (the path is printed)."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.canary.dashboard.realstack import ENDED, TOKEN, create, load, rollout, stack, until, wait_phase

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def shown_phases(page: Page, rid: str) -> list[str]:
    """The phases the page's "Recent changes" list has shown for a rollout, oldest first."""
    # one look at the page (a count, then each item, could straddle a re-render)
    shown = page.eval_on_selector_all(f'#announce li[data-rollout="{rid}"]', "els => els.map(e => e.dataset.phase)")
    return list(reversed([str(p or "") for p in shown]))


def stored_phases(controller_url: str, rid: str) -> list[str]:
    out = ["pending"]
    for d in rollout(controller_url, rid)["decisions"]:
        if d["phase_to"] != out[-1]:
            out.append(d["phase_to"])
    return out


def chart_points(page: Page, rid: str) -> int:
    # in one look: the card goes from the page when the rollout ends, between a count and a read
    selector = f'#rollout-{rid} svg[data-metric="errors"][data-what="e-value"]'
    return int(page.eval_on_selector_all(selector, "els => els.length ? Number(els[0].dataset.points || 0) : 0"))


def test_the_page_follows_a_rollback_live_and_aborts_a_second_rollout(tmp_path: Path) -> None:
    # kept under the test's tmp directory, or CANARY_TEST_ARTIFACTS (pytest keeps only its last few tmp dirs)
    shots = Path(os.environ.get("CANARY_TEST_ARTIFACTS", tmp_path)) / "dashboard-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {shots}")
    with stack(tmp_path) as (controller_url, router_url, _app), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.goto(f"{controller_url}/dashboard")
            page.locator('#status[data-state="live"]').wait_for(timeout=10_000)
            page.screenshot(path=shots / "0-open.png", full_page=True)

            with load(router_url):
                rid = create(controller_url, "1.1")
                seen: list[str] = []
                points: list[int] = []
                deadline = time.monotonic() + 180
                while not seen or seen[-1] not in ENDED:
                    assert time.monotonic() < deadline, f"the page never showed the end: {seen}"
                    now = shown_phases(page, rid)
                    if now != seen:
                        seen = now
                        page.screenshot(path=shots / f"1-{len(seen)}-{seen[-1]}.png", full_page=True)
                    n = chart_points(page, rid)
                    if not points or n != points[-1]:
                        points.append(n)
                    page.wait_for_timeout(100)  # a look every 100 ms, until the deadline
            done = wait_phase(controller_url, rid, ENDED, 5)
            assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
            assert seen == stored_phases(controller_url, rid)  # every phase, in order, as it happened
            assert seen[0] == "pending" and "progressing" in seen, seen
            grew = [b for a, b in itertools.pairwise(points) if b > a]
            assert len(grew) >= 2 and max(points) >= 3, points  # the e-value chart grew while the page was open
            history = page.locator(f'#history-table tr[data-id="{rid}"] .phase')
            assert history.inner_text() == "rolled_back"

            rid2 = create(controller_url, "1.2")  # no traffic now: it waits in its first step
            until(lambda: "progressing" in shown_phases(page, rid2), 60, "the second rollout progresses on the page")
            card = page.locator(f"#rollout-{rid2}")
            card.locator('[data-command="abort"]').click()
            page.locator("#confirm").wait_for(state="visible")
            page.get_by_role("button", name="Cancel").click()  # cancelled: nothing is sent
            assert rollout(controller_url, rid2)["phase"] == "progressing"
            card.locator('[data-command="abort"]').focus()
            page.keyboard.press("Enter")  # the keyboard opens the dialog too
            page.locator("#confirm").wait_for(state="visible")
            page.get_by_label("Admin token", exact=True).last.fill(TOKEN)
            page.screenshot(path=shots / "2-confirm-abort.png", full_page=True)
            page.get_by_role("button", name="Yes, do it").click()
            until(lambda: shown_phases(page, rid2)[-1:] == ["rolled_back"], 60, "the abort shows on the page")
            page.screenshot(path=shots / "3-aborted.png", full_page=True)
            done2 = rollout(controller_url, rid2)
            assert (done2["phase"], done2["decided_by"]) == ("rolled_back", "person"), done2

            rows = page.locator("#history-table tr[data-id]")
            assert rows.count() == 2
            # the history's filters: by the name (a bare "1.2" may be in the first one's reason, its numbers)
            page.get_by_label("Contains").fill("importer-1.2")
            until(lambda: rows.count() == 1, 10, "the text filter keeps one rollout")
            assert rows.first.get_attribute("data-id") == rid2
            page.get_by_role("button", name="details of importer 1.2").click()
            page.locator(f"#opened #rollout-{rid2}").wait_for()  # a history row opened, with its decisions
            opened = page.locator(f"#opened #rollout-{rid2}")
            opened.locator("summary", has_text="decisions").click()
            assert "rolling_back by person: aborted" in opened.inner_text()
        finally:
            browser.close()
