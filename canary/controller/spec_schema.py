"""The JSON schema of a rollout spec (published as ``manifests/rollout.schema.json`` for editors)."""

from __future__ import annotations

from typing import Any

from canary.analysis.spec import MAX_HISTORY_SECONDS

METRIC_KINDS = ["errors", "latency", "conservation", "mirror", "query"]

_STEP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["weight"],
    "properties": {
        "weight": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 100,
            "description": "percent of live traffic (promotion takes it to 100; the judge compares below that)",
        },
        "min_requests": {"type": "integer", "minimum": 0, "default": 100},
        "min_seconds": {"type": "number", "minimum": 0, "default": 30},
        "max_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 900},
    },
}
_METRIC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"},
        "kind": {"enum": METRIC_KINDS},
        "threshold_ms": {"type": "number", "exclusiveMinimum": 0, "description": "latency: slower is bad"},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.2, "default": 0.01},
        "min_regression": {"type": "number", "exclusiveMinimum": 1, "default": 2},
        "rate_floor": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.001,
            "description": "the lowest stable bad rate whose regression the last step must be able to see",
        },
        "objective": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "description": "the canary's own maximum bad-event rate",
        },
        "tolerance": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 0.5,
            "default": 0,
            "description": "an excess of bad-event rate over stable's that does not hold a step (0.01: 1% of "
            "requests may be slow on a busy host); never for lost data",
        },
        "events_query": {
            "type": "string",
            "minLength": 1,
            "description": "Prometheus: PromQL for a track's events, with $service, $track, $release (and "
            "$window for an increase() query)",
        },
        "bad_query": {"type": "string", "minLength": 1, "description": "Prometheus: PromQL for a track's bad events"},
    },
}
DEFAULT_STICKY: dict[str, Any] = {"header": "X-Account-Id"}  # a spec that names no sticky key
_STICKY_KEY = {
    "type": "object",
    "additionalProperties": False,
    "description": "one key of header, cookie or path_param (and history_seconds if wanted)",
    "oneOf": [{"required": ["header"]}, {"required": ["cookie"]}, {"required": ["path_param"]}],
    "properties": {
        "header": {"type": "string", "minLength": 1},
        "cookie": {"type": "string", "minLength": 1},
        "path_param": {"type": "integer", "minimum": 0},
        "history_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_HISTORY_SECONDS,
            "default": 0,
            "description": "at most this long in pending, the canary ready and taking no traffic, "
            "until the first bucket group has a history on stable (else judged per request)",
        },
    },
}
_MIRROR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "share": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "min_seconds": {"type": "number", "minimum": 0, "default": 30},
        "min_compared": {"type": "integer", "minimum": 1, "default": 100},
        "max_seconds": {"type": "number", "exclusiveMinimum": 0, "default": 600},
        "ignore_fields": {"type": "array", "items": {"type": "string"}},
        "pixel_tolerance": {"type": "number", "minimum": 0, "maximum": 255, "default": 8},
        "max_different_share": {"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        "baseline": {
            "enum": ["none", "stable"],
            "default": "none",
            "description": "stable: stable answers each mirrored request a second time, and the canary's "
            "difference rate is judged against that of stable's two answers (noise such as timestamps and ids "
            "is learnt, not counted against the canary; what differs only between processes, a host name, "
            "still belongs in ignore_fields); until the routers count stable's second answers the canary's are "
            "not judged. none: against max_different_share, unless the route table has a baseline copy of "
            "stable (a `baseline` upstream), whose answers are then the noise",
        },
    },
}
SERVICE_NAME_MAX = 40  # a catalog entry's name, as long as the store's column for it (store.rollouts.service)
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "releasewarden rollout",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"const": "releasewarden/v1"},
        "kind": {"const": "Rollout"},
        "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["service", "stable", "canary", "steps", "metrics"],
            "properties": {
                "service": {"type": "string", "pattern": f"^[a-z0-9][a-z0-9-]{{0,{SERVICE_NAME_MAX - 1}}}$"},
                "stable": {"type": "string", "minLength": 1},
                "canary": {"type": "string", "minLength": 1},
                "mirror": _MIRROR,
                "steps": {"type": "array", "minItems": 1, "maxItems": 20, "items": _STEP},
                "metrics": {"type": "array", "minItems": 1, "items": _METRIC},
                "failover": {"type": "boolean", "default": True},
                "sticky": {
                    "description": "none (each request drawn by itself), or one key of header, cookie or "
                    "path_param (and history_seconds if wanted)",
                    "default": DEFAULT_STICKY,
                    "oneOf": [{"const": "none"}, _STICKY_KEY],
                },
                "alerts": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    "description": "the alerts (manifests/prometheus/rules/*.alerts.yml) that roll this rollout "
                    "back; none listed: any firing alert about its canary",
                },
                "watch": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "seconds": {"type": "number", "minimum": 0, "default": 600},
                        "holdback": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 50,
                            "default": 0,
                            "description": "percent of traffic the old release keeps during the watch, so the "
                            "judge keeps comparing (roles reversed); 0: only the change detector watches",
                        },
                    },
                },
                "on_inconclusive": {
                    "enum": ["pause", "rollback", "promote"],
                    "default": "pause",
                    "description": "what a step (or the mirror phase) that reaches its time limit without a "
                    "verdict does; by default a person decides",
                },
            },
        },
    },
}
