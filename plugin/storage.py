"""Persistence through SQLAlchemy: SQLite by default, PostgreSQL for shared deployments.

Holds card feedback (checklist F-1..F-9), the cards shown per finding and ISO week with the
finding of each card shown (``plugin.cards_shown`` flushes them), and the JWT replay cache
(S-11), and the SMART app's sessions (encrypted; :mod:`plugin.web.smart_session`). Tables
are created on start-up, and columns added since 0.1.0 are added to an older
database; nothing to install.
Feedback writes are idempotent (a repeated feedback item is stored once) and committed before
the endpoint answers, so an acknowledged item is never lost. Nothing here is about a patient:
card uuids, finding ids, weeks, counts and the reason codes a clinician chose.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
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

#: Longest finding id stored (``source.topic.code`` of a card; the rule ids are far shorter).
TOPIC_MAX = 64
#: The finding that feedback is counted under when its card was never seen (or is forgotten).
UNKNOWN_TOPIC = "unknown"


def iso_week(day: date) -> str:
    """``2025-W10``: the ISO 8601 week of ``day`` (the week-based year, so 2024-12-30 is
    ``2025-W01``). Sorts as text in time order."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


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
    # Added after 0.1.0 (see _add_missing_columns): the finding of the card, when the card was
    # seen by this service (else NULL, and the report looks in card_topics), and the ISO week
    # the item was received.
    Column("topic", String(TOPIC_MAX), nullable=True),
    Column("week", String(8), nullable=True, index=True),
)

#: Cards returned, per service, finding (``source.topic.code``) and ISO week: additive counts,
#: one row per key, written by every worker's periodic flush.
cards_shown_table = Table(
    "cards_shown",
    metadata,
    Column("service_id", String(128), primary_key=True),
    Column("topic", String(TOPIC_MAX), primary_key=True),
    Column("week", String(8), primary_key=True),
    Column("shown", BigInteger, nullable=False),
)

#: The finding of each card returned, so that feedback (which carries the card uuid only) is
#: attributed to it whichever worker receives it. Kept :data:`CARD_TOPICS_KEEP_WEEKS` weeks.
card_topics_table = Table(
    "card_topics",
    metadata,
    Column("card_uuid", String(FEEDBACK_ID_MAX), primary_key=True),
    Column("service_id", String(128), nullable=False),
    Column("topic", String(TOPIC_MAX), nullable=False),
    Column("week", String(8), nullable=False, index=True),
)

