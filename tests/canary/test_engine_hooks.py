"""The catalog's consumers and hooks, as the engine runs them (tick by tick, the fakes of
test_engine): hooks are real commands, so a failing one, a slow one and one that passes are real."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from canary.catalog import load_catalog
from canary.controller import machine as m
from canary.controller.bootstrap import bootstrap
from canary.controller.engine import OWED_RETRY_S, Controller
from core.settings import Settings
from tests.canary.engine_world import World, drive

ENTRY = """apiVersion: releasewarden/v1
kind: Service
name: web
stable: "1.0"
releases: ["1.0", "1.1"]
local:
  command: [python, -m, http.server, "{port}"]
consumers:
  - name: web-worker
    local:
      command: [python, -m, http.server, "{port}"]
hooks:
"""
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: web
  stable: "1.0"
  canary: "1.1"
  steps:
    - {weight: 10, min_requests: 20, min_seconds: 2, max_seconds: 600}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.2, min_regression: 3}
  watch: {seconds: 5}
"""


def hook(moment: str, name: str, code: str, on_failure: str = "hold", timeout_s: float = 10) -> str:
    """A command hook: Python code run with the hook's placeholders filled in."""
    return (
        f"  {moment}:\n    - name: {name}\n      command: [python, -c, {code!r}]\n"
        f"      timeout_s: {timeout_s}\n      on_failure: {on_failure}\n"
    )


class HookWorld(World):
    def __init__(self, tmp_path: Path, hooks: str) -> None:
        (tmp_path / "web.yaml").write_text(ENTRY + (hooks or "  {}\n").replace("hooks:\n  {}", "hooks: {}"))
        self.catalog = load_catalog([tmp_path / "web.yaml"])
        super().__init__(tmp_path, stable={"web": "1.0"})

    def new_controller(self) -> Controller:
        c = bootstrap(
            Settings(admin_token="t"),
            store=self.store,
            platform=self.platform,
            provider=self.provider,
            clock=lambda: self.now,
            stable=self.stable,
            catalog=self.catalog,
            holder=self.holder,  # a restart in place: the same name takes the lease back at once
        )
        asyncio.run(c.start_stable())
        return c

    def release_web(self) -> m.Rollout:
        return asyncio.run(self.controller.create_rollout(SPEC))


def test_consumers_run_beside_each_release_and_stop_with_it(tmp_path):
    w = HookWorld(tmp_path, "")
    assert set(w.platform.running_) == {("web", "1.0"), ("web-worker", "1.0")}
    r = w.release_web()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    assert {("web", "1.1"), ("web-worker", "1.1")} <= set(w.platform.running_)
    w.controller.command(r.id, "abort")
    drive(w, r, lambda r: r.phase == m.ROLLED_BACK)
    assert set(w.platform.running_) == {("web", "1.0"), ("web-worker", "1.0")}


def test_a_failing_before_traffic_hook_that_rolls_back_fails_the_rollout_naming_it(tmp_path):
    w = HookWorld(tmp_path, hook("before_traffic", "warm-cache", "import sys; sys.exit(3)", "rollback"))
    r = drive(w, w.release_web(), lambda r: r.phase in m.TERMINAL)
    assert r.phase == m.FAILED
    assert "hook warm-cache (before_traffic) exited with status 3" in r.reason
    assert all(d.phase_to != m.PROGRESSING for d in w.store.decisions(r.id))  # it never got traffic
    assert ("web", "1.1") not in w.platform.running_


def test_a_failing_before_traffic_hook_that_holds_keeps_it_pending_until_it_passes(tmp_path, caplog):
    gate = tmp_path / "open"
    code = f"import os, sys; sys.exit(0 if os.path.exists({str(gate)!r}) else 1)"
    w = HookWorld(tmp_path, hook("before_traffic", "gate", code, "hold"))
    r = w.release_web()
    with caplog.at_level(logging.WARNING, "releasewarden.controller"):
        for _ in range(4):
            w.tick(reader="router/a")
    assert w.get(r).phase == m.PENDING
    assert "hook gate (before_traffic) exited with status 1" in caplog.text
    assert w.controller.table.services["web"].weight == 0
    gate.write_text("")
    assert drive(w, r, lambda r: r.phase == m.PROGRESSING).phase == m.PROGRESSING


