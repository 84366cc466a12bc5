"""Settings for every process: defaults, then an optional YAML file, then environment variables.

Nothing is read at import time: call :func:`load_settings` (the command-line entry points do) or
build :class:`Settings` directly (tests do).  Environment variables are the upper-cased field names
with the prefix ``CANARY_`` (``CANARY_DB_URL``, ``CANARY_ADMIN_TOKEN``, ...); ``CANARY_CONFIG`` names
the YAML file, whose keys are the field names.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError

ENV_PREFIX = "CANARY_"


@dataclasses.dataclass(frozen=True)
class Settings:
    service: str = "service"
    release: str = "1.0"
    db_url: str = "sqlite:///state/canary.db"
    db_busy_timeout_ms: int = 10_000
    db_pool_size: int = 10  # connections kept, and as many again on overflow
    db_pool_timeout_s: float = 5.0  # wait for a free connection before failing (503)
    state_dir: str = "state"
    host: str = "127.0.0.1"
    port: int = 8000
    # Bearer token for admin endpoints; empty means admin endpoints refuse everyone.  A service's
    # releases get their service's token derived from the controller's service_token as theirs
    # (core.scoped_tokens), never the controller's admin token.
    admin_token: str = ""
    # HMAC key for tracking tokens (opens).  Must be the same for every release of a service.
    token_secret: str = ""
    max_body_bytes: int = 1 << 20
    # Importer
    import_max_bytes: int = 64 << 20
    import_max_rows: int = 500_000
    # Resizer
    image_max_bytes: int = 25 << 20
    image_max_pixels: int = 50_000_000
    image_max_side: int = 4000
    variant_cache: bool = True
    # Opens
    spool_dir: str = ""
    group_commit_ms: float = 2.0
    log_level: str = "warning"
    # Queue consumers: the route table to read their share from, and their track
    route_table: str = ""
    track: str = "stable"
    # Routers and queue consumers: the token they present to read the route table; the controller:
    # the secret each service's table token is derived from (core.scoped_tokens; its admin token
    # reads the table too).  It reads, never commands.
    table_token: str = ""
    # Controller: the secret from which each service's token is derived (core.scoped_tokens), the
    # one its releases (canaries included) get for their own admin endpoints and its hooks present
    # to them: the catalog's {settings.service_token}
    service_token: str = ""
    # Controller: where its metrics come from (empty: the router's own counters), and the token
    # Alertmanager presents to POST /api/alerts (the admin token is accepted there too)
    prometheus_url: str = ""
    prometheus_scrape_interval_s: float = 15.0
    prometheus_delay_s: float = 0.0  # 0: a scrape interval and a second (add the rule interval for recorded series)
    prometheus_timeout_s: float = 5.0
    alert_token: str = ""
    # Controller: a YAML file of outbound webhooks (canary.notify.load_webhooks; empty: none), and
    # the token the dashboard and its event stream accept for reading (empty: open to read from
    # loopback only; the admin token always reads)
    webhooks: str = ""
    read_token: str = ""
    # Controller: where releases run (local processes, or kubernetes Deployments), and for
    # Kubernetes the namespace, the image (IMAGE:RELEASE) and how traffic is split (the project's
    # router, or Gateway API HTTPRoute weights)
    platform: str = "local"
    kubernetes_namespace: str = "releasewarden"
    kubernetes_image: str = "releasewarden"
    kubernetes_canary_replicas: int = 1
    traffic: str = "router"
    # Router: CA bundle for https:// upstreams (empty: the system's CAs; certificates are always
    # verified), how long an idle upstream connection is kept (shorter than the upstreams' own
    # keep-alive: uvicorn's default is 5 s), the most of an answer it holds in memory (a copy
    # of stable's answer to compare with the canary's; larger answers are streamed, not compared),
    # and the most of request bodies held for failover, all requests together (a body over what is
    # left goes to its track as it arrives, without failover: canary.router.request_bodies)
    router_ca_bundle: str = ""
    router_upstream_idle_s: float = 4.0
    router_buffer_max_bytes: int = 8 << 20
    router_failover_buffer_bytes: int = 256 << 20
    # The service catalog: directories of entries or files, comma-separated (empty: the shipped
    # catalog, manifests/services/ of this project)
    catalog: str = ""

    def with_overrides(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def spool_path(self) -> Path:
        return Path(self.spool_dir or Path(self.state_dir) / "spool")


def _coerce(field: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    kind = field.type if isinstance(field.type, type) else str(field.type)
    try:
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        text = str(raw)
        if field.name.endswith("_token") and text != text.strip():
            # HTTP servers drop a header value's surrounding spaces: such a token would match no request
            raise ConfigError(f"{source}: {field.name} begins or ends with a space (a token never does)")
        return text
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {field.name} must be {kind!s}, got {raw!r}") from None


def load_settings(env: Mapping[str, str] | None = None, config_file: str | None = None, **overrides: Any) -> Settings:
    """Defaults < YAML file < environment < explicit overrides (command-line flags)."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        for key, raw in data.items():
            if key not in fields:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(fields[key], raw, path)
    for name, field in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(field, raw, ENV_PREFIX + name.upper())
    for key, raw in overrides.items():
        if raw is not None:
            values[key] = _coerce(fields[key], raw, "--" + key.replace("_", "-"))
    return Settings(**values)


def new_secret() -> str:
    return secrets.token_urlsafe(32)
