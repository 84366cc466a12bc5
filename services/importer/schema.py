"""Tables of the importer."""

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address_book_id", Integer, nullable=False),
    Column("email", String(254), nullable=False),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("data", Text, nullable=False, default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("address_book_id", "email", name="uq_contacts_book_email"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("reason", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

imports = Table(
    "imports",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("address_book_id", Integer, nullable=False),
    Column("idempotency_key", String(128)),
    Column("release", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("address_book_id", "idempotency_key", name="uq_imports_idempotency"),
)
Index("ix_imports_book", imports.c.address_book_id)
