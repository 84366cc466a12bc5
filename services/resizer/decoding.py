"""How many uploads the resizer decodes at once, and what the others do meanwhile.

Checking an upload decodes every pixel (``imaging.inspect``): a 7000x7000 RGBA PNG of 190 KB, just
under the 50 MP limit, took 239 MB while it decoded, and the threadpool ran 40 of them at once.  So
decodes at once are bounded by a memory budget for pixels: ``DECODE_MEMORY_BYTES`` over the most an
image may take (``image_max_pixels`` at 4 bytes a pixel), at least one, at most one per core (decoding
is CPU-bound, like rendering).  With the default 50 MP, two at once.  Other uploads wait their turn
(holding their body, not its pixels) for up to ``DECODE_WAIT_S``; past that they are refused with a
503 and ``Retry-After`` instead of waiting without end.

The bodies held meanwhile (read, waiting, decoding, stored) are bounded too: an upload reserves its
declared size (the largest allowed when it declares none; it may send no more) before its body is
read, until it is stored, within
``BODY_MEMORY_BYTES`` (at least one upload of the largest size); one that does not fit is refused
at once with the same 503, its body never read (40 slow uploads of 25 MB held 1 GB before).
"""

from __future__ import annotations

import asyncio
import os

from core.settings import Settings

DECODE_MEMORY_BYTES = 512 << 20
BYTES_PER_PIXEL = 4  # RGBA, CMYK and 32-bit modes: the widest Pillow decodes an accepted image to
DECODE_WAIT_S = 10.0
BODY_MEMORY_BYTES = 256 << 20
RETRY_AFTER_S = 2


def decode_slots(settings: Settings) -> int:
    """Decodes at once for these settings (see the module's docstring)."""
    per_decode = max(1, settings.image_max_pixels * BYTES_PER_PIXEL)
    return max(1, min(os.cpu_count() or 2, DECODE_MEMORY_BYTES // per_decode))


class DecodeSlots:
    """At most ``size`` callers hold a slot at once; ``decoding`` and ``waiting`` say how many do and
    wait; uploads' bodies are admitted within ``body_budget`` bytes (``held_bytes`` now)."""

    def __init__(self, size: int, wait_s: float = DECODE_WAIT_S, body_budget: int = BODY_MEMORY_BYTES) -> None:
        self.size = size
        self.wait_s = wait_s
        self.body_budget = body_budget
        self.held_bytes = 0
        self.decoding = 0
        self.waiting = 0
        self._free = asyncio.Semaphore(size)

    def admit(self, size: int) -> bool:
        """Reserve ``size`` bytes for a body about to be read: False when they do not fit beside the
        bodies held (one upload is always admitted); ``leave`` gives them back."""
        if self.held_bytes and self.held_bytes + size > self.body_budget:
            return False
        self.held_bytes += size
        return True

    def leave(self, size: int) -> None:
        self.held_bytes -= size

    async def acquire(self) -> bool:
        """Wait for a slot, at most ``wait_s``: True once the caller holds one (it must ``release``
        it), False if none came free in time."""
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._free.acquire()
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        self.decoding += 1
        return True

    def release(self) -> None:
        self.decoding -= 1
        self._free.release()
