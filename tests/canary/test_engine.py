"""The controller's loop tick by tick (``canary.controller.engine``): the lease, the world made to
match the store, and one rollout's trouble kept its own (a release that cannot start, a platform
or store error; abort always takes).  The route table and its readers' confirmation are in
test_engine_table, what a tick observes and judges in test_observing; the world is
tests.canary.engine_world."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging

import pytest
from sqlalchemy import select, update

from canary.controller import machine as m
from canary.controller.engine import LEASE_TTL_S
from canary.controller.group_store import groups
from canary.controller.observing import Waiting
from canary.controller.store import Store, rollouts
from canary.platforms.base import NotReady
from core.errors import ServiceUnavailable, Unprocessable
from tests.canary.engine_world import SPEC, FakePlatform, World, drive
from tests.canary.test_group_api import GROUP


def test_an_unknown_release_is_refused_at_once_naming_the_known_ones(tmp_path):
    w = World(tmp_path)
    with pytest.raises(Unprocessable, match=r"importer has no release '9\.9'.*1\.0, 1\.1, 1\.2"):
        w.release(canary="9.9")
    assert w.store.list_rollouts() == []


def test_a_service_this_controller_does_not_run_is_refused_at_once(tmp_path):
    w = World(tmp_path)
    with pytest.raises(Unprocessable, match=r"no service 'nosuch' here; the services it runs: importer, resizer"):
        w.release(service="nosuch")
    assert w.store.list_rollouts() == []


def _store_as_an_older_version_did(w: World, r: m.Rollout, old: str, new: str) -> None:
    """Rewrite a stored spec past today's checks, as a version with looser ones would have stored it."""
    with w.engine.begin() as conn:
        text = conn.execute(select(rollouts.c.spec).where(rollouts.c.id == r.id)).scalar_one()
        assert old in text
        conn.execute(update(rollouts).where(rollouts.c.id == r.id).values(spec=text.replace(old, new)))


def test_a_stored_spec_this_version_refuses_neither_wedges_the_loop_nor_the_other_services(tmp_path, caplog):
    """A step at 100% (no stable left to compare with) was accepted once; NaN passed every range
    check and failed every tick's table, at start too.  Stored before an upgrade, such a rollout is
    read as stored, its service is routed to stable alone if its table cannot be made, and it ends."""
    w = World(tmp_path)
    hundred, nan = w.release("importer", "1.1"), w.release("resizer", "2.1")
    _store_as_an_older_version_did(w, hundred, "weight: 50,", "weight: 100,")
    _store_as_an_older_version_did(w, nan, "weight: 10,", "weight: .nan,")
    caplog.set_level(logging.INFO)
    w.controller = w.new_controller()  # a restart: start_stable publishes the table at once
    assert [r.spec.steps[-1].weight for r in w.store.list_rollouts()] == [100, 50]
    for _ in range(4):
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
    assert w.controller.table.services["resizer"].weight == 0  # stable alone
    json.dumps(w.controller.poll_table(("router/a", 0)), allow_nan=False)  # what every poll answers
    assert "controller tick failed" not in caplog.text and "Traceback" not in caplog.text
    assert "stored spec is one this version refuses" in caplog.text
    for r in (hundred, nan):
        w.controller.command(r.id, "abort")
    for _ in range(20):
        w.tick(reader="router/a")
        if all(w.get(r).phase in m.TERMINAL for r in (hundred, nan)):
            break
    assert w.get(hundred).phase in m.TERMINAL, w.get(hundred)
    assert w.get(nan).phase in m.TERMINAL, w.get(nan)


def test_a_nan_weight_routed_per_request_never_reaches_the_table_it_would_make_unservable(tmp_path):
    """Sticky routing raised on a NaN weight; per-request routing published it, and every poll of
    the table (all services') then failed as JSON: the route is checked as readers would take it."""
    w = World(tmp_path)
    r = w.release("resizer", "2.1")
    _store_as_an_older_version_did(w, r, "  watch:", "  sticky: none\n  watch:")
    _store_as_an_older_version_did(w, r, "weight: 10,", "weight: .nan,")
    w.controller = w.new_controller()
    for _ in range(4):
        w.traffic("resizer", "2.1")
        w.tick(reader="router/a")
    table = json.loads(json.dumps(w.controller.poll_table(("router/a", 0)), allow_nan=False))
    assert table["services"]["resizer"]["weight"] == 0 and set(table["services"]) == {"importer", "resizer"}


