"""The dashboard, measured in Debian's Chromium (headless, Playwright): how long a stored decision
takes to appear on an open page, how heavy the page is, and what an idle open page costs.

- ``decision_to_page_ms``: from ``Store.save`` returning (the decision committed) to the page's
  "Recent changes" list showing it (a MutationObserver's timestamp in the page), median of N;
  ``decision_to_page_ratio`` against one fetch of the state the page reads, from the page
  (the live path costs the event, that fetch, and the page's drawing);
- ``page_bytes`` (and gzipped, ``page_gzip_ratio``), ``state_bytes`` with one rollout;
- ``idle_requests_per_minute``: requests the page makes while nothing happens (the event stream
  reconnects every ``MAX_STREAM_S``, and re-reads nothing when it missed nothing), over two
  streams' lives; and
  ``idle_cpu_ratio``: the controller process's CPU per second with the idle page open against
  without it.

Run: ``python -m benchmarks.dashboard`` (about three minutes).
"""

from __future__ import annotations

import gzip
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from benchmarks.common import report
from canary.controller import machine
from canary.controller.app import create_controller_app
from canary.controller.dashboard.live import MAX_STREAM_S
from canary.controller.dashboard.views import page_bytes
from core.serve import serve_in_thread
from core.settings import Settings
from tests.canary.dashboard.test_browser import ARGS, CHROMIUM
from tests.canary.test_controller_api import SPEC  # the API tests' rollout: one 5% step that waits 30 s

TOKEN = "bench-token"
DECISIONS = 20
OBSERVE = """() => { window.__seen = {}; new MutationObserver(() => {
  for (const li of document.querySelectorAll('#announce li[data-rollout]')) {
    const key = li.textContent;
    if (!(key in window.__seen)) window.__seen[key] = performance.timeOrigin + performance.now();
  } }).observe(document.getElementById('announce'), {childList: true}); }"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        settings = Settings(db_url=f"sqlite:///{state / 'c.db'}", state_dir=str(state), admin_token=TOKEN)
        app = create_controller_app(
            settings, stable={}, router_url="http://127.0.0.1:9", public_url="http://127.0.0.1:9", tick_s=3600
        )
        with serve_in_thread(app) as url:
            controller = app.state.controller
            store = controller.store
            deadline = time.monotonic() + 30
            while not controller.last_tick:  # its one tick done: the rollout below is moved only by this benchmark
                assert time.monotonic() < deadline, "the controller never ticked"
                time.sleep(0.05)
            r = store.create(SPEC, time.time())
            state_bytes = len(httpx.get(f"{url}/api/dashboard/state").content)
            cpu0, t0 = time.process_time(), time.monotonic()
            time.sleep(15)  # the reference: the controller with no page open, idle
            cpu_without = (time.process_time() - cpu0) / (time.monotonic() - t0)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                page = browser.new_page(bypass_csp=True)
                requests: list[str] = []
                page.on("request", lambda req: requests.append(req.url))
                page.on("pageerror", lambda e: print("page error:", e))
                page.goto(f"{url}/dashboard")
                page.locator('#status[data-state="live"]').wait_for(timeout=10_000)
                page.locator(f'#history-table tr[data-id="{r.id}"]').wait_for(timeout=10_000)  # the first render
                fetch_ms = statistics.median(
                    page.evaluate(
                        "async () => { const t = performance.now(); await fetch('/api/dashboard/state'); "
                        "return performance.now() - t; }"
                    )
                    for _ in range(10)
                )
                page.evaluate(OBSERVE)
                delays = []
                for i in range(DECISIONS):
                    phase = machine.PAUSED if i % 2 == 0 else machine.PROGRESSING
                    new = r.with_(time.time(), phase=phase, reason=f"bench {i}")
                    d = machine.Decision(time.time(), r.phase, phase, "person", f"bench {i}")
                    store.save(new, r.revision, [d])
                    committed = time.time() * 1000
                    r = new
                    try:
                        page.wait_for_function(
                            "(n) => Object.keys(window.__seen).length >= n", arg=i + 1, polling=20, timeout=10_000
                        )
                    except Exception:
                        print(i, page.locator("#announce").inner_html(), page.evaluate("() => window.__seen"))
                        raise
                    seen = page.evaluate("() => Math.max(...Object.values(window.__seen))")
                    delays.append(seen - committed)
                time.sleep(2)
                requests.clear()
                streams0 = app.state.dashboard.streams_opened
                cpu0, t0 = time.process_time(), time.monotonic()
                time.sleep(2 * MAX_STREAM_S + 2)  # idle with the page open: two streams' lives
                idle_s = time.monotonic() - t0
                cpu_with = (time.process_time() - cpu0) / idle_s
                # the browser does not report an EventSource's reconnections: the server counts them
                streams = app.state.dashboard.streams_opened - streams0
                idle_requests = streams + len([u for u in requests if "/api/events" not in u])
                browser.close()
    raw = page_bytes()
    decision_ms = statistics.median(delays)
    report(
        {
            "name": "dashboard",
            "decisions": DECISIONS,
            "decision_to_page_ms": round(decision_ms, 1),
            "decision_to_page_p90_ms": round(sorted(delays)[int(0.9 * len(delays)) - 1], 1),
            "state_fetch_ms": round(fetch_ms, 1),
            "decision_to_page_ratio": round(decision_ms / fetch_ms, 2),
            "page_bytes": len(raw),
            "page_gzip_bytes": len(gzip.compress(raw)),
            "page_gzip_ratio": round(len(gzip.compress(raw)) / len(raw), 3),
            "state_bytes": state_bytes,
            "idle_window_s": round(idle_s, 1),
            "idle_requests_per_minute": round(idle_requests * 60 / idle_s, 2),
            "idle_state_reads": idle_requests - streams,
            "idle_cpu_s_per_s": round(cpu_with, 5),
            "idle_cpu_s_per_s_without_page": round(cpu_without, 5),
            "idle_cpu_ratio": round(cpu_with / max(cpu_without, 1e-6), 2),
        }
    )


if __name__ == "__main__":
    main()
