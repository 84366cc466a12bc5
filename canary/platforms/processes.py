"""Running service releases as child processes on this machine: ports, logs, readiness, stopping.

The building block of the local platform: a process per release, started from its catalog entry's
:class:`~canary.catalog.Launch` (argv, environment, working directory), its output in a log file in
the state directory, readiness by polling the entry's ready path, and a stop that sends SIGTERM,
waits, then kills.  While a release is waited for, what its ready path answered last is kept
(``ServiceProcess.not_ready``, in words: ``probe``), for the controller to show while it waits.
Each runs in its own session, so it outlives a controller killed outright; a process adopted from
such a controller is known by its pid only, and is checked to still be ours (its command line)
before it is ever signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from canary.catalog import Launch
from canary.catalog.settings import shipped_catalog
from canary.platforms.base import one_line
from core.errors import DependencyUnavailable
from core.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """A release's process: one this controller started (``popen``), or one it adopted from a
    controller that was killed (only its pid: it is no child of ours, init reaps it)."""

    name: str
    release: str
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None
    pid: int = 0
    started_at: float = field(default_factory=time.monotonic)
    ready_path: str = "/readyz"
    ready_timeout_s: float = 30.0
    not_ready: str = ""  # what its ready path answered last while it was waited for (``wait_ready``)

    def __post_init__(self) -> None:
        if self.popen is not None:
            self.pid = self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def adopted(self) -> bool:
        return self.popen is None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen.poll() is None if self.popen is not None else pid_alive(self.pid)

    def stop(self, grace_s: float = 10.0) -> int | None:
        if self.popen is None:
            stop_group(self.pid, grace_s)
            return None
        # the whole process group (its own session): a command that does not exec its server (a
        # shell wrapper) leaves the server as a child, which must stop with it
        group = self.popen.pid
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while (self.popen.poll() is None or _group_alive(group)) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_group(group, signal.SIGKILL)  # whatever of it is left after the grace
        self.popen.wait()
        return self.popen.returncode


def _signal_group(group: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def command_line(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def runs_module(pid: int, module: str, port: int) -> bool:
    """Is ``pid`` still the process we recorded (``python -m MODULE ... --port PORT``)?  A pid can be
    reused by another program after ours died: never signal that one."""
    argv = command_line(pid)
    return module in argv and any(a == "--port" and b == str(port) for a, b in itertools.pairwise(argv))


def runs_argv(pid: int, argv: tuple[str, ...] | list[str]) -> bool:
    """Is ``pid`` still running exactly the command we started (its argv names its port)?"""
    return command_line(pid) == list(argv)


def start_ticks(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot; 0 if unknown).  With the pid it names one process
    for good: a reused pid starts later, and an ``exec`` (a shell that execs its server, a server that
    rewrites its title) keeps it, where the command line changes."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0


def stop_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of a process we did not start (each runs in its own session),
    wait for it to end, then SIGKILL."""
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


# the controller's own settings (core.settings reads CANARY_<NAME>): its tokens, its database, the
# files that may hold either; a release's entry names the tokens it gets ({settings.service_token})
CONTROLLER_ONLY = frozenset(
    f"CANARY_{name.upper()}"
    for name in (
        "admin_token",
        "alert_token",
        "read_token",
        "table_token",
        "service_token",
        "db_url",
        "config",
        "webhooks",
    )
)


def inherited_environment(withheld: Collection[str] = ()) -> dict[str, str]:
    """What a release takes from this process's environment: all but the controller's own settings
    (:data:`CONTROLLER_ONLY`; the services' settings, ``CANARY_TOKEN_SECRET`` or
    ``CANARY_LOG_LEVEL``, pass) and any variable whose value is one of ``withheld`` (a webhook's
    secret, whatever its name)."""
    return {k: v for k, v in os.environ.items() if k not in CONTROLLER_ONLY and not (v and v in withheld)}


def start_launch(
    name: str,
    release: str,
    launch: Launch,
    *,
    port: int,
    state_dir: Path,
    env: dict[str, str] | None = None,
    withheld: Collection[str] = (),
) -> ServiceProcess:
    """Start ``launch`` (rendered for ``port``): ``env`` is added to what it inherits
    (:func:`inherited_environment`), the entry's environment last."""
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}-{release}-{port}.log"
    try:
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(launch.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**inherited_environment(withheld), **(env or {}), **launch.environment},
                cwd=launch.working_dir,
                start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop children in order
            )
    except OSError as exc:  # no such program, not executable, no such working directory
        raise DependencyUnavailable(f"{name} {release}: cannot start {launch.argv[0]!r}: {exc.strerror}") from None
    return ServiceProcess(
        name, release, port, log_path, popen, ready_path=launch.ready_path, ready_timeout_s=launch.ready_timeout_s
    )