def test_a_stored_group_this_version_refuses_is_read_as_stored_and_stops_nothing_else(tmp_path, caplog):
    """A group an older version stored with a member step at 100% failed every tick before any
    rollout was stepped or the table was built: routers got 503 table_not_ready for ever."""
    w = World(tmp_path)
    g = asyncio.run(w.controller.groups.create(GROUP))
    other = w.release("resizer", "2.1")
    with w.engine.begin() as conn:
        conn.execute(
            update(groups).where(groups.c.id == g.id).values(spec=GROUP.replace("{weight: 10}", "{weight: 100}"))
        )
    caplog.set_level(logging.INFO)
    w.controller = w.new_controller()
    drive(w, other, lambda r: r.phase == m.PROGRESSING)
    w.controller.poll_table(("router/a", 0))  # the table is served
    assert "tick failed" not in caplog.text and "stored spec is one this version refuses" in caplog.text
    assert asyncio.run(w.controller.groups.group(g.id)).spec.members[0].rollout["steps"][0]["weight"] == 100


def test_a_release_that_cannot_start_fails_alone_and_the_loop_goes_on(tmp_path, caplog):
    w = World(tmp_path)
    w.platform.broken.add("1.1")  # known to the catalog, but it will not start
    bad = w.release("importer", "1.1")
    good = w.release("resizer", "2.1")
    caplog.set_level(logging.INFO)
    for _ in range(6):
        w.traffic("resizer", "2.1")
        w.tick(reader="router/a")
    failed = w.get(bad)
    assert (failed.phase, failed.decided_by) == (m.FAILED, "platform") and "unknown release" in failed.reason
    assert w.get(good).phase == m.PROGRESSING
    assert "Traceback" not in caplog.text and all(r.exc_info is None for r in caplog.records)