#: card_topics rows older than this many ISO weeks are dropped (feedback comes within minutes
#: of a card; what still lacks a finding then is written into its feedback row first).
CARD_TOPICS_KEEP_WEEKS = 8


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
    """Create the tables when missing, and add the columns an older database lacks. Several
    workers start together and race on ``CREATE TABLE``: on PostgreSQL under an advisory lock,
    on SQLite with a second pass."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            metadata.create_all(connection)
            _add_missing_columns(connection)
        return
    for attempt in range(3):
        try:
            with engine.begin() as connection:
                metadata.create_all(connection)
                _add_missing_columns(connection)
            return
        except OperationalError:
            # SQLite: another worker created a table (or added a column) between the check and
            # the CREATE; the next pass sees it and creates only what is still missing.
            if attempt == 2:
                raise


#: Rows updated per statement when filling in a new column (well under SQLite's parameter cap).
_CHUNK = 500


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _add_missing_columns(connection: Connection) -> None:
    """A feedback table from 0.1.0 gets ``topic`` and ``week`` (with its index); the week of its
    rows is filled in from ``received_at``, once, in the same transaction."""
    present = {column["name"] for column in inspect(connection).get_columns("feedback")}
    for name in ("topic", "week"):
        if name not in present:
            kind = feedback_table.c[name].type.compile(dialect=connection.dialect)
            connection.execute(text(f"ALTER TABLE feedback ADD COLUMN {name} {kind}"))
    if "week" in present:
        return
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_feedback_week ON feedback (week)"))
    table = feedback_table
    by_week: dict[str, list[int]] = {}
    for ident, received in connection.execute(select(table.c.id, table.c.received_at)):
        if received.tzinfo is not None:
            received = received.astimezone(UTC)
        by_week.setdefault(iso_week(received.date()), []).append(ident)
    for week, idents in by_week.items():
        for chunk in _chunks(idents):
            connection.execute(update(table).where(table.c.id.in_(chunk)).values(week=week))


class SqlFeedbackStore:
    """:class:`cds_hooks.feedback.FeedbackStore` on SQLAlchemy.

    Each item is stored with the ISO week it was received and, when the card is known, its
    finding: ``topic_of(card_uuid)`` (this worker's memory of the cards it returned) first,
    then the cards other workers have flushed (``card_topics``)."""

    def __init__(
        self, engine: Engine, *, topic_of: Callable[[str], str | None] | None = None
    ) -> None:
        self.engine = engine
        self._topic_of = topic_of
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
        week = iso_week(now.date())
        topic_of = self._topic_of
        topics = {item.card: topic_of(item.card) if topic_of else None for item in items}
        new = 0
        with self.engine.begin() as connection:
            unknown = [card for card, topic in topics.items() if topic is None]
            for chunk in _chunks(unknown):
                cards = card_topics_table.c
                found = select(cards.card_uuid, cards.topic).where(cards.card_uuid.in_(chunk))
                topics.update((card, topic) for card, topic in connection.execute(found))
            for item in items:
                fingerprint, row = _fingerprint(service_id, item)
                # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING.
                result = connection.execute(
                    self._insert()
                    .values(
                        fingerprint=fingerprint,
                        received_at=now,
                        topic=topics[item.card],
                        week=week,
                        **row,
                    )
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


#: One card returned: (card uuid, service id, finding, ISO week).
ShownCard = tuple[str, str, str, str]


class SqlCardStore:
    """Where the workers' counts of cards shown land (``plugin.cards_shown`` flushes them).

    :meth:`add` is one transaction of additive upserts (``shown = shown + n``: several workers
    add to the same row without losing a count) and insert-or-ignore of the cards' findings;
    at most once an hour it also drops ``card_topics`` rows older than
    :data:`CARD_TOPICS_KEEP_WEEKS` weeks, after writing their finding into any feedback row
    that still lacks it."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._clock = clock
        self._last_prune: float | None = None
        name = engine.dialect.name
        if name == "postgresql":
            self._dialect_insert: Any = postgresql.insert
        elif name == "sqlite":
            self._dialect_insert = sqlite.insert
        else:
            raise RuntimeError(f"unsupported database dialect {name!r}: use SQLite or PostgreSQL")
        create_tables(engine)

    def add(self, counts: Mapping[tuple[str, str, str], int], cards: Iterable[ShownCard]) -> None:
        rows = [
            {"service_id": service, "topic": topic, "week": week, "shown": shown}
            for (service, topic, week), shown in counts.items()
        ]
        shown = [
            {"card_uuid": card, "service_id": service, "topic": topic, "week": week}
            for card, service, topic, week in cards
        ]
        with self.engine.begin() as connection:
            if rows:
                upsert = self._dialect_insert(cards_shown_table)
                connection.execute(
                    upsert.on_conflict_do_update(
                        index_elements=["service_id", "topic", "week"],
                        set_={"shown": cards_shown_table.c.shown + upsert.excluded.shown},
                    ),
                    rows,
                )
            if shown:
                connection.execute(
                    self._dialect_insert(card_topics_table).on_conflict_do_nothing(
                        index_elements=["card_uuid"]
                    ),
                    shown,
                )
            now = self._clock()
            if self._last_prune is None or now - self._last_prune >= 3600:
                self._prune(connection)
                self._last_prune = now

    @staticmethod
    def _prune(connection: Connection) -> None:
        cutoff = iso_week(datetime.now(UTC).date() - timedelta(weeks=CARD_TOPICS_KEEP_WEEKS))
        cards = card_topics_table.c
        old = select(cards.card_uuid).where(cards.week < cutoff)
        connection.execute(
            update(feedback_table)
            .where(feedback_table.c.topic.is_(None), feedback_table.c.card_uuid.in_(old))
            .values(
                topic=select(cards.topic)
                .where(cards.card_uuid == feedback_table.c.card_uuid)
                .scalar_subquery()
            )
        )
        connection.execute(delete(card_topics_table).where(cards.week < cutoff))


jwt_replay_table = Table(
    "jwt_replay",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


#: The SMART app's launches and sessions (plugin/web/smart_session.py), so that any worker or
#: node serves any request of a launch. Nothing readable about a patient or a token: the row is
#: keyed by a hash of the cookie's session id, the client address is a keyed hash, and the
#: launch state, token and launch context are in ``payload``, sealed with AES-256-GCM.
smart_sessions_table = Table(
    "smart_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("stage", String(16), nullable=False),  # pending, exchanging, authorized
    Column("client", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_smart_sessions_stage_client", "stage", "client"),
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
