"""A `canary up` on a state directory, seen from the outside (its controller's API, its router's
table and answers, its processes' pids and CPU time), and `canary load` driving it: the harness of
`benchmarks.crashes` and of the tests that run a whole stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from canary.platforms.processes import free_port
from canary.stack import service_token
from canary.traffic.load import LoadConfig, run
from core.routes import RouteTable, ServiceRoute, parse_table

RATE = 40.0  # requests per second of the load


class Stack:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.cport, self.rport = free_port(), free_port()
        self.controller = f"http://127.0.0.1:{self.cport}"
        self.router = f"http://127.0.0.1:{self.rport}"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        argv = [sys.executable, "-m", "canary.cli", "up", "--state-dir", str(self.state)]
        argv += ["--controller-port", str(self.cport), "--router-port", str(self.rport)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def token(self) -> str:
        return (self.state / "admin-token").read_text().strip()

    def opens_token(self) -> str:
        """What the opens releases take for their own admin endpoints (its token minting)."""
        return service_token(self.state, "opens")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def get(self, url: str, **kw: Any) -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=2, **kw)
        except httpx.HTTPError:
            return None

    def api_answers(self) -> bool:
        if not (self.state / "admin-token").exists():
            return False
        r = self.get(f"{self.controller}/api/rollouts", headers=self.auth())
        return r is not None and r.status_code == 200

    def acted(self, since: float = 0.0) -> bool:
        """A controller ticked holding the lease after ``since`` (wall clock)."""
        r = self.get(f"{self.controller}/metrics")
        if r is None or r.status_code != 200:
            return False
        for line in r.text.splitlines():
            if line.startswith("canary_controller_last_tick_timestamp_seconds"):
                return float(line.split()[-1]) > since
        return False

    def controllers(self) -> list[int]:
        """The controller processes `canary up` keeps: the acting one and its warm standby."""
        pattern = f"canary.controller --host 127.0.0.1 --port {self.cport} "
        out = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout
        return sorted(int(pid) for pid in out.split())

    def idle(self, pid: int) -> bool:
        """The process used no CPU over the last half second (a standby done with its imports)."""
        before = self.cpu_seconds(pid)
        time.sleep(0.5)
        return self.cpu_seconds(pid) == before

    def refused(self) -> bool:
        """A new connection to the controller's URL is refused (a request cut in flight is not)."""
        try:
            httpx.get(f"{self.controller}/healthz", timeout=10)
        except httpx.ConnectError:
            return True
        except httpx.HTTPError:
            pass
        return False

    def releases_answering(self) -> set[str]:
        seen = set()
        for i in range(20):
            r = self.get(f"{self.router}/importer/healthz", headers={"X-Account-Id": str(i)})
            seen.add(r.json()["release"] if r is not None and r.status_code == 200 else "error")
        return seen

    def tables(self) -> tuple[RouteTable, RouteTable] | None:
        """The controller's table and the router's, or None while either does not answer."""
        mine = self.get(f"{self.controller}/api/routes", headers=self.auth())
        served = self.get(f"{self.router}/_router/table", headers=self.auth())
        if mine is None or served is None or mine.status_code != 200 or served.status_code != 200:
            return None
        return parse_table(mine.json()), parse_table(served.json())

    def router_serves(self, phase: Callable[[ServiceRoute], bool]) -> bool:
        """What consumers get: the router's table routes as the stored phase says."""
        served = self.get(f"{self.router}/_router/table", headers=self.auth())
        if served is None or served.status_code != 200:
            return False
        route = parse_table(served.json()).services.get("importer")
        return route is not None and phase(route)

    def world_matches(self, phase: Callable[[ServiceRoute], bool]) -> bool:
        """The controller publishes the stored phase's routing, and the router serves that table."""
        both = self.tables()
        if both is None:
            return False
        mine, served = both
        route = mine.services.get("importer")
        return route is not None and phase(route) and served.services == mine.services

    def pids(self) -> set[int]:
        try:
            return {r["pid"] for r in json.loads((self.state / "platform.json").read_text())["releases"]}
        except (OSError, ValueError, KeyError):
            return set()

    def cpu_seconds(self, pid: int = 0) -> float:
        """CPU time a process (by default `canary up`) has used so far, its children counted in
        (the controllers are its children): its own work, whatever the machine's load."""
        assert self.proc is not None
        fields = Path(f"/proc/{pid or self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)


def until(condition: Callable[[], Any], seconds: float = 120.0, step: float = 0.02) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise TimeoutError("condition not met")
        time.sleep(step)
    return time.monotonic() - start


def load_through(router_url: str, token: str, rate: float = RATE) -> LoadConfig:
    """`canary load` through the router at ``rate``, for up to an hour (stopped by its event);
    ``token`` is the service token, which mints the opens' tracking tokens."""
    return LoadConfig(
        importer=f"{router_url}/importer",
        opens=f"{router_url}/opens",
        resizer=f"{router_url}/resizer",
        rate=rate,
        duration=3600.0,
        admin_token=token,
        accounts=10,
        pool=40,
    )


class Load:
    def __init__(self, stack: Stack) -> None:
        config = load_through(stack.router, stack.opens_token())
        self.stack = stack
        self.before = self.pixels()
        self.stop_event = threading.Event()
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=lambda: self.result.update(run(config, stop=self.stop_event)))
        self.thread.start()

    def pixels(self) -> int:
        r = self.stack.get(f"{self.stack.router}/_router/stats")
        counters = r.json().get("counters", []) if r is not None else []
        return sum(c["requests"] for c in counters if c["service"] == "opens")

    def running(self) -> bool:
        """Prepared and driving: pixel hits reach the router (the load prepares accounts first)."""
        return self.pixels() > self.before + 40

    def stop(self) -> dict[str, Any]:
        """What consumers saw while it ran."""
        self.stop_event.set()
        self.thread.join(120)
        services = self.result["services"]
        return {
            "consumer_errors": sum(sum(s["errors"].values()) for s in services.values()),
            "consumer_requests": sum(s["requests"] for s in services.values()),
            "errors_by_kind": {n: s["errors"] for n, s in services.items() if s["errors"]},
        }
