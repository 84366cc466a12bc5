"""Running a catalog entry's hooks: an HTTP call (httpx) or a command (asyncio subprocess).

The controller calls :func:`run_hook` at a rollout's named moments (``model.Moment``) and acts on
the :class:`HookResult`: a failure carries the hook's ``on_failure`` (hold, or roll back) and a
reason that names the hook, so a person reading the rollout's history knows which one failed and
why.  A hook never raises and never runs longer than its timeout: a slow command is killed with its
whole process group.  What a hook answers is kept, at most :data:`MAX_OUTPUT` bytes of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx

from canary.catalog import templates
from canary.catalog.model import PYTHON_NAMES, CommandCall, Hook, HttpCall, Moment, OnFailure
from core.scoped_tokens import SCOPED_SETTINGS, setting_value
from core.settings import Settings

MAX_OUTPUT = 64 << 10


@dataclass(frozen=True)
class HookContext:
    """The rollout at the moment a hook runs: what its templates may name."""

    service: str
    stable: str
    canary: str
    stable_url: str
    canary_url: str
    rollout_id: str
    moment: Moment
    settings: Settings
    catalog_dir: str = "."

    def values(self) -> dict[str, str]:
        return {
            "service": self.service,
            "stable": self.stable,
            "canary": self.canary,
            "stable_url": self.stable_url,
            "canary_url": self.canary_url,
            "rollout_id": self.rollout_id,
            "moment": self.moment.value,
            "catalog_dir": self.catalog_dir,
        }


@dataclass(frozen=True)
class HookResult:
    hook: str
    ok: bool
    reason: str  # empty when ok
    on_failure: OnFailure
    seconds: float
    status: int | None = None  # the HTTP status, or the command's exit status
    output: str = ""  # the answer's body, or the command's output (its last MAX_OUTPUT bytes)

    def json(self) -> Any:
        """The answer as JSON (``ValueError`` when it is not)."""
        return json.loads(self.output)


async def run_hook(hook: Hook, context: HookContext, *, timeout: float | None = None) -> HookResult:
    """Run ``hook`` within ``timeout`` seconds (default: the hook's own)."""
    limit = hook.timeout_s if timeout is None else timeout
    started = time.monotonic()
    what = f"hook {hook.name} ({hook.moment.value})"

    def result(ok: bool, reason: str, status: int | None = None, output: str = "") -> HookResult:
        return HookResult(hook.name, ok, reason, hook.on_failure, time.monotonic() - started, status, output)

    try:
        if isinstance(hook.action, HttpCall):
            status, output = await asyncio.wait_for(_http(hook.action, context, limit), limit)
            if status >= 400:
                hint = _token_hint(hook.action, context) if status == 401 else ""
                return result(False, f"{what} answered {status}: {output[:300]}{hint}", status, output)
        else:
            status, output = await _command(hook.action, context, limit)
            if status != 0:
                return result(False, f"{what} exited with status {status}: {output[-300:]}", status, output)
    except TimeoutError:
        return result(False, f"{what} timed out after {limit:g}s")
    except OSError as exc:
        return result(False, f"{what} could not start: {exc.strerror or exc}")
    except Exception as exc:  # httpx's errors, a bad URL: a hook must never stop the controller's loop
        return result(False, f"{what} failed: {type(exc).__name__}: {exc}")
    return result(True, "", status, output)


async def _http(call: HttpCall, context: HookContext, limit: float) -> tuple[int, str]:
    values = context.values()
    headers = {k: templates.render(v, values, context.settings) for k, v in call.headers.items()}
    if call.token_setting:
        headers["Authorization"] = f"Bearer {setting_value(context.settings, call.token_setting, context.service)}"
    body = _fill(call.json, values) if call.json is not None else None
    async with (
        httpx.AsyncClient(timeout=limit) as client,
        client.stream(call.method, templates.render(call.url, values), json=body, headers=headers) as answer,
    ):
        kept = bytearray()
        async for chunk in answer.aiter_bytes():
            kept += chunk[: MAX_OUTPUT - len(kept)]
            if len(kept) >= MAX_OUTPUT:
                break
        return answer.status_code, kept.decode("utf-8", errors="replace")


def _token_hint(call: HttpCall, context: HookContext) -> str:
    """Why a service may refuse the token a hook presents: it is derived per service."""
    if call.token_setting not in SCOPED_SETTINGS:
        return ""
    return (
        f" (the hook presents {context.service}'s {call.token_setting}, derived from the controller's: the "
        f"service must hold `python -m core.scoped_tokens {context.service} {call.token_setting}` of it)"
    )


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return templates.render(value, values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


async def _command(call: CommandCall, context: HookContext, limit: float) -> tuple[int, str]:
    values = context.values()
    argv = [templates.render(a, values) for a in call.command]
    if argv[0] in PYTHON_NAMES:
        argv[0] = sys.executable
    env = {**os.environ, **{k: templates.render(v, values, context.settings) for k, v in call.environment.items()}}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=templates.render(call.working_dir, values) if call.working_dir else None,
        start_new_session=True,  # a timeout stops the command and everything it started
    )
    kept = bytearray()

    async def collect() -> int:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            kept.extend(chunk)
            del kept[:-MAX_OUTPUT]  # keep the tail: the end of a log says why it failed
        return await proc.wait()

    try:
        status = await asyncio.wait_for(collect(), limit)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise
    return status, kept.decode("utf-8", errors="replace")
