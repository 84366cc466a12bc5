"""Which share of a queue a consumer takes, from the canary route table.

The split of a queue between releases follows the service's canary weight, by a stable hash of the
message id (``core.hashing``): the canary's consumer takes buckets ``[0, weight*100)``, stable's the
rest, so every message has exactly one owner and the split matches the router's.  The table is read
from a file or a URL (the router's or controller's API) at most every half second; while it cannot be
read the last share is kept; before it has ever been read, stable takes everything and the canary
nothing.  A consumer that knows its release finds its track in the table's ``releases`` each time:
a canary that was promoted becomes stable and takes the rest, and a release the table no longer
names (the old stable kept warm after a promotion) takes nothing.  It lives in ``core`` because
services never import ``canary``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from core.hashing import BUCKETS

log = logging.getLogger("releasewarden.queue_share")
REFRESH_S = 0.5


def bucket_range(weight_percent: float, track: str) -> tuple[int, int]:
    threshold = max(0, min(BUCKETS, round(weight_percent * 100)))
    return (0, threshold) if track == "canary" else (threshold, BUCKETS)


class QueueShare:
    def __init__(self, source: str, service: str, track: str, token: str = "", release: str = "") -> None:
        if track not in ("stable", "canary"):
            raise ValueError("track must be stable or canary")
        self.source, self.service, self.track, self.token = source, service, track, token
        self.release = release
        self.range = bucket_range(0.0, track)
        self._read_at = 0.0

    def current(self) -> tuple[int, int]:
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            self._read_at = now
            try:
                route = self._read().get("services", {}).get(self.service, {})
                weight = float(route.get("weight", 0.0))
                track = self._track(route.get("releases") or {})
                self.range = bucket_range(weight, track) if track else (0, 0)
            except (OSError, httpx.HTTPError, ValueError, yaml.YAMLError, AttributeError, TypeError) as exc:
                log.warning("route table %s unreadable (%s); keeping buckets %s", self.source, exc, self.range)
        return self.range

    def _track(self, releases: dict[str, str]) -> str | None:
        if not self.release or not releases:
            return self.track
        if releases.get("stable") == self.release:
            return "stable"
        return "canary" if releases.get("canary") == self.release else None

    def _read(self) -> Any:
        if self.source.startswith(("http://", "https://")):
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            r = httpx.get(self.source, headers=headers, timeout=2)
            r.raise_for_status()
            return r.json()
        text = Path(self.source).read_text(encoding="utf-8")
        return json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
