"""A burst on a database the whole group shares: the report says the members' stable tracks failed
together, and no member is rolled back for it (each canary is judged against its own stable).

Real processes on 127.0.0.1: the controller, the router, importer and resizer (stable 1.0, canaries
1.2 and 2.1) on one real PostgreSQL server, a database each; `canary load` through the router; the
replay's own recorder and report code.  The burst is real: both databases refuse connections and
their sessions are terminated for ``BURST_S`` seconds, so every request that needs the database
fails, on stable and canary alike.  The judge finds neither canary worse; after the burst the step
may lack the evidence to pass before its ``max_seconds`` (both tracks' bad rates rose), so the spec
promotes an inconclusive step: what the test asserts is that nothing is rolled back.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from benchmarks.up_stack import until
from canary.controller.evidence_figures import figures
from canary.replay import group_report, shared_stable
from canary.replay.figures import group_figures, release_figures
from canary.replay.recorder import GroupTrack, Recorder
from canary.stack import admin_token, local_stack, service_token
from canary.traffic.load import LoadConfig, run
from core.db import normalise_url
from tests.conftest import pg_base_url

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("importer", "resizer")
BURST_S = 10.0
ROLLOUT = (
    "{steps: [{weight: 50, min_requests: 60, min_seconds: 40, max_seconds: 60}], on_inconclusive: promote,"
    " metrics: [{name: errors, kind: errors, rate_floor: 0.2}], watch: {seconds: 2}}"
)
GROUP = f"""apiVersion: releasewarden/v1
kind: Group
metadata: {{name: shared-db}}
spec:
  policy: independent
  members:
    - {{service: importer, release: "1.2", rollout: {ROLLOUT}}}
    - {{service: resizer, release: "2.1", rollout: {ROLLOUT}}}
"""


@contextmanager
def databases(base: str) -> Iterator[dict[str, str]]:
    """A database per service on the test PostgreSQL server (dropped afterwards): their URLs."""
    admin = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    names = {s: f"burst_{uuid.uuid4().hex[:8]}_{s}" for s in SERVICES}
    root = base.rsplit("/", 1)[0]
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield {s: f"{root}/{name}" for s, name in names.items()}
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


TERMINATE = text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n")


def outage(base: str, urls: dict[str, str], seconds: float) -> None:
    """Every database of the group refuses connections, and loses its sessions, for ``seconds``."""
    admin = create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    names = [url.rsplit("/", 1)[1] for url in urls.values()]
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            end = time.monotonic() + seconds
            while time.monotonic() < end:  # sessions opened just before the switch are cut too
                for name in names:
                    conn.execute(TERMINATE, {"n": name})
                time.sleep(0.5)
            for name in names:
                conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
    finally:
        admin.dispose()


def catalog(folder: Path, urls: dict[str, str]) -> Path:
    """The shipped entries of importer and resizer, each on its PostgreSQL database."""
    folder.mkdir()
    for service in SERVICES:
        entry = (ROOT / "manifests/services" / f"{service}.yaml").read_text()
        shipped = 'database: "sqlite:///{state_dir}/{service}.db"'
        assert shipped in entry
        (folder / f"{service}.yaml").write_text(entry.replace(shipped, f'database: "{urls[service]}"'))
    return folder


def members_of(group: GroupTrack) -> dict[str, dict]:
    return {t.service: t.detail for t in group.members}


def canaries_served(members: dict[str, dict], requests: int) -> bool:
    """Every member's judge has counted at least ``requests`` canary requests (in any metric)."""

    def served(detail: dict) -> int:
        counts = [figures(j.get("evidence")) for j in (detail.get("judge") or {}).values()]
        return max((f.canary_requests or 0 for f in counts if f is not None), default=0)

    return bool(members) and all(served(d) >= requests for d in members.values())


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_a_burst_on_the_shared_database_is_noted_and_rolls_no_member_back(tmp_path):
    base = pg_base_url()
    if not base:
        pytest.skip("CANARY_TEST_PG_URL not set (run through `make test`)")
    state = tmp_path / "state"
    token = admin_token(state)
    with (
        databases(base) as urls,
        local_stack(state, None, token, router_as_process=True, catalog=str(catalog(tmp_path / "catalog", urls))) as (
            controller,
            router,
            _,
        ),
    ):
        recorder = Recorder(controller, router, token)
        recorder.start()
        stop, prepared = threading.Event(), threading.Event()
        config = LoadConfig(
            importer=f"{router}/importer",
            resizer=f"{router}/resizer",
            rate=10,
            duration=600,
            mix={"importer": 0.7, "resizer": 0.3},
            accounts=200,
            pool=10,
            admin_token=service_token(state, "opens"),
        )
        load = threading.Thread(
            target=run, args=(config, lambda line: prepared.set() if line.startswith("prepared") else None, stop)
        )
        load.start()
        try:
            until(prepared.is_set, 120, step=0.2)
            group = recorder.release_group(GROUP)
            assert [t.service for t in group.members] == list(SERVICES)
            until(lambda: all(d.get("phase") == "progressing" for d in members_of(group).values()), 120, step=0.2)
            # a little of the step before the burst (so that it falls inside the window): each canary
            # has served a few requests the judge counted
            until(lambda: canaries_served(members_of(group), 3), 60, step=0.2)
            burst_from = recorder.now() - group.started
            outage(base, urls, BURST_S)
            burst_to = recorder.now() - group.started
            until(lambda: group.done, 300, step=0.5)
        finally:
            stop.set()
            load.join(60)
            recorder.stop()

    # no member rolled back: each canary failed as much as its own stable, and was judged against it
    outcomes = {s: (d["phase"], d["decided_by"]) for s, d in members_of(group).items()}
    assert {s: phase for s, (phase, _) in outcomes.items()} == {"importer": "succeeded", "resizer": "succeeded"}, (
        outcomes
    )
    assert group.detail["phase"] == "promoted"
    # the burst was real: both stable tracks failed during it
    for track in group.members:
        windows = shared_stable.failing_windows(track, group.started)
        assert any(w.start <= burst_to and w.end >= burst_from for w in windows), (track.service, windows)
    notes = shared_stable.notes(group)
    promoted_by = {t.service: release_figures(t, {}, None)["decided_by"] for t in group.members}
    print(
        json.dumps({"burst_s": [round(burst_from, 1), round(burst_to, 1)], "notes": notes, "promoted_by": promoted_by})
    )
    assert len(notes) == 1, notes
    assert notes[0].startswith("Group shared-db: the stable tracks of importer, resizer failed together from +")
    assert "members judged against their own stable" in notes[0] and "none of them was rolled back then" in notes[0]
    start, end = (float(x) for x in notes[0].split("from +", 1)[1].split(" s after", 1)[0].split(" s to +"))
    assert start <= burst_to and end >= burst_from and end - start <= BURST_S + 2 * shared_stable.GAP_S + 12

    # the report shows it in the group's section
    figures = group_figures(group, [release_figures(t, {}, None) for t in group.members])
    page = group_report.section(figures, group, notes)
    assert "members judged against their own stable" in page and "<svg" in page
