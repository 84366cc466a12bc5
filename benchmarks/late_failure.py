"""A release that begins to fail after its promotion: how fast the watch rolls it back.

Importer 1.0 -> 1.1 under imports that refresh suppressed contacts, all with full fields: 1.1
passes its step and is promoted; the watch keeps 1.0 warm with a holdback share.  A few seconds
later the imports start carrying an empty first name, on which 1.1 fails (1.0 skips suppressed
contacts).  Figure: seconds from the first failing request to the rollback decision (and to
rolled back).  References, same run: the same fault while 1.1 is still a canary (from its first
failing request to the judge's rollback), ``ratio`` = watch / step; and the incident's 74 minutes
for its late failure, ``incident_ratio``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import report, wait_until_ended
from canary.stack import local_stack
from canary.traffic import contacts

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOOKS = 20
INCIDENT_S = 4440.0  # the resizer's late failure went unnoticed for 74 minutes
FAULT_AFTER_S = 3.0
SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.1"
  steps:
    - {weight: 25, min_requests: 20, min_seconds: 2, max_seconds: 120}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.2}
  watch: {seconds: 300, holdback: 25}
"""


class SuppressedImports:
    """Imports through the router, about 20 a second, each refreshing a suppressed contact; with
    ``empty`` set, its first name is empty (input that arrives only later: importer 1.1 fails on
    it, 1.0 skips suppressed contacts)."""

    def __init__(self, importer_url: str) -> None:
        self.url, self.empty, self.stop = importer_url, False, threading.Event()
        self.first_failure = 0.0
        self.thread = threading.Thread(target=self._run)

    def _import(self, client: httpx.Client, book: int, first: str) -> httpx.Response:
        body = f"Email,First name,Last name,City\ns{book}@example.com,{first},Lovelace,London\n".encode()
        return client.post(
            f"/address-books/{book}/imports",
            files={"file": ("c.csv", body)},
            data={"mapping": contacts.MAPPING},
            headers={"X-Account-Id": str(book)},
        )

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for book in range(BOOKS):  # each book holds a contact that is then suppressed (on 1.0)
                assert self._import(client, book, "Ada").status_code == 201
                put = client.put(f"/suppressions/s{book}@example.com", json={"reason": "unsubscribed"})
                assert put.status_code < 300, put.text
            i = 0
            while not self.stop.wait(0.05):
                i += 1
                r = self._import(client, i % BOOKS, "" if self.empty else "Ada")
                if r.status_code >= 500 and not self.first_failure:
                    self.first_failure = time.time()

    def __enter__(self) -> SuppressedImports:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _at(r: dict[str, Any], phase_from: str, phase_to: str) -> float:
    return float(next(d["at"] for d in r["decisions"] if (d["phase_from"], d["phase_to"]) == (phase_from, phase_to)))


def _poll(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    with tempfile.TemporaryDirectory() as d, local_stack(Path(d), {"importer": "1.0"}, TOKEN) as (ctl, router, _):

        def rollout() -> str:
            return str(httpx.post(f"{ctl}/api/rollouts", content=SPEC, headers=AUTH).json()["id"])

        def phase(rid: str) -> str:
            return str(httpx.get(f"{ctl}/api/rollouts/{rid}", headers=AUTH).json()["phase"])

        with SuppressedImports(f"{router}/importer") as step_traffic:  # reference: the fault while a canary
            step_traffic.empty = True
            rid = rollout()
            step = wait_until_ended(ctl, rid, AUTH, 120)
        step_s = _at(step, "progressing", "rolling_back") - step_traffic.first_failure
        with SuppressedImports(f"{router}/importer") as traffic:
            rid = rollout()
            _poll(lambda: phase(rid) == "watching", 120)
            time.sleep(FAULT_AFTER_S)  # the scenario: healthy for a while after the promotion
            traffic.empty = True
            late = wait_until_ended(ctl, rid, AUTH, 120)
    decided_s = _at(late, "watching", "rolling_back") - traffic.first_failure
    rolled_back_s = _at(late, "rolling_back", "rolled_back") - traffic.first_failure
    report(
        {
            "name": "late_failure",
            "outcome": late["phase"],
            "reason": late["reason"],
            "watch_decision_s": round(decided_s, 2),
            "watch_rolled_back_s": round(rolled_back_s, 2),
            "step_decision_s": round(step_s, 2),
            "ratio": round(decided_s / step_s, 3) if step_s > 0 else None,
            "incident_s": INCIDENT_S,
            "incident_ratio": round(rolled_back_s / INCIDENT_S, 6),
        }
    )


if __name__ == "__main__":
    main()
