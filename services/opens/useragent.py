"""Classifying the user agent of a pixel hit: mail client, device, machine opens, non-opens.

Machine opens are recorded but flagged: mail privacy proxies (Apple Mail Privacy Protection
prefetches every image with a bare ``Mozilla/5.0``), image proxies (Gmail, Yahoo) and security
scanners.  Hits from HTTP libraries, headless browsers and crawlers are not opens at all: they are
filtered, with the reason ``automation``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_CLIENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gmail", re.compile(r"GoogleImageProxy", re.I)),
    ("yahoo", re.compile(r"YahooMailProxy", re.I)),
    ("outlook", re.compile(r"Microsoft Outlook|ms-office|MSOffice|Outlook-iOS|Outlook-Android", re.I)),
    ("thunderbird", re.compile(r"Thunderbird", re.I)),
    ("samsung-email", re.compile(r"SamsungEmail", re.I)),
    ("edge", re.compile(r"Edg/", re.I)),
    ("chrome", re.compile(r"Chrome/", re.I)),
    ("firefox", re.compile(r"Firefox/", re.I)),
    ("safari", re.compile(r"Version/[\d.]+.*Safari/", re.I)),
    ("apple-mail", re.compile(r"AppleWebKit/.*\((KHTML, like Gecko)\)(?!.*Safari)", re.I)),
)
_SCANNERS = re.compile(r"Barracuda|Mimecast|Proofpoint|Symantec|Trend ?Micro|SafeLinks|Forcepoint", re.I)
_AUTOMATION = re.compile(
    r"^(curl|wget|python-requests|python-urllib|Go-http-client|Java/|okhttp|axios|libwww-perl)"
    r"|HeadlessChrome|bot\b|crawler|spider",
    re.I,
)
_APPLE_PRIVACY_PROXY = "Mozilla/5.0"
_DEVICES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("tablet", re.compile(r"iPad|Tablet", re.I)),
    ("mobile", re.compile(r"iPhone|Android|Mobile|Outlook-iOS|Outlook-Android", re.I)),
    ("desktop", re.compile(r"Windows NT|Macintosh|X11|Linux x86_64|Microsoft Outlook|Thunderbird", re.I)),
)


@dataclass(frozen=True)
class Classified:
    client: str
    device: str
    machine: bool
    filtered: str | None  # reason when the hit is not an open at all


@functools.lru_cache(maxsize=8192)  # mail traffic repeats a few hundred distinct user agents
def classify(user_agent: str) -> Classified:
    ua = user_agent.strip()
    if not ua:
        return Classified("unknown", "unknown", False, None)
    if _AUTOMATION.search(ua):
        return Classified("automation", "unknown", True, "automation")
    if _SCANNERS.search(ua):
        return Classified("security-scanner", "unknown", True, None)
    if ua == _APPLE_PRIVACY_PROXY:
        return Classified("apple-mail", "unknown", True, None)
    client = next((name for name, pattern in _CLIENTS if pattern.search(ua)), "other")
    device = next((name for name, pattern in _DEVICES if pattern.search(ua)), "unknown")
    machine = client in ("gmail", "yahoo")
    return Classified(client, device, machine, None)
