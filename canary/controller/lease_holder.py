"""Who this controller is for the lease (``Store.acquire_lease``): only the holder acts.

A controller restarted in place (the same ``canary up``, the same pod) should take its lease back at
once instead of waiting ``LEASE_TTL_S`` for it to expire, and two controllers must never act at
once.  Both hold with one name per state directory on a host, *valid only while an exclusive OS
lock* (``flock``) on ``STATE/controller.lock`` is held: the kernel drops the lock when its process
dies, SIGKILL included, so the controller that gets it knows that no other controller with that name
still runs, and takes the name's lease back at once.  One that does not get the lock (another
controller runs on the same state directory) is named uniquely and waits for the lease like a
controller on another host.  The lock file's descriptor is not inherited by the processes the
controller starts (Python makes new descriptors non-inheritable), so a release left running does not keep it.

The holder writes its pid into the lock file (``lock_holder_pid``: who acts, for ``canary up`` and
the tests).  ``wait_for_lock`` is the warm standby's way in (``canary.controller.local_controllers``):
it blocks in ``flock`` (no CPU while it waits) until the acting controller's process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import uuid
from pathlib import Path

log = logging.getLogger("releasewarden.controller")
LOCK_FILE = "controller.lock"


class LeaseHolder:
    """This controller's name for the lease; ``close()`` (or the process's end) frees the name."""

    def __init__(self, name: str, fd: int | None) -> None:
        self.name = name
        self._fd = fd

    @property
    def stable(self) -> bool:
        """The name is this state directory's (taken back at once after a restart), not a unique one."""
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor
            self._fd = None


def _stable_name(where: Path) -> str:
    # the path's digest, not the path: the lease's holder column is 64 characters
    return f"{socket.gethostname()[:32]}:{hashlib.sha256(str(where).encode()).hexdigest()[:24]}"


def _mark_held(fd: int) -> None:
    """Write this process's pid into the (locked) file: who holds it, for those who look."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def wait_for_lock(state_dir: str | Path) -> LeaseHolder:
    """Block until this state directory's lock is free, then hold it: the state directory's name."""
    where = Path(state_dir).resolve()
    where.mkdir(parents=True, exist_ok=True)
    fd = os.open(where / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel wakes it when the holder's process ends, SIGKILL included
    _mark_held(fd)
    return LeaseHolder(_stable_name(where), fd)


def lock_holder_pid(state_dir: str | Path) -> int | None:
    """The pid of the controller holding the state directory's lock, or None if none holds it.

    When none holds it, this probe holds a shared lock for a moment: a standby waiting in
    ``wait_for_lock`` waits that moment longer; ``lease_holder`` (which does not wait) could miss it."""
    path = Path(state_dir).resolve() / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: the holder wrote its pid when it took it
            text = path.read_text().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: the pid in the file is a dead holder's
        return None
    finally:
        os.close(fd)


def lease_holder(state_dir: str | Path) -> LeaseHolder:
    """The state directory's name on this host if its lock is free, else a unique name."""
    host = socket.gethostname()[:32]
    where = Path(state_dir).resolve()
    fd = None
    with contextlib.suppress(OSError):  # a state directory it cannot write: a unique name, and the wait
        where.mkdir(parents=True, exist_ok=True)
        fd = os.open(where / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            fd = None
            log.warning(
                "another controller runs on the state directory %s (it holds %s): this one waits for the lease",
                where,
                LOCK_FILE,
            )
    if fd is None:
        return LeaseHolder(f"{host}:{uuid.uuid4().hex[:16]}", None)
    _mark_held(fd)
    return LeaseHolder(_stable_name(where), fd)
