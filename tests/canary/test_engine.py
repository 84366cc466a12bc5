"""The controller's loop tick by tick (``canary.controller.engine``): the route table and its
readers' confirmation, the lease, the world made to match the store, and one rollout's trouble
kept its own (a release that cannot start, a platform or store error; abort always takes).
What a tick observes and judges is in test_observing; the world is tests.canary.engine_world."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging

import pytest

from canary.controller import machine as m
from canary.controller.engine import LEASE_TTL_S
from canary.controller.observing import Waiting
from canary.controller.store import Store
from canary.platforms.base import NotReady
from core.errors import ServiceUnavailable, Unprocessable
from core.routes import parse_table
from tests.canary.engine_world import SPEC, FakePlatform, World, drive


def test_the_route_table_is_typed_and_salted_per_rollout(tmp_path):
    w = World(tmp_path)
    one = w.release()
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    route = w.controller.table.services["importer"]
    assert route.releases == {"stable": "1.0", "canary": "1.1"} and route.weight == 10
    assert route.sticky.header == "x-account-id" and route.sticky.salt == one.id[:16]
    asyncio.run(w.controller.tick())
    w.controller.command(one.id, "abort")
    drive(w, one, lambda r: r.phase == m.ROLLED_BACK)
    two = w.release(canary="1.2")
    w.tick(reader="router/a")
    assert w.controller.table.services["importer"].sticky.salt == two.id[:16] != one.id[:16]
    # what routers and consumers read back is the same table (services without a rollout included)
    served = w.controller.poll_table(("router/a", 0))
    assert parse_table(json.loads(json.dumps(served))) == w.controller.table


def test_a_step_passes_only_once_every_live_router_confirms_its_weight(tmp_path):
    w = World(tmp_path)
    r = w.release()
    w.tick(reader="router/a")
    w.tick(reader="router/b")
    for _ in range(20):  # router/b keeps serving an old table: step 1 never passes
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
        w.controller.poll_table(("router/b", 1))
    held = w.get(r)
    assert held.phase == m.PROGRESSING and held.step == 0
    assert "router/b (serving table 1" in held.reason and held.held_since
    readers = {x["reader"]: x["version"] for x in w.controller.reader_status()}
    assert readers["router/b"] == 1 and readers["router/a"] == w.controller.table.version
    w.controller.poll_table(("router/b", w.controller.table.version))
    r = drive(w, r, lambda r: r.step == 1)  # confirmed: the step passes
    assert "held no more" in w.store.decisions(r.id)[-2].reason


def test_a_silent_router_holds_the_rollback_and_the_canary_keeps_running(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    for _ in range(10):  # router/a polled once, then went silent: it may still send traffic to 1.1
        w.tick(reader=None)
    r2 = w.get(r)
    assert r2.phase == m.ROLLING_BACK and "router/a (silent for over 3 s" in r2.reason
    assert ("importer", "1.1") in w.platform.running_
    w.tick(reader="router/a")
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLED_BACK and ("importer", "1.1") not in w.platform.running_


def test_a_router_silent_for_120_s_is_taken_for_gone_and_holds_the_rollback_no_longer(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    w.tick(reader=None)
    w.tick(seconds=119.0)  # silent for 119.5 s since its last poll: still waited for
    assert w.get(r).phase == m.ROLLING_BACK and [x.name for x in w.controller.readers.current(w.now)] == ["router/a"]
    w.tick(seconds=1.0)  # past 120 s: gone, and with no reader left the platform's call confirms
    w.tick()
    assert w.get(r).phase == m.ROLLED_BACK and w.controller.readers.current(w.now) == []


def test_without_readers_the_platform_confirms_the_weight(tmp_path):
    w = World(tmp_path)  # e.g. Gateway API weights set by the platform: no router polls
    r = w.release()
    done = drive(w, r, lambda r: r.phase == m.WATCHING, reader=None)
    assert done.decided_by == "controller"


def test_an_unknown_release_is_refused_at_once_naming_the_known_ones(tmp_path):
    w = World(tmp_path)
    with pytest.raises(Unprocessable, match=r"importer has no release '9\.9'.*1\.0, 1\.1, 1\.2"):
        w.release(canary="9.9")
    assert w.store.list_rollouts() == []


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


def test_a_queue_consumer_confirms_its_own_service_and_is_forgotten_when_its_release_stops(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.poll_table(("consumer/opens-processor@1.1", 1))  # behind, but it reads opens, not importer
    assert drive(w, r, lambda r: r.step == 1).held_since == 0
    w.controller.readers.seen("consumer/importer-worker@1.1", 1, w.now)  # one of importer's own: it holds
    for _ in range(8):
        w.traffic("importer", "1.1")
        w.tick(reader="router/a")
    held = w.get(r)
    assert held.reason == "held: waiting for consumer/importer-worker@1.1 (silent for over 3 s, last serving table 1)"
    assert len([d for d in w.store.decisions(r.id) if "silent" in d.reason]) == 1  # said once, not every tick
    w.controller.readers.forget("consumer/importer-worker@1.1")  # what stopping its release does
    w.controller.command(r.id, "abort")
    assert drive(w, r, lambda r: r.phase == m.ROLLED_BACK).phase == m.ROLLED_BACK


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


def test_a_restarted_controller_waits_for_the_readers_before_it_stops_a_canary(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING)
    w.controller.command(r.id, "abort")
    w.tick(reader=None)  # rolling back; the router has not confirmed weight 0 yet
    assert w.get(r).phase == m.ROLLING_BACK
    w.controller = w.new_controller()  # restarted: it knows no reader yet
    w.tick(reader=None)
    assert w.get(r).phase == m.ROLLING_BACK and ("importer", "1.1") in w.platform.running_
    w.tick(reader="router/a")  # the router polls the new controller and gets the table
    w.tick(reader="router/a")
    assert w.get(r).phase == m.ROLLED_BACK


def test_a_restarted_controller_serves_no_table_until_a_tick_with_the_lease_built_it(tmp_path):
    w = World(tmp_path)
    r = w.release()
    drive(w, r, lambda r: r.phase == m.PROGRESSING and r.step == 1)  # a 50% canary
    w.controller = w.new_controller()  # restarted: it knows the stored rollout, not yet its upstreams
    asyncio.run(w.controller.start_stable())
    with pytest.raises(ServiceUnavailable) as refused:
        w.controller.poll_table(("router/a", 0))  # a table of stable releases only would starve the canary
    assert refused.value.status == 503 and refused.value.code == "table_not_ready"
    w.tick()
    table = parse_table(w.controller.poll_table(("router/a", 0)))
    assert table.services["importer"].weight == 50 and "canary" in table.services["importer"].upstreams


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


def test_a_queue_consumer_is_waited_for_by_its_catalog_name_whatever_it_is_called():
    from canary.controller.routing import Readers

    readers = Readers(started_at=0.0)
    readers.seen("consumer/queue-runner@1.1", version=1, now=10.0)  # mail's consumer, not named after it
    behind = readers.confirm("mail", version=2, since=0.0, now=10.0, consumers=("queue-runner",))
    assert not behind.confirmed and "consumer/queue-runner@1.1 (serving table 1, needs 2)" in behind.waiting_for
    assert readers.confirm("shop", version=2, since=0.0, now=10.0).confirmed  # another service's reader


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
