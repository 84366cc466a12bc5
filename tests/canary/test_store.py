"""The controller's store on real SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.controller import machine as m
from canary.controller.spec import SpecError
from canary.controller.store import StaleWrite, Store, metadata
from core.db import create_schema, make_engine
from core.errors import Conflict, NotFound

ROOT = Path(__file__).resolve().parents[2]
IMPORTER = (ROOT / "manifests/rollouts/importer.yaml").read_text()


@pytest.fixture
def store(db_url):
    engine = make_engine(db_url)
    create_schema(engine, metadata)
    yield Store(engine)
    engine.dispose()


def test_transitions_and_decisions_are_stored_and_read_back(store):
    r = store.create(IMPORTER, now=100.0)
    new, made = m.advance(r, m.Observation(canary_ready=True), 101.0)
    store.save(new, r.revision, made)
    again = store.get(r.id)
    assert (again.phase, again.step, again.revision) == (m.PROGRESSING, 0, 1)
    assert m.desired(again) == m.desired(new)  # a restarted controller wants exactly the same world
    stored = store.decisions(r.id)
    assert [(d.phase_from, d.phase_to, d.decided_by) for d in stored] == [(m.PENDING, m.PROGRESSING, "controller")]


def test_a_stale_write_is_refused(store):
    r = store.create(IMPORTER, now=0.0)
    first, made = m.advance(r, m.Observation(canary_ready=True), 1.0)
    store.save(first, r.revision, made)
    other, made_other = m.advance(r, m.Observation(command="abort"), 1.0)  # from the old revision
    with pytest.raises(StaleWrite):
        store.save(other, r.revision, made_other)
    assert store.get(r.id).phase == m.PROGRESSING and len(store.decisions(r.id)) == 1


def test_one_active_rollout_per_service(store):
    r = store.create(IMPORTER, now=0.0)
    with pytest.raises(Conflict):
        store.create(IMPORTER, now=1.0)
    done = r.with_(2.0, phase=m.ROLLED_BACK)
    store.save(done, r.revision, [])
    second = store.create(IMPORTER, now=3.0)  # the service is free again
    assert [x.id for x in store.list_rollouts(active_only=True)] == [second.id]
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(SpecError):
        store.create(IMPORTER.replace('canary: "1.1"', 'canary: "1.0"'), now=4.0)


def test_only_one_controller_holds_the_lease(store):
    assert store.acquire_lease("controller", "a", ttl_s=10, now=0.0)
    assert not store.acquire_lease("controller", "b", ttl_s=10, now=5.0)
    assert store.acquire_lease("controller", "a", ttl_s=10, now=9.0)  # renewal
    assert not store.acquire_lease("controller", "b", ttl_s=10, now=18.0)
    assert store.acquire_lease("controller", "b", ttl_s=10, now=19.5)  # a's lease ran out: b takes over
    assert not store.acquire_lease("controller", "a", ttl_s=10, now=20.0)
