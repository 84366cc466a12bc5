"""The resizer's data access: originals, the variant cache, image info.

Every operation checks a connection out of the pool for just its own statements and returns it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from services.resizer.schema import originals, variants


class ImageStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def insert_original(self, row: dict[str, Any], data: bytes) -> None:
        with self.connection() as conn:
            conn.execute(originals.insert().values(**row, data=data, created_at=datetime.now(UTC)))
            conn.commit()

    def load(self, image_id: str, key: str, use_cache: bool) -> tuple[str, Any] | None:
        """(sha256, (bytes, content type)) from the variant cache, or (sha256, original bytes)."""
        with self.connection() as conn:
            if use_cache:
                hit = conn.execute(
                    select(originals.c.sha256, variants.c.data, variants.c.content_type)
                    .join(variants, variants.c.image_id == originals.c.id)
                    .where(originals.c.id == image_id, variants.c.key == key)
                ).first()
                if hit:
                    return hit.sha256, (hit.data, hit.content_type)
            row = conn.execute(select(originals.c.sha256, originals.c.data).where(originals.c.id == image_id)).first()
        return (row.sha256, row.data) if row else None

    def store_variant(self, image_id: str, key: str, body: bytes, content_type: str) -> None:
        with self.connection() as conn:
            try:
                conn.execute(variants.insert().values(image_id=image_id, key=key, content_type=content_type, data=body))
                conn.commit()
            except IntegrityError:
                conn.rollback()  # another request rendered the same variant first

    def info(self, image_id: str) -> dict[str, Any] | None:
        cols = (originals.c.id, originals.c.format, originals.c.width, originals.c.height, originals.c.size)
        with self.connection() as conn:
            row = conn.execute(select(*cols).where(originals.c.id == image_id)).first()
        return row._asdict() if row else None
