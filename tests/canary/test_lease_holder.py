"""The controller's name for the lease (``canary.controller.lease_holder``): a state directory's name
while its lock is held, so a controller restarted in place acts again at once, and never two at once.
Real processes killed with SIGKILL, real controller apps on one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from canary.controller.app import create_controller_app
from canary.controller.lease_holder import lease_holder
from core.settings import Settings

HOLD = """
import subprocess, sys, time
from canary.controller.lease_holder import lease_holder
holder = lease_holder(sys.argv[1])
child = subprocess.Popen(["sleep", "600"], start_new_session=True)  # a release it leaves running
print(holder.stable, holder.name, child.pid, flush=True)
time.sleep(600)
"""


def test_the_state_directory_name_is_one_controller_s_at_a_time(tmp_path):
    first, second = lease_holder(tmp_path), lease_holder(tmp_path)
    try:
        assert first.stable and not second.stable and first.name != second.name
        first.close()
        again = lease_holder(tmp_path)  # the first is gone: its name is free again
        assert again.stable and again.name == first.name
        again.close()
        assert lease_holder(tmp_path / "elsewhere").name != first.name
    finally:
        first.close()
        second.close()


def test_a_controller_killed_outright_frees_its_name_even_with_its_releases_still_running(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    grandchild = 0
    try:
        assert proc.stdout is not None
        stable, name, pid = proc.stdout.readline().split()
        grandchild = int(pid)
        assert stable == "True"
        assert not lease_holder(tmp_path).stable  # held by the running one
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        os.kill(grandchild, 0)  # the process it started still runs, and does not keep the lock
        after = lease_holder(tmp_path)
        assert after.stable and after.name == name
        after.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if grandchild:
            os.kill(grandchild, signal.SIGKILL)


@pytest.mark.anyio
async def test_a_second_controller_on_the_same_state_directory_does_not_act(db_url, tmp_path):
    def app():  # no services: only the lease and the loop matter here
        settings = Settings(db_url=db_url, state_dir=str(tmp_path), admin_token="t")
        return create_controller_app(settings, stable={}, router_url="", public_url="", tick_s=3600)

    one, two = app(), app()
    async with one.router.lifespan_context(one), two.router.lifespan_context(two):
        first, second = one.state.controller, two.state.controller
        assert first.holder != second.holder
        for _ in range(3):
            await first.tick()
            await second.tick()
        # whichever ticked first (their loops run too) holds the lease: the other never acts
        assert [c.table_ready for c in (first, second)].count(True) == 1
        assert [c.last_tick > 0 for c in (first, second)].count(True) == 1


WAIT = """
import sys, time
from canary.controller.lease_holder import wait_for_lock
holder = wait_for_lock(sys.argv[1])
print(holder.name, flush=True)
time.sleep(600)
"""


def test_a_warm_standby_waits_while_the_holder_lives_and_takes_its_name_when_it_is_killed(tmp_path):
    from canary.controller.lease_holder import lock_holder_pid

    assert lock_holder_pid(tmp_path) is None  # none holds it yet
    holder = subprocess.Popen([sys.executable, "-c", WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    name = holder.stdout.readline().strip()  # it took the lock at once: none held it
    standby = subprocess.Popen([sys.executable, "-c", WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert standby.stdout is not None
        assert lock_holder_pid(tmp_path) == holder.pid
        assert not lease_holder(tmp_path).stable  # a third one gets a name of its own
        # the standby blocks in flock for as long as the holder lives: it never holds the name beside it
        os.set_blocking(standby.stdout.fileno(), False)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert standby.stdout.readline() == "" and lock_holder_pid(tmp_path) == holder.pid
            time.sleep(0.1)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        os.set_blocking(standby.stdout.fileno(), True)
        assert standby.stdout.readline().strip() == name  # woken with the lock: the same name
        assert lock_holder_pid(tmp_path) == standby.pid
    finally:
        for proc in (holder, standby):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert lock_holder_pid(tmp_path) is None  # a dead holder's pid left in the file is not taken for one