def test_abort_always_takes_even_while_the_platform_fails(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.platform.broken.add("1.0")  # stable cannot be (re)started: every apply fails
    w.platform.running_.pop(("importer", "1.0"))
    w.controller.command(r.id, "abort")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLING_BACK


class Flaky(FakePlatform):
    async def healthy(self, service: str, release: str) -> bool:
        if release == "1.1":
            raise RuntimeError("the platform's API answered nonsense")
        return await super().healthy(service, release)


def test_a_platform_that_errors_while_observing_holds_with_words_and_abort_still_takes(tmp_path, caplog):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.platform.__class__ = Flaky
    w.tick(reader="router/a")
    held = w.get(r)
    assert held.reason == "held: observing failed: RuntimeError: the platform's API answered nonsense"
    w.controller.command(r.id, "abort")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLING_BACK
    assert all(rec.exc_info is None for rec in caplog.records)


class BrokenStore(Store):
    """The real store, whose writes for one rollout fail (a locked or full database)."""

    broken = ""

    def save(self, new, expected_revision, made):
        if new.id == self.broken:
            raise OSError("disk I/O error")
        super().save(new, expected_revision, made)


def test_a_store_error_holds_that_rollout_only_and_it_resumes_once_the_store_writes(tmp_path, caplog):
    w = World(tmp_path)
    w.store.__class__ = BrokenStore
    a, b = w.release("importer", "1.1"), w.release("resizer", "2.1")
    BrokenStore.broken = a.id
    for _ in range(4):
        w.tick(reader="router/a")
    assert (w.get(a).phase, w.get(b).phase) == (m.PENDING, m.PROGRESSING)
    assert "disk I/O error" in caplog.text and all(rec.exc_info is None for rec in caplog.records)
    BrokenStore.broken = ""
    w.tick(reader="router/a")
    assert w.get(a).phase == m.PROGRESSING


def test_an_abort_is_never_lost_to_a_store_error_nor_replaced_by_a_later_command(tmp_path):
    w = World(tmp_path)
    w.store.__class__ = BrokenStore
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    BrokenStore.broken = r.id
    w.controller.command(r.id, "abort")
    w.controller.command(r.id, "pause")  # a second command before the tick: the abort stands
    w.tick(reader="router/a")  # the decision cannot be stored: nothing happened, the abort waits
    assert w.get(r).phase == m.PROGRESSING
    BrokenStore.broken = ""
    w.tick(reader="router/a")
    assert (w.get(r).phase, w.get(r).decided_by) == (m.ROLLING_BACK, "person")


def test_only_the_lease_holder_acts_and_another_takes_over_once_the_lease_expires(tmp_path):
    w = World(tmp_path)
    w.release()
    w.tick(reader="router/a")
    leader = w.controller
    w.holder = "standby"  # a second controller on the same store, by another name
    standby = w.new_controller()
    for _ in range(30):  # 15 s of the leader renewing its 10 s lease
        w.tick(reader="router/a")
        asyncio.run(standby.tick())
        assert standby.last_tick == 0 and not standby.table_ready
    with pytest.raises(ServiceUnavailable):
        standby.poll_table(("router/a", 0))  # and its table is not served
    w.now += LEASE_TTL_S + 0.5  # the leader died: nobody renewed
    asyncio.run(standby.tick())
    assert standby.last_tick == w.now and standby.table_ready
    acted = leader.last_tick
    asyncio.run(leader.tick())  # back from a pause: it lost the lease and acts no more
    assert leader.last_tick == acted


def test_a_release_slow_to_start_holds_only_its_own_rollout_and_its_start_ends_with_the_rollout(tmp_path):
    # one event loop for every tick, as the controller runs: the start goes on between ticks
    w = World(tmp_path)
    w.controller.starts.wait_s = 0.05
    w.platform.hanging.add("1.1")  # importer 1.1 never answers its ready path: its start never returns
    slow, good = w.release("importer", "1.1"), w.release("resizer", "2.1")

    async def ticks(n: int, seconds: float = 1.0) -> None:
        for _ in range(n):
            w.traffic("resizer", "2.1")
            w.now += seconds
            with contextlib.suppress(ServiceUnavailable):
                w.controller.poll_table(("router/a", w.controller.table.version))
            await w.controller.tick()

    async def cancelled(count: int) -> bool:
        for _ in range(200):
            if len(w.platform.cancelled) >= count:
                return True
            await asyncio.sleep(0.01)
        return False

    async def scenario() -> None:
        await ticks(8)
        assert w.get(good).phase in (m.PROGRESSING, m.PROMOTING, m.WATCHING)  # the other one goes on meanwhile
        assert w.get(slow).phase == m.PENDING and w.platform.cancelled == []
        await ticks(1, seconds=120)
        failed = w.get(slow)
        assert (failed.phase, failed.decided_by) == (m.FAILED, "timeout")
        why = "importer 1.1 is still starting (waiting for it to answer)"
        assert failed.reason == f"canary not ready after 120 s: {why}"
        assert await cancelled(1)  # the start ends with its rollout: no process is left behind
        again = await w.controller.create_rollout(SPEC.format(service="importer", canary="1.1", watch=30))
        await ticks(3)
        w.controller.command(again.id, "abort")  # a person's abort takes while the start goes on
        await ticks(3)
        assert w.get(again).phase == m.ROLLED_BACK and await cancelled(2)

    asyncio.run(scenario())


def test_a_pending_rollout_says_what_the_platform_says_of_its_canary_kept_in_memory_not_stored(tmp_path):
    from canary.controller.api import summary
    from canary.controller.observing import DeadlineBy

    w = World(tmp_path)
    w.controller.starts.wait_s = 0.05
    w.platform.hanging.add("1.1")  # its start goes on, as a local release waiting for its ready path
    told: list[str] = []
    w.controller.observer.listeners.append(told.append)
    r = w.release("importer", "1.1")

    async def ticks(n: int, seconds: float = 1.0) -> m.Rollout:
        for _ in range(n):
            w.now += seconds
            with contextlib.suppress(ServiceUnavailable):
                w.controller.poll_table(("router/a", w.controller.table.version))
            await w.controller.tick()
        return w.get(r)

    async def scenario() -> None:
        pending = await ticks(2)
        assert w.controller.not_ready(pending) == Waiting(  # a platform without words: the controller's
            "importer 1.1 is still starting (waiting for it to answer)", r.phase_since, 120.0, DeadlineBy.CONTROLLER
        )
        words = "importer 1.1: ready path /readyz answered 503:\n" + "x" * 3000 + "\ndatabase not reachable"
        w.platform.said[("importer", "1.1")] = NotReady(words, waited_s=4.0, deadline_s=30.0)
        pending = await ticks(5)
        waiting = w.controller.not_ready(pending)
        assert waiting is not None and waiting.reason.startswith("importer 1.1: ready path /readyz answered 503: x")
        assert waiting.reason.endswith("x database not reachable") and len(waiting.reason) <= 605  # one line
        # the platform gives up 26 s after the last look: sooner than the controller's 120 s
        assert summary(pending, waiting, w.now)["not_ready"] == {
            "reason": waiting.reason,
            "waited_s": 7.0,
            "deadline_s": 33.0,
            "deadline_by": "platform",
        }
        assert summary(pending)["not_ready"] is None
        # heard at every tick, stored at none: the rollout was not written, and the page told once per change
        assert (pending.revision, w.store.decisions(r.id)) == (r.revision, [])
        assert told == [r.id, r.id]
        w.platform.said[("importer", "1.1")] = NotReady("importer 1.1: connection refused on port 9")
        pending = await ticks(1)
        assert told == [r.id] * 3
        assert w.controller.not_ready(pending) == Waiting(
            "importer 1.1: connection refused on port 9", r.phase_since, 120.0, DeadlineBy.CONTROLLER
        )
        failed = await ticks(1, seconds=120)
        assert (failed.phase, failed.reason) == (
            m.FAILED,
            "canary not ready after 120 s: importer 1.1: connection refused on port 9",  # the same words
        )
        assert w.controller.not_ready(failed) is None and r.id not in w.controller.observer.waiting

    asyncio.run(scenario())


def test_during_the_watch_an_alert_about_a_track_means_the_release_that_serves_on_it(tmp_path):
    from canary.controller.alerts import _action

    w = World(tmp_path)
    r = w.release()
    watching = dataclasses.replace(w.get(r), phase=m.WATCHING)  # 1.1 promoted: it serves on stable
    firing = {"alertname": "HighErrorRate", "service": "importer"}
    said, _ = _action(w.controller, watching, {**firing, "track": "canary"}, "firing")
    assert said.startswith("ignored: the alert is about importer's canary track")  # the old release, held back
    said, target = _action(w.controller, watching, {**firing, "track": "stable"}, "firing")
    assert (said, target) == ("rolling back", watching)
    stepping = dataclasses.replace(watching, phase=m.PROGRESSING)
    assert _action(w.controller, stepping, {**firing, "track": "canary"}, "firing")[0] == "rolling back"
    assert _action(w.controller, stepping, {**firing, "track": "stable"}, "firing")[0].startswith("ignored")


def test_sticky_none_routes_and_judges_each_request_by_itself(tmp_path):
    # consumers that send no account id: the default sticky key would judge them as customers who
    # may differ (a weaker test); `sticky: none` routes and judges each request by itself
    w = World(tmp_path)
    text = SPEC.format(service="importer", canary="1.1", watch=30) + "  sticky: none\n"
    r = asyncio.run(w.controller.create_rollout(text))
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    route = w.controller.table.services["importer"]
    assert (route.sticky.header, route.sticky.cookie, route.sticky.path_param, route.sticky.groups) == (
        None, None, None, ()
    )  # fmt: skip
    for _ in range(20):
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
    reasons = [d.reason for d in w.store.decisions(r.id)]
    assert reasons and not any("sticky" in reason for reason in reasons), reasons
    assert w.get(r).spec.sticky == {}
