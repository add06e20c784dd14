"""Persistence through SQLAlchemy: SQLite by default, PostgreSQL for shared deployments.

Holds card feedback (checklist F-1..F-9) and the JWT replay cache (S-11). Tables are created on
start-up; nothing to install.
Writes are idempotent (a repeated feedback item is stored once) and committed before the
endpoint answers, so an acknowledged item is never lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from cds_hooks.models import (
    FEEDBACK_ID_MAX,
    FEEDBACK_SYSTEM_MAX,
    FEEDBACK_TIMESTAMP_MAX,
    FeedbackItem,
)

metadata = MetaData()

feedback_table = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of the normalised item: makes repeats of the same feedback idempotent (F-8).
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("service_id", String(128), nullable=False, index=True),
    # Sized from the limits the API checks on input (cds_hooks.models), so that an item the
    # API accepts fits on PostgreSQL as on SQLite (which does not enforce sizes).
    Column("card_uuid", String(FEEDBACK_ID_MAX), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("outcome_timestamp", String(FEEDBACK_TIMESTAMP_MAX), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),  # JSON array of suggestion uuids
    Column("override_reason_system", String(FEEDBACK_SYSTEM_MAX), nullable=True),
    Column("override_reason_code", String(FEEDBACK_ID_MAX), nullable=True),
    Column("user_comment", Text, nullable=True),  # at most FEEDBACK_COMMENT_MAX characters
    Column("received_at", DateTime(timezone=True), nullable=False),
)


def _fingerprint(service_id: str, item: FeedbackItem) -> tuple[str, dict[str, Any]]:
    reason = item.override_reason.reason if item.override_reason else None
    row: dict[str, Any] = {
        "service_id": service_id,
        "card_uuid": item.card,
        "outcome": item.outcome,
        "outcome_timestamp": item.outcome_timestamp,
        "accepted_suggestions": (
            json.dumps(sorted(s.id for s in item.accepted_suggestions))
            if item.accepted_suggestions
            else None
        ),
        "override_reason_system": reason.system if reason else None,
        "override_reason_code": reason.code if reason else None,
        "user_comment": item.override_reason.user_comment if item.override_reason else None,
    }
    digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
    return digest, row


def make_engine(database_url: str) -> Engine:
    """An engine for ``DATABASE_URL``; SQLite gets WAL and a busy timeout for several workers."""
    url = make_url(database_url)
    if url.drivername == "postgresql":  # plain postgresql:// means psycopg 3 here
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, pool_pre_ping=True)
    if url.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine


#: Any fixed number: serialises table creation between workers starting at once.
_SCHEMA_LOCK = 7_305_112


def create_tables(engine: Engine) -> None:
    """Create the tables when missing. Several workers start together and race on
    ``CREATE TABLE``: on PostgreSQL under an advisory lock, on SQLite with a second pass."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            metadata.create_all(connection)
        return
    for attempt in range(3):
        try:
            metadata.create_all(engine)
            return
        except OperationalError:
            # SQLite: another worker created a table between the check and the CREATE; the
            # next pass sees it and creates only what is still missing.
            if attempt == 2:
                raise


class SqlFeedbackStore:
    """:class:`cds_hooks.feedback.FeedbackStore` on SQLAlchemy."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def _insert(self) -> Any:
        name = self.engine.dialect.name
        if name == "postgresql":
            return postgresql.insert(feedback_table).on_conflict_do_nothing(
                index_elements=["fingerprint"]
            )
        if name == "sqlite":
            return sqlite.insert(feedback_table).on_conflict_do_nothing(
                index_elements=["fingerprint"]
            )
        raise RuntimeError(f"unsupported database dialect {name!r}: use SQLite or PostgreSQL")

    def record(self, service_id: str, items: Sequence[FeedbackItem]) -> int:
        now = datetime.now(UTC)
        new = 0
        with self.engine.begin() as connection:
            for item in items:
                fingerprint, row = _fingerprint(service_id, item)
                # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING.
                result = connection.execute(
                    self._insert()
                    .values(fingerprint=fingerprint, received_at=now, **row)
                    .returning(feedback_table.c.id)
                )
                new += len(result.fetchall())
        return new

    def count(self, service_id: str | None = None) -> int:
        query = select(func.count()).select_from(feedback_table)
        if service_id is not None:
            query = query.where(feedback_table.c.service_id == service_id)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def outcomes(self, service_id: str | None = None) -> list[dict[str, Any]]:
        """Stored feedback rows (for reports and tests), oldest first."""
        query = select(feedback_table).order_by(feedback_table.c.id)
        if service_id is not None:
            query = query.where(feedback_table.c.service_id == service_id)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]


jwt_replay_table = Table(
    "jwt_replay",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


class SqlReplayStore:
    """:class:`cds_hooks.auth.ReplayStore` on the database, so every worker sees every ``jti``
    (checklist S-11). ``remember`` is one atomic insert; a unique-key conflict is a replay."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock
        self._last_purge = 0.0
        create_tables(engine)

    def remember(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = self._clock()
        table = jwt_replay_table
        with self.engine.begin() as connection:
            if now - self._last_purge > 60:
                connection.execute(delete(table).where(table.c.expires_at < now))
                self._last_purge = now
            # A jti whose token has expired may be forgotten; the token itself is refused anyway.
            connection.execute(
                delete(table).where(
                    (table.c.issuer == issuer) & (table.c.jti == jti) & (table.c.expires_at < now)
                )
            )
            try:
                with connection.begin_nested():
                    connection.execute(
                        insert(table).values(issuer=issuer, jti=jti, expires_at=expires_at)
                    )
            except IntegrityError:
                return False
        return True
