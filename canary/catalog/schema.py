"""The JSON schema of a catalog entry (published as ``manifests/service.schema.json`` for editors).

The schema says the shape; what it cannot say (placeholders a template may name, executables that
exist, releases that match their commands) the loader checks after it.  ``defaults`` takes the
rollout spec's own fields (``canary.controller.spec_schema``), so a default is written exactly as
in a rollout spec.
"""

from __future__ import annotations

from typing import Any

from canary.controller.spec_schema import SCHEMA as ROLLOUT_SCHEMA
from canary.controller.spec_schema import SERVICE_NAME_MAX

NAME = {
    "type": "string",
    "pattern": f"^[a-z][a-z0-9-]{{0,{SERVICE_NAME_MAX - 2}}}[a-z0-9]$",
    "description": f"lower case, digits, dashes, at most {SERVICE_NAME_MAX} characters",
}
RELEASE = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$", "description": 'quote numbers: "1.10"'}
PATH = {"type": "string", "pattern": "^/[^\\s]{0,200}$"}
TEMPLATE = {"type": "string", "minLength": 1, "maxLength": 2000}
ARGV = {"type": "array", "minItems": 1, "maxItems": 100, "items": TEMPLATE}
ENVIRONMENT = {
    "type": "object",
    "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,100}$"},
    "additionalProperties": {"type": "string", "maxLength": 2000},
    "maxProperties": 100,
    "description": "variables added to the platform's; values are templates, and may name {settings.NAME}",
}
_PROCESS_FIELDS: dict[str, Any] = {
    "command": {**ARGV, "description": "argv template: {release} {port} {state_dir} {db_url} {track} ..."},
    "commands": {
        "type": "object",
        "propertyNames": RELEASE,
        "additionalProperties": ARGV,
        "minProperties": 1,
        "description": "one argv template per release, instead of command",
    },
    "environment": ENVIRONMENT,
    "working_dir": TEMPLATE,
    "health_path": {**PATH, "default": "/healthz", "description": "answers 200 while the process lives"},
    "ready_path": {**PATH, "description": "answers 200 when it takes traffic (default: health_path)"},
    "ready_timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 30},
    "metrics_path": {**PATH, "description": "Prometheus metrics, if the process exposes any"},
}
_PROCESS = {
    "type": "object",
    "additionalProperties": False,
    "oneOf": [{"required": ["command"]}, {"required": ["commands"]}],
    "properties": _PROCESS_FIELDS,
}
_LOCAL = {
    "type": "object",
    "additionalProperties": False,
    "oneOf": [{"required": ["command"]}, {"required": ["commands"]}],
    "properties": {
        **_PROCESS_FIELDS,
        "database": {**TEMPLATE, "description": "the release's database URL ({db_url}): {state_dir}, {service}"},
    },
}
_KUBERNETES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "deployment": {**TEMPLATE, "default": "{service}-{track}", "description": "Deployment name template"},
        "deployments": {
            "type": "object",
            "additionalProperties": False,
            "required": ["stable", "canary"],
            "properties": {"stable": NAME, "canary": NAME, "baseline": NAME},
        },
        "image": {"type": "string", "minLength": 1, "description": "default: the platform's image setting"},
        "tag": {**TEMPLATE, "default": "{release}"},
        "tags": {"type": "object", "propertyNames": RELEASE, "additionalProperties": {"type": "string"}},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
        "service": {**TEMPLATE, "default": "{service}-{track}", "description": "the Service of a track"},
        "httproute": {**NAME, "description": "Gateway API HTTPRoute whose backend weights split traffic"},
    },
}
METRIC_NAME = {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]{0,200}$", "description": "a Prometheus name"}
_CONSERVATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["acknowledged", "accounted"],
    "description": "what a conservation metric reads: counters labelled release, of messages acknowledged and of "
    "those then recorded or dropped on purpose; an acknowledged message in none of them was lost",
    "properties": {
        "acknowledged": METRIC_NAME,
        "accounted": {"type": "array", "minItems": 1, "maxItems": 20, "uniqueItems": True, "items": METRIC_NAME},
    },
}
_CONSUMER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": NAME,
        "local": _PROCESS,
        "deployment": {**TEMPLATE, "default": "{consumer}-{track}"},
        "conservation": _CONSERVATION,
    },
}
_HTTP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST"},
        "url": TEMPLATE,
        "headers": ENVIRONMENT
        | {
            "propertyNames": {"pattern": "^[A-Za-z0-9-]{1,100}$"},
            "description": "request headers; values are templates, and may name {settings.NAME}",
        },
        "json": {"description": "a JSON body; its strings are templates"},
        "token_setting": {"type": "string", "description": "sent as Authorization: Bearer <that setting>"},
    },
}
_HOOK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "oneOf": [{"required": ["http"]}, {"required": ["command"]}],
    "properties": {
        "name": NAME,
        "http": _HTTP,
        "command": ARGV,
        "environment": ENVIRONMENT,
        "working_dir": TEMPLATE,
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 10},
        "on_failure": {"enum": ["hold", "rollback"], "default": "hold"},
    },
}
_HOOK_LIST = {"type": "array", "maxItems": 20, "items": _HOOK}
_ROLLOUT_FIELDS = ROLLOUT_SCHEMA["properties"]["spec"]["properties"]
_DEFAULTS = {
    "type": "object",
    "additionalProperties": False,
    "description": "a rollout spec's fields; `canary release SERVICE --to R` uses them without a spec file",
    "properties": {
        k: v
        for k, v in _ROLLOUT_FIELDS.items()
        if k in ("steps", "metrics", "mirror", "failover", "sticky", "alerts", "watch", "on_inconclusive")
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "releasewarden service catalog entry",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "name", "stable", "releases"],
    "anyOf": [{"required": ["local"]}, {"required": ["kubernetes"]}],
    "properties": {
        "apiVersion": {"const": "releasewarden/v1"},
        "kind": {"const": "Service"},
        "name": NAME,
        "description": {"type": "string", "maxLength": 2000},
        "stable": {**RELEASE, "description": "the release that runs before any rollout"},
        "releases": {
            "oneOf": [
                {"type": "array", "minItems": 1, "maxItems": 1000, "uniqueItems": True, "items": RELEASE},
                {"const": "any"},
            ],
            "description": 'the releases that exist, or "any" (an image tag, say)',
        },
        "local": _LOCAL,
        "kubernetes": _KUBERNETES,
        "consumers": {"type": "array", "maxItems": 10, "items": _CONSUMER},
        "hooks": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"before_traffic": _HOOK_LIST, "after_rollback": _HOOK_LIST, "after_promotion": _HOOK_LIST},
        },
        "defaults": _DEFAULTS,
    },
}
