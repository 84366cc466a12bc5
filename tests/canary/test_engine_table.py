"""The route table the controller publishes (``canary.controller.publishing``), tick by tick: typed
and salted per rollout, served only once a tick holding the lease has built it, and a step, a
rollback or a stopped canary waiting until every reader of the table (routers, a service's queue
consumers) confirms it, or is taken for gone.  The rest of the loop is in test_engine; the world
is tests.canary.engine_world."""

from __future__ import annotations

import asyncio
import json

import pytest

from canary.controller import machine as m
from core.errors import ServiceUnavailable
from core.routes import parse_table
from tests.canary.engine_world import World, drive


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


def test_a_queue_consumer_is_waited_for_by_its_catalog_name_whatever_it_is_called():
    from canary.controller.routing import Readers

    readers = Readers(started_at=0.0)
    readers.seen("consumer/queue-runner@1.1", version=1, now=10.0)  # mail's consumer, not named after it
    behind = readers.confirm("mail", version=2, since=0.0, now=10.0, consumers=("queue-runner",))
    assert not behind.confirmed and "consumer/queue-runner@1.1 (serving table 1, needs 2)" in behind.waiting_for
    assert readers.confirm("shop", version=2, since=0.0, now=10.0).confirmed  # another service's reader
