"""`canary up` as a user runs it, for the tests that start a whole stack: started, stopped (and
cleaned up when it does not stop), and the CLI beside it."""

from __future__ import annotations

import signal
import subprocess
import sys


def spawn_canary_up(state_dir, cport: int, rport: int, quiet: bool, *extra: str) -> subprocess.Popen[str]:
    """`canary up` as a user runs it; its output is kept (to read after it stops) unless ``quiet``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canary.cli",
            "up",
            "--state-dir",
            str(state_dir),
            "--controller-port",
            str(cport),
            "--router-port",
            str(rport),
            *extra,
        ],
        stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
        text=True,
    )


def stop_up(up: subprocess.Popen[str], state_dir, sig: int = signal.SIGINT) -> None:
    """Stop `canary up` as a user does (Ctrl-C, or SIGTERM); one that has not stopped within a
    minute fails the test, and it and everything it started (every process whose command line
    names its state directory: releases, router, controllers live in sessions of their own) is
    killed first, so the failure costs no later test its machine."""
    up.send_signal(sig)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-KILL", "-f", "--", str(state_dir)], check=False)
        up.kill()
        up.wait(10)
        raise


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canary.cli", *args], capture_output=True, text=True, timeout=60)


def controllers(cport: int) -> list[int]:
    """The pids of the controller processes `canary up` keeps on ``cport`` (the acting one, its standby)."""
    pattern = f"canary.controller --host 127.0.0.1 --port {cport} "
    out = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout
    return sorted(int(pid) for pid in out.split())
