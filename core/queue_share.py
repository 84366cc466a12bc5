"""Which share of a queue a consumer takes, from the canary route table.

The split of a queue between releases follows the service's canary weight, by a stable hash of the
message id (``core.hashing``): the canary's consumer takes buckets ``[0, weight*100)``, stable's the
rest, so every message has exactly one owner and the split matches the router's.  The table comes
from ``core.table_source`` (a file or the controller's URL, polled every half second by a task in
the consumer's event loop; the last share is kept while it cannot be read); before it has ever been
read, stable takes everything and the canary nothing.  A consumer that knows its release finds its
track in the table's ``releases`` each time: a canary that was promoted becomes stable and takes the
rest, and a release the table no longer names (the old stable kept warm after a promotion) takes
nothing.  The version it reports to the controller (``X-Table-Version``) is the one whose share its
processing loop has picked up (:meth:`QueueShare.current`), not merely the one it downloaded.  It
lives in ``core`` because services never import ``canary``.
"""

from __future__ import annotations

from core.hashing import BUCKETS
from core.routes import RouteTable
from core.table_source import ReaderKind, TableReader, TableSource


def bucket_range(weight_percent: float, track: str) -> tuple[int, int]:
    threshold = max(0, min(BUCKETS, round(weight_percent * 100)))
    return (0, threshold) if track == "canary" else (threshold, BUCKETS)


class QueueShare:
    def __init__(
        self, source: str, service: str, track: str, token: str = "", release: str = "", consumer: str = ""
    ) -> None:
        """``consumer`` names this consumer to the controller (e.g. ``opens-processor@1.1``)."""
        if track not in ("stable", "canary"):
            raise ValueError("track must be stable or canary")
        self.service, self.track, self.release = service, track, release
        self.range = bucket_range(0.0, track)
        self._pending = (self.range, 0)  # share and table version, not yet picked up by the loop
        self.applied_version = 0
        reader = TableReader(ReaderKind.CONSUMER, consumer or f"{service}@{release or track}")
        self.source = TableSource(
            source, token=token, reader=reader, on_change=self.apply, served_version=lambda: self.applied_version
        )

    def apply(self, table: RouteTable) -> None:
        route = table.services.get(self.service)
        if route is None:
            self._pending = (bucket_range(0.0, self.track), table.version)
            return
        track = self._track(route.releases)
        self._pending = (bucket_range(route.weight, track) if track else (0, 0), table.version)

    def current(self) -> tuple[int, int]:
        """The share for the next batch; from now on this consumer confirms the table it came from."""
        self.range, self.applied_version = self._pending
        return self.range

    async def start(self) -> None:
        await self.source.start(read_first=True)

    async def stop(self) -> None:
        await self.source.stop()

    def _track(self, releases: dict[str, str]) -> str | None:
        if not self.release or not releases:
            return self.track
        if releases.get("stable") == self.release:
            return "stable"
        return "canary" if releases.get("canary") == self.release else None
