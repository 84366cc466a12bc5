"""Tokens per service, derived from one secret per role: what the controller hands each release.

The controller holds one service token and one table token (``core.settings``).  A release never
gets either: a catalog entry's ``{settings.service_token}`` or ``{settings.table_token}`` becomes
the token of the entry's own service, ``HMAC-SHA256(secret, "<setting>:<service>")`` (URL-safe
base64), so an importer canary cannot mint the opens service's tracking tokens, nor can the opens
processor's canary speak to the controller for another service's queue consumer.  The controller
derives the same value to check what a consumer presents (``canary.controller.api``) and to present
it to a service (a hook's ``token_setting``).  On Kubernetes the Secret holds each service's
derived token under its own key (``opens-service-token``, ``opens-table-token``, ...);
``python -m core.scoped_tokens SERVICE SETTING`` prints it, reading the role's secret on stdin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys

# the settings whose value a release gets only as its own service's derived token
SCOPED_SETTINGS = frozenset({"service_token", "table_token"})


def scoped_token(secret: str, setting: str, service: str) -> str:
    """The token of ``service`` for ``setting``; empty when the secret is (no token set)."""
    if not secret:
        return ""
    if not service:
        raise ValueError(f"{setting}: a token per service needs the service's name")
    digest = hmac.new(secret.encode(), f"{setting}:{service}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def setting_value(settings: object, setting: str, service: str) -> str:
    """``settings.<setting>`` as ``service`` may have it: derived for :data:`SCOPED_SETTINGS`."""
    value = str(getattr(settings, setting))
    return scoped_token(value, setting, service) if setting in SCOPED_SETTINGS else value


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in SCOPED_SETTINGS:
        print(f"usage: python -m core.scoped_tokens SERVICE {{{'|'.join(sorted(SCOPED_SETTINGS))}}} < secret")
        return 2
    secret = sys.stdin.read().strip()
    if not secret:
        print("no secret on stdin", file=sys.stderr)
        return 2
    print(scoped_token(secret, argv[1], argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