def test_a_held_hook_that_never_passes_fails_at_the_ready_deadline_with_its_name(tmp_path):
    w = HookWorld(tmp_path, hook("before_traffic", "gate", "import sys; sys.exit(1)", "hold"))
    r = w.release_web()
    w.tick(reader="router/a")
    w.tick(seconds=m.READY_DEADLINE_S + 1, reader="router/a")
    r = w.get(r)
    assert r.phase == m.FAILED and "hook gate (before_traffic)" in r.reason


def test_a_slow_hook_times_out_with_its_name_in_the_reason(tmp_path):
    w = HookWorld(tmp_path, hook("before_traffic", "slow-migration", "import time; time.sleep(60)", "rollback", 0.5))
    r = drive(w, w.release_web(), lambda r: r.phase in m.TERMINAL, ticks=20)
    assert r.phase == m.FAILED and "hook slow-migration (before_traffic) timed out after 0.5s" in r.reason


def test_after_rollback_hooks_run_with_the_releases_and_again_by_hand(tmp_path):
    out = tmp_path / "handed-back"
    code = (
        f"import json, sys; open({str(out)!r}, 'a').write(sys.argv[1] + ' ' + sys.argv[2] + chr(10));"
        " print(json.dumps(dict(events_handed_back=7)))"
    )
    hooks = (
        f"  after_rollback:\n    - name: reprocess\n      command: [python, -c, {code!r}, '{{stable}}', '{{canary}}']\n"
    )
    w = HookWorld(tmp_path, hooks)
    r = w.release_web()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    r = drive(w, r, lambda r: r.phase == m.ROLLED_BACK)
    assert out.read_text() == "1.0 1.1\n"
    assert asyncio.run(w.controller.reprocess(r)) == 7  # `canary reprocess`: the same hooks again
    assert out.read_text() == "1.0 1.1\n1.0 1.1\n"


def test_a_failing_after_promotion_hook_that_rolls_back_rolls_back_to_the_warm_release(tmp_path):
    w = HookWorld(tmp_path, hook("after_promotion", "smoke-test", "import sys; sys.exit(1)", "rollback"))
    r = drive(w, w.release_web(), lambda r: r.phase in m.TERMINAL)
    assert r.phase == m.ROLLED_BACK and "hook smoke-test (after_promotion)" in r.reason
    assert w.controller.table.services["web"].releases["stable"] == "1.0"


def test_after_rollback_hooks_a_killed_controller_owed_run_when_the_next_one_starts_and_only_then(tmp_path):
    out, up = tmp_path / "handed-back", tmp_path / "stable-answers"
    code = (
        f"import json, os, sys; os.path.exists({str(up)!r}) or sys.exit(1);"
        f" open({str(out)!r}, 'a').write('ran' + chr(10)); print(json.dumps(dict(events_handed_back=3)))"
    )
    w = HookWorld(tmp_path, f"  after_rollback:\n    - name: reprocess\n      command: [python, -c, {code!r}]\n")
    r = w.release_web()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)

    async def killed_before_the_hooks(_r: m.Rollout) -> None:  # the rollback is stored, then the end
        return None

    w.controller._reprocess = killed_before_the_hooks  # type: ignore[method-assign]
    w.controller.command(r.id, "abort")
    r = drive(w, r, lambda r: r.phase == m.ROLLED_BACK)
    assert not out.exists() and w.store.get(r.id).after_rollback_owed
    w.controller = w.new_controller()  # the next controller: its first tick runs what was owed...
    w.tick()
    assert not out.exists() and w.store.get(r.id).after_rollback_owed  # ...which fails: still owed
    up.write_text("")
    w.tick()
    assert not out.exists()  # not tried again at every tick
    w.tick(seconds=OWED_RETRY_S)
    assert out.read_text() == "ran\n" and not w.store.get(r.id).after_rollback_owed
    w.controller = w.new_controller()  # and a later one runs nothing again
    w.tick()
    assert out.read_text() == "ran\n"
