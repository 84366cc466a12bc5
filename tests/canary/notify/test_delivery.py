"""Notifications end to end against a real HTTP receiver on 127.0.0.1, on real SQLite and PostgreSQL:
every event once per webhook that wants it, signed; a receiver that is down gets its events, in
order, once it is back; a new sender on the same database sends nothing twice; an event the
database refused is stored and sent later."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import Engine, select, text

from canary.notify import (
    Enqueued,
    EventKind,
    Outbox,
    RetryPolicy,
    RolloutEvent,
    Sender,
    Webhook,
    WebhookKind,
    verify,
)
from canary.notify import outbox as outbox_tables
from canary.notify.payloads import EVENT_ID, SIGNATURE, TIMESTAMP
from core.db import make_engine, write_transaction
from tests.canary.notify.receiver import Received, Receiver

pytestmark = pytest.mark.anyio
SECRET = "hook-secret"
FAST = RetryPolicy(first_s=0.05, factor=2.0, max_s=0.2, jitter=0.2)


def event(kind: EventKind, n: int, rollout: str = "r1") -> RolloutEvent:
    return RolloutEvent(
        kind,
        rollout,
        "resizer",
        "1.0",
        "2.0",
        reason=f"reason {n}",
        evidence="errors 12/300 vs 2/3000",
        id=f"{rollout}-{n}",
    )


ONE_OF_EACH = [event(kind, i) for i, kind in enumerate(EventKind)]


async def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(sender: Sender) -> AsyncIterator[Sender]:
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def receiver() -> Receiver:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def engine(db_url: str) -> Engine:
    e = make_engine(db_url)
    yield e
    e.dispose()


def ids(received: list[Received]) -> list[str]:
    return [r.headers[EVENT_ID] for r in received]


async def test_every_event_reaches_each_webhook_that_wants_it_once_and_signed(engine, receiver):
    slack = Receiver().start()
    try:
        hooks = [
            Webhook(receiver.url, WebhookKind.GENERIC, SECRET),
            Webhook(slack.url, WebhookKind.SLACK, None, frozenset({EventKind.ROLLED_BACK, EventKind.PROMOTED})),
        ]
        outbox = Outbox(engine, hooks)
        async with running(Sender(outbox, policy=FAST, poll_s=0.05)) as sender:
            for e in ONE_OF_EACH:
                assert outbox.enqueue(e) is Enqueued.STORED
            sender.wake()
            await wait_until(lambda: len(receiver.events()) == len(ONE_OF_EACH) and len(slack.events()) == 2)
            await wait_until(lambda: outbox.status() == [])  # everything marked delivered
        got = receiver.events()
        assert ids(got) == [e.id for e in ONE_OF_EACH]  # once each, in order
        for r, sent in zip(got, ONE_OF_EACH, strict=True):
            assert verify(SECRET, r.headers[TIMESTAMP], r.body, r.headers[SIGNATURE], now=time.time())
            assert not verify("another secret", r.headers[TIMESTAMP], r.body, r.headers[SIGNATURE], now=time.time())
            assert RolloutEvent.from_dict(r.json()) == sent
        rolled_back = slack.events()[0].json()
        assert ids(slack.events()) == [
            e.id for e in ONE_OF_EACH if e.kind in (EventKind.ROLLED_BACK, EventKind.PROMOTED)
        ]
        assert rolled_back["text"] == "resizer 1.0 -> 2.0 was rolled back: reason 4"
        assert "errors 12/300 vs 2/3000" in str(rolled_back["blocks"])
        assert SIGNATURE not in slack.events()[0].headers  # no secret: unsigned
    finally:
        slack.stop()


async def test_a_receiver_that_is_down_gets_its_events_in_order_when_it_is_back(engine, receiver):
    outbox = Outbox(engine, [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)])
    receiver.stop()  # nothing listens on its port
    sender = Sender(outbox, policy=FAST, poll_s=0.05)
    async with running(sender):
        for e in ONE_OF_EACH[:4]:
            outbox.enqueue(e)
        await wait_until(lambda: any(s.last_error for s in outbox.status()))
        with engine.connect() as conn:  # the first event's attempts are counted, the others wait
            attempts = dict(
                conn.execute(select(outbox_tables.deliveries.c.event_id, outbox_tables.deliveries.c.attempts)).all()
            )
        assert attempts[ONE_OF_EACH[0].id] >= 1 and all(attempts[e.id] == 0 for e in ONE_OF_EACH[1:4])
        for e in ONE_OF_EACH[4:]:
            outbox.enqueue(e)
        receiver.start()
        await wait_until(lambda: len(receiver.events()) == len(ONE_OF_EACH))
        await wait_until(lambda: outbox.status() == [])
    assert ids(receiver.events()) == [e.id for e in ONE_OF_EACH]


async def test_a_receiver_answering_errors_is_retried_until_it_takes_the_event(engine, receiver):
    outbox = Outbox(engine, [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)])
    receiver.status = 503
    async with running(Sender(outbox, policy=FAST, poll_s=0.05)):
        outbox.enqueue(ONE_OF_EACH[0])
        await wait_until(lambda: [s.last_error for s in outbox.status()] == ["answered 503"])
        receiver.status = 200
        await wait_until(lambda: len(receiver.events()) == 1)
        await wait_until(lambda: outbox.status() == [])
    assert ids(receiver.events()) == [ONE_OF_EACH[0].id]


async def test_a_new_sender_on_the_same_database_sends_nothing_twice(db_url, receiver):
    hooks = [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)]
    first_engine = make_engine(db_url)
    outbox = Outbox(first_engine, hooks)
    async with running(Sender(outbox, policy=FAST, poll_s=0.05)):
        for e in ONE_OF_EACH[:3]:
            outbox.enqueue(e)
        await wait_until(lambda: len(receiver.events()) == 3)
        await wait_until(lambda: outbox.status() == [])
    for e in ONE_OF_EACH[3:]:  # enqueued while no sender runs (the controller restarting)
        outbox.enqueue(e)
    assert outbox.enqueue(ONE_OF_EACH[0]) is Enqueued.DUPLICATE  # the same event again is stored once
    first_engine.dispose()

    second_engine = make_engine(db_url)  # a restarted controller: new engine, new outbox, new sender
    try:
        again = Outbox(second_engine, hooks)
        async with running(Sender(again, policy=FAST, poll_s=0.05)) as sender:
            await wait_until(lambda: len(receiver.events()) == len(ONE_OF_EACH))
            await wait_until(lambda: again.status() == [])
            for _ in range(3):  # more passes find nothing to send
                await sender.pass_once()
        assert ids(receiver.events()) == [e.id for e in ONE_OF_EACH]
    finally:
        second_engine.dispose()


async def test_an_event_in_a_transaction_that_rolls_back_is_never_sent(engine, receiver):
    outbox = Outbox(engine, [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)])
    with contextlib.suppress(RuntimeError), write_transaction(engine) as conn:
        assert outbox.enqueue_on(conn, ONE_OF_EACH[0]) is Enqueued.STORED
        raise RuntimeError("the transition failed")
    with write_transaction(engine) as conn:
        outbox.enqueue_on(conn, ONE_OF_EACH[1])
    sender = Sender(outbox, policy=FAST)
    assert await sender.pass_once() == 1
    assert ids(receiver.events()) == [ONE_OF_EACH[1].id]


async def test_an_event_the_database_refuses_waits_in_memory_and_is_sent_later(tmp_path, receiver):
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    engine = make_engine(url, busy_timeout_ms=50)
    blocker = make_engine(url)
    try:
        outbox = Outbox(engine, [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)])
        with blocker.connect().execution_options(sqlite_begin="IMMEDIATE") as hold, hold.begin():
            hold.execute(text("SELECT 1"))  # the write lock is held: every write fails fast
            assert outbox.enqueue(ONE_OF_EACH[0]) is Enqueued.DEFERRED  # not raised into the tick
            sender = Sender(outbox, policy=FAST)
            assert await sender.pass_once() == 0  # still locked: nothing sent, nothing raised
        assert await sender.pass_once() == 1
        assert ids(receiver.events()) == [ONE_OF_EACH[0].id]
    finally:
        engine.dispose()
        blocker.dispose()


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    policy = RetryPolicy(first_s=1.0, factor=2.0, max_s=60.0, jitter=0.2)
    rng = random.Random(7)
    for attempts, base in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)):
        delays = [policy.delay(attempts, rng) for _ in range(200)]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > base * 0.2  # jitter spreads them
    assert all(policy.delay(20, rng) <= 60.0 for _ in range(100))


def test_events_need_a_timezone_a_bounded_id_and_bounded_texts():
    from datetime import datetime

    with pytest.raises(ValueError, match="timezone"):
        RolloutEvent(EventKind.STARTED, "r", "s", "1", "2", at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="id"):
        RolloutEvent(EventKind.STARTED, "r", "s", "1", "2", id="x" * 65)
    long = RolloutEvent(EventKind.ROLLED_BACK, "r", "s", "1", "2", reason="x" * 10_000, evidence="y" * 3000)
    assert len(long.reason) == len(long.evidence) == 2000 and long.reason.endswith("…")


async def test_two_senders_on_one_database_share_the_work_and_send_each_event_once(db_url, receiver):
    hooks = [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)]
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        outboxes = [Outbox(e, hooks) for e in engines]
        many = [event(EventKind.STEP_PASSED, i, rollout="r2") for i in range(40)]
        async with (
            running(Sender(outboxes[0], policy=FAST, poll_s=0.01, batch=5)),
            running(Sender(outboxes[1], policy=FAST, poll_s=0.01, batch=5)),
        ):
            for i, e in enumerate(many):
                outboxes[i % 2].enqueue(e)
            await wait_until(lambda: len(receiver.events()) >= len(many))
            await wait_until(lambda: outboxes[0].status() == [])
        assert sorted(ids(receiver.events())) == sorted(e.id for e in many)
    finally:
        for e in engines:
            e.dispose()


async def test_status_shows_what_waits_and_prune_forgets_only_what_was_delivered_long_ago(engine, receiver):
    now = [1_000_000.0]
    outbox = Outbox(engine, [Webhook(receiver.url, WebhookKind.GENERIC, SECRET)], clock=lambda: now[0])
    outbox.enqueue(ONE_OF_EACH[0])
    outbox.enqueue(ONE_OF_EACH[1])
    (waiting,) = outbox.status()
    assert (waiting.pending, waiting.oldest_at, waiting.last_error) == (2, now[0], None)
    receiver.status = 500
    await Sender(outbox, policy=FAST, clock=lambda: now[0]).pass_once()
    assert [s.last_error for s in outbox.status()] == ["answered 500"]
    receiver.status = 200
    now[0] += 10
    assert await Sender(outbox, policy=FAST, clock=lambda: now[0]).pass_once() == 2
    outbox.enqueue(ONE_OF_EACH[2])  # not delivered: never pruned
    now[0] += 86_400
    assert outbox.prune(older_than_s=3600, batch=1) == 2  # one event per transaction
    assert [s.pending for s in outbox.status()] == [1]
    assert outbox.enqueue(ONE_OF_EACH[2]) is Enqueued.DUPLICATE


async def test_a_webhook_whose_delivery_raises_anything_fails_alone_and_the_sender_keeps_going(engine, receiver):
    # past the parser: httpx raises InvalidURL (not an HTTPError) for this port on every attempt
    broken = Webhook("https://hooks.example.com:abc/x", WebhookKind.GENERIC, SECRET)
    outbox = Outbox(engine, [broken, Webhook(receiver.url, WebhookKind.GENERIC, SECRET)])
    outbox.enqueue(ONE_OF_EACH[0])
    sender = Sender(outbox, policy=FAST, poll_s=0.05)
    assert await sender.pass_once() == 1  # returns normally, the other webhook got its event
    assert ids(receiver.events()) == [ONE_OF_EACH[0].id]
    (waiting,) = outbox.status()
    assert waiting.webhook == broken.key and "InvalidURL" in (waiting.last_error or "")
    async with running(sender):  # the loop survives it too, retrying the broken one with backoff
        outbox.enqueue(ONE_OF_EACH[1])
        sender.wake()
        await wait_until(lambda: len(receiver.events()) == 2, seconds=5)
        # the receiver answers before the sender stores the delivery: wait for the outbox to say so
        await wait_until(lambda: [s.webhook for s in outbox.status()] == [broken.key], seconds=5)

        def attempts() -> int:
            with engine.connect() as conn:
                row = conn.execute(
                    select(outbox_tables.deliveries.c.attempts).where(
                        outbox_tables.deliveries.c.webhook == broken.key,
                        outbox_tables.deliveries.c.event_id == ONE_OF_EACH[0].id,
                    )
                ).one()
            return int(row.attempts)

        await wait_until(lambda: attempts() >= 2, seconds=5)
    assert ids(receiver.events()) == [e.id for e in ONE_OF_EACH[:2]]
    assert [s.pending for s in outbox.status()] == [2]  # both still wait for the broken webhook


async def test_the_running_sender_prunes_events_delivered_long_ago_and_keeps_undelivered_ones(engine, receiver):
    now = [1_000_000.0]
    down = Receiver()  # never started: nothing listens on its port
    hooks = [
        Webhook(receiver.url, WebhookKind.GENERIC, SECRET),
        Webhook(down.url, WebhookKind.GENERIC, SECRET, frozenset({EventKind.ROLLED_BACK})),
    ]
    outbox = Outbox(engine, hooks, clock=lambda: now[0])
    started, rolled_back = (e for e in ONE_OF_EACH if e.kind in (EventKind.STARTED, EventKind.ROLLED_BACK))

    def stored() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(select(outbox_tables.events.c.id)).scalars())

    def deliveries_of(event_id: str) -> int:
        with engine.connect() as conn:
            table = outbox_tables.deliveries
            return len(conn.execute(select(table.c.id).where(table.c.event_id == event_id)).all())

    sender = Sender(outbox, policy=FAST, poll_s=0.02, clock=lambda: now[0], prune_every_s=0.05, keep_s=3600)
    async with running(sender):
        outbox.enqueue(started)  # only the receiver that is up wants it
        outbox.enqueue(rolled_back)  # the receiver that is down wants it too: never delivered there
        sender.wake()
        await wait_until(lambda: len(receiver.events()) == 2, seconds=5)
        await wait_until(lambda: any(s.last_error for s in outbox.status()), seconds=5)
        assert stored() == {started.id, rolled_back.id}  # delivered, but not long ago: kept
        now[0] += 7200
        fresh = ONE_OF_EACH[1]
        outbox.enqueue(fresh)
        sender.wake()
        await wait_until(lambda: started.id not in stored(), seconds=5)
        await wait_until(lambda: len(receiver.events()) == 3, seconds=5)
    assert stored() == {rolled_back.id, fresh.id}
    assert deliveries_of(started.id) == 0 and deliveries_of(rolled_back.id) == 2
    assert [s.pending for s in outbox.status()] == [1]
