"""A rollout whose canary is not ready yet, on the local platform with real processes, seen from
outside while it waits: ``canary status``, ``canary why``, the API's rollout summary and the
dashboard's state (a group member's rollout too) say what the canary's ready path answers, how long
the rollout has waited and its deadline (the entry's ready_timeout_s here, sooner than the
controller's 120 s); the dashboard's stream tells an open page when those words change; once the
canary is ready, nothing of it is left."""

from __future__ import annotations

import re
import threading
import time

import httpx

from canary import cli
from canary.stack import admin_token, local_stack
from tests.canary.test_local_platform import slow_catalog
from tests.conftest import wait_for_rollout

NOT_READY = re.compile(
    r"    not ready after \d+ s of 6\d s \(the platform's start deadline\): hello 2: ready path /healthz "
    r"answered 503: warming up until \S+/ready-2 exists \(log \S+/logs/hello-2-\d+\.log\)"
)


def said(argv: list[str], capsys, words: str, seconds: float = 60) -> str:
    """What the command prints, once it says ``words`` (polled until a deadline)."""
    deadline = time.monotonic() + seconds
    while True:
        assert cli.main(argv) == 0
        out: str = capsys.readouterr().out
        if words in out:
            return out
        assert time.monotonic() < deadline, f"never said {words!r}:\n{out}"
        time.sleep(0.2)


def member_rollout(controller: str, auth: dict[str, str], seconds: float = 60) -> str:
    """The rollout id of the one group's one member, once the group has started it."""
    deadline = time.monotonic() + seconds
    while True:
        groups = httpx.get(f"{controller}/api/groups", headers=auth).json()["groups"]
        rollout = groups[0]["members"][0]["rollout"] if groups else None
        if rollout:
            return str(rollout["id"])
        assert time.monotonic() < deadline, groups
        time.sleep(0.2)


def test_canary_status_the_api_and_the_dashboard_say_why_a_pending_canary_is_not_ready(tmp_path, capsys):
    catalog = slow_catalog(tmp_path)
    (catalog / "ready-1").touch()  # stable is ready at once; hello 2 answers 503 until ready-2 exists
    state = tmp_path / "state"
    token = admin_token(state)
    auth = {"Authorization": f"Bearer {token}"}
    with local_stack(state, None, token, catalog=str(catalog)) as (controller, _, _app):
        where = ["--controller", controller, "--state-dir", str(state)]
        events: list[str] = []

        def read_events() -> None:  # an open dashboard page's stream, until the stack stops
            with httpx.stream("GET", f"{controller}/api/events", headers=auth, timeout=90) as stream:
                events.extend(stream.iter_lines())

        reader = threading.Thread(target=read_events, name="dashboard-events", daemon=True)
        reader.start()
        group = tmp_path / "group.yaml"  # released as a group's member: its view says so too
        group.write_text(
            "apiVersion: releasewarden/v1\nkind: Group\nmetadata: {name: slow}\n"
            'spec:\n  members:\n    - {service: hello, release: "2"}\n'
        )
        assert cli.main(["release", "--group", str(group), "--catalog", str(catalog), *where]) == 0
        capsys.readouterr()
        rid = member_rollout(controller, auth)

        status = said(["status", *where], capsys, "answered 503")
        assert any(NOT_READY.fullmatch(line) for line in status.splitlines()), status
        assert re.search(rf"^{rid[:8]}  hello +1 -> 2 +pending", status, re.M), status
        why = said(["why", rid[:8], *where], capsys, "answered 503")
        assert "\n  now, not ready after " in why, why

        shown = httpx.get(f"{controller}/api/rollouts/{rid}", headers=auth).json()
        waiting = shown["not_ready"]
        assert shown["phase"] == "pending" and set(waiting) == {"reason", "waited_s", "deadline_s", "deadline_by"}
        assert waiting["reason"].startswith("hello 2: ready path /healthz answered 503: warming up until")
        assert waiting["deadline_by"] == "platform" and 60 <= waiting["deadline_s"] < 70 and waiting["waited_s"] >= 0
        listed = httpx.get(f"{controller}/api/rollouts", headers=auth).json()["rollouts"]
        assert [r["not_ready"]["reason"] for r in listed] == [waiting["reason"]]
        page = httpx.get(f"{controller}/api/dashboard/state", headers=auth).json()
        assert [r["not_ready"]["reason"] for r in page["active"]] == [waiting["reason"]]
        assert f'data: {{"rollout": "{rid}", "what": "waiting"}}' in events, events
        (member,) = httpx.get(f"{controller}/api/groups", headers=auth).json()["groups"][0]["members"]
        assert member["rollout"]["not_ready"]["reason"] == waiting["reason"]
        drawn = page["groups"][0]["members"][0]["rollout"]["not_ready"]
        assert (drawn["reason"], drawn["deadline_by"]) == (waiting["reason"], "platform")

        (catalog / "ready-2").touch()
        going = wait_for_rollout(controller, rid, lambda r: r["phase"] != "pending", auth, 60)
        assert going["phase"] == "progressing" and going["not_ready"] is None, going
        assert "not ready" not in said(["status", *where], capsys, "progressing")
        assert cli.main(["abort", rid[:8], *where]) == 0
        wait_for_rollout(controller, rid, lambda r: r["phase"] == "rolled_back", auth, 60)
    reader.join(30)
