"""Notifications wired into the controller, end to end: a real rollout (importer 1.1 rolled back by
the judge, real processes on 127.0.0.1) notifies a real receiver; each event arrives once, signed;
a receiver that was down gets what it missed once it is back, and a restarted controller sends
nothing twice."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, select

from canary.controller.app import create_controller_app
from canary.notify import verify
from canary.notify.outbox import events
from canary.notify.payloads import EVENT_ID, SIGNATURE, TIMESTAMP
from core.errors import ConfigError
from core.settings import Settings
from tests.canary.dashboard.realstack import ENDED, create, load, stack, until, wait_phase
from tests.canary.notify.receiver import Receiver

SECRET = "receiver-secret-of-this-test"


def test_a_rollback_notifies_each_event_once_signed_across_a_down_receiver_and_a_restart(tmp_path):
    receiver = Receiver().start()
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text(f"webhooks:\n  - url: {receiver.url}\n    kind: generic\n    secret: {SECRET}\n")
    try:
        with stack(tmp_path, webhooks=str(hooks)) as (controller_url, router_url, _app), load(router_url):
            rid = create(controller_url, "1.1")
            until(lambda: any(r.json()["kind"] == "started" for r in receiver.events()), 60, "'started' arrives")
            receiver.stop()  # the receiver goes down: what happens next waits in the outbox
            done = wait_phase(controller_url, rid, ENDED)
            assert (done["phase"], done["decided_by"]) == ("rolled_back", "judge"), done
        # the controller has stopped with the rollback's event undelivered
        assert [r.json()["kind"] for r in receiver.events()] == ["started"]
        receiver.start()
        with stack(tmp_path, webhooks=str(hooks)):  # restarted on the same store: it sends what is left
            until(lambda: any(r.json()["kind"] == "rolled_back" for r in receiver.events()), 60, "the rollback arrives")
        got = receiver.events()
    finally:
        receiver.stop()
    ids = [r.headers[EVENT_ID] for r in got]
    assert all(n == 1 for n in Counter(ids).values()), Counter(ids)  # none twice, across the restart
    for r in got:
        assert verify(SECRET, r.headers[TIMESTAMP], r.body, r.headers[SIGNATURE], now=time.time())
        assert r.json()["rollout_id"] == rid and r.json()["service"] == "importer"
    kinds = [r.json()["kind"] for r in got]
    assert kinds[0] == "started" and kinds[-1] == "rolled_back", kinds
    assert got[-1].json()["reason"], got[-1].json()  # a rollback says why
    engine = create_engine(f"sqlite:///{tmp_path / 'controller.db'}")
    with engine.connect() as conn:
        stored = {row.id for row in conn.execute(select(events.c.id).where(events.c.rollout_id == rid))}
    engine.dispose()
    assert set(ids) == stored  # every event the controller stored reached the receiver


def test_a_bad_webhooks_file_stops_the_controller_before_it_serves_naming_field_and_line(tmp_path):
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text("webhooks:\n  - url: http://127.0.0.1:9/hook\n    kind: carrier-pigeon\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'c.db'}", state_dir=str(tmp_path), webhooks=str(hooks))
    with pytest.raises(ConfigError) as bad:
        create_controller_app(settings, stable={}, router_url="", public_url="")
    assert str(bad.value) == f"{hooks}:3: webhooks[0].kind: 'carrier-pigeon' is not one of generic, slack"
    hooks.write_text("webhooks:\n  - url: http://127.0.0.1:9/hook\n    secret_env: HOOK_SECRET\n")
    with pytest.raises(ConfigError) as bad, pytest.MonkeyPatch.context() as env:
        env.setenv("HOOK_SECRET", "   ")  # set, and blank: anyone could sign the controller's events
        create_controller_app(settings, stable={}, router_url="", public_url="")
    assert str(bad.value).startswith(f"{hooks}:3: webhooks[0].secret_env: the secret of the webhook to 127.0.0.1")
    settings = settings.with_overrides(webhooks=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        create_controller_app(settings, stable={}, router_url="", public_url="")