def start_service(
    name: str,
    release: str,
    *,
    db_url: str,
    state_dir: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """A release of one of the shipped catalog's services (tests, benchmarks, the replay)."""
    port = port or free_port()
    env = env or {}
    launch = shipped_catalog().launch(
        name,
        release,
        port=port,
        state_dir=state_dir,
        # the entry hands a release the controller's service and table tokens: here, the caller's
        settings=Settings(
            service_token=env.get("CANARY_ADMIN_TOKEN", ""), table_token=env.get("CANARY_TABLE_TOKEN", "")
        ),
        track=env.get("CANARY_TRACK", "stable"),
        route_table=env.get("CANARY_ROUTE_TABLE", ""),
        db_url=db_url,
    )
    # the caller's settings win (the entry derives each service's own tokens from the controller's:
    # here the caller gives the service its token itself)
    launch_env = {k: v for k, v in launch.environment.items() if k not in env}
    return start_launch(
        name, release, dataclasses.replace(launch, environment=launch_env), port=port, state_dir=state_dir, env=env
    )


def probe(url: str, timeout_s: float = 1.0) -> str:
    """Empty when ``url`` (a ready path) answers 200; else what happened instead, in one line."""
    try:
        answer = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return failure_words(url, exc, timeout_s)
    return answer_words(url, answer)


def failure_words(url: str, exc: httpx.HTTPError, timeout_s: float) -> str:
    """What asking ``url`` (a ready path) met instead of an answer, in one line."""
    where = httpx.URL(url)
    if isinstance(exc, httpx.ConnectError):
        if _refused(exc):
            return f"connection refused on port {where.port}"
        return f"no connection to port {where.port}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return f"ready path {where.path} did not answer within {timeout_s:g} s"
    return f"ready path {where.path}: {type(exc).__name__}: {exc}"


def _refused(exc: BaseException) -> bool:
    """Nothing listens: the refusal itself, or an async client's "all attempts failed" caused by it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def answer_words(url: str, answer: httpx.Response) -> str:
    """Empty for a 200 from ``url`` (a ready path); else what it answered, in one line."""
    if answer.status_code == 200:
        return ""
    said = one_line(answer.text, 200)
    return f"ready path {httpx.URL(url).path} answered {answer.status_code}" + (f": {said}" if said else "")


def wait_until_answers(
    url: str, alive: Callable[[], bool], timeout_s: float, heard: Callable[[str], None] | None = None
) -> str:
    """Poll ``url`` until it answers 200 (``ready``), the process exits (``exited``) or time runs out;
    ``heard`` is told what each probe that did not answer 200 got instead (``probe``'s words)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return "exited"
        said = probe(url)
        if not said:
            return "ready"
        if heard is not None:
            heard(said)
        time.sleep(0.05)
    return "timeout"


def wait_ready(proc: ServiceProcess, timeout_s: float | None = None) -> None:
    timeout_s = proc.ready_timeout_s if timeout_s is None else timeout_s

    def heard(said: str) -> None:
        proc.not_ready = said

    outcome = wait_until_answers(f"{proc.url}{proc.ready_path}", proc.alive, timeout_s, heard)
    if outcome == "exited":
        tail = proc.log_path.read_text(errors="replace")[-2000:]
        raise DependencyUnavailable(f"{proc.name} {proc.release} exited at start; its log ends:\n{tail}")
    if outcome == "timeout":
        said = f": {proc.not_ready}" if proc.not_ready else ""
        raise DependencyUnavailable(
            f"{proc.name} {proc.release} not ready after {timeout_s:.0f}s{said} (log: {proc.log_path})"
        )


def wait_ready_url(url: str, popen: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait until ``url`` answers 200, failing early if the process exits."""
    outcome = wait_until_answers(url, lambda: popen.poll() is None, timeout_s)
    if outcome == "exited":
        raise DependencyUnavailable(f"process exited at start ({popen.args!r})")
    if outcome == "timeout":
        raise DependencyUnavailable(f"{url} not ready after {timeout_s:.0f}s")


def exited_words(proc: ServiceProcess) -> str:
    """A release's process that exited, in one line: its exit code (if ours) and its log's last line."""
    code = f" with code {proc.returncode}" if proc.returncode is not None else ""
    return f"process exited{code}: {last_log_line(proc.log_path)}"


def last_log_line(path: Path, offset: int = 0, prefer: str = "") -> str:
    """The last line of what the log holds from ``offset`` on (earlier runs wrote the rest; only its
    last 64 KiB are read), or of its lines that start with ``prefer``, if any; one line, its end kept
    if long (``one_line``)."""
    try:
        with path.open("rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - 65536))
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if prefer and line.startswith(prefer)]
    return one_line((said or lines or ["no output"])[-1])
