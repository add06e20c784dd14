"""SMART launch sessions in the service's database, sealed with AES-256-GCM, and the PKCE pieces
(RFC 7636, S256).

The browser holds only an opaque, random session id (an HttpOnly, SameSite cookie). Everything
else -- the PKCE verifier, the ``state``, the access token, the launch's patient and encounter --
is one row of ``smart_sessions`` (:mod:`plugin.storage`) in the database every worker and node
shares (SQLite or PostgreSQL), so any of them serves any request of a launch. In that row:

- the key is the SHA-256 of the session id (a copy of the table gives no cookie to replay);
- the client address of a pending launch is an HMAC under the session key;
- the launch state, token and context are one AES-256-GCM message under
  ``THERAPY_CDS_SESSION_KEY``, bound to the row's key and stage (additional data), so a row
  edited, moved to another id or promoted to another stage no longer opens and is dropped.

Sessions expire after the configured lifetime or the token's own, whichever is first; an
expired row is deleted when it is read, and every launch and sign-in deletes all expired rows.

Two separate, bounded pools, so that unauthenticated traffic can never end a signed-in user's
session:

- **pending launches** (``/smart/launch`` answered, the token not yet exchanged): anyone can
  start one, so each client (address) holds at most ``max_pending_per_client`` of them and all
  clients together ``max_pending``; beyond either cap the oldest *pending launch* goes (the same
  client's first). A flood of launches can only push out other pending launches.
- **authorized sessions** (the token exchange succeeded): at most ``max_sessions``; a launch
  only gets here through a successful token exchange with an allow-listed EHR. When full, the
  least recently used authorized session gives way.

Workers launching at the same instant may each see the pool one short of its cap, so a cap can
be passed by a launch or two for a moment; the next launch trims it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    delete,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from plugin.settings import SESSION_KEY_BYTES, SESSION_KEY_HOWTO, Settings, decode_session_key
from plugin.storage import create_tables, smart_sessions_table

logger = logging.getLogger(__name__)

COOKIE_NAME = "therapy_cds_smart"
#: Beside a SQLite database file ``x.db``, the development key is kept in ``x.db.session-key``.
KEY_FILE_SUFFIX = ".session-key"

PENDING, EXCHANGING, AUTHORIZED = "pending", "exchanging", "authorized"
#: A session id is ``secrets.token_urlsafe(32)`` (43 characters); a longer cookie is no id.
_MAX_ID_CHARS = 128
_FORMAT = b"\x01"  # first byte of a sealed payload: this layout (nonce, ciphertext and tag)
_NONCE_BYTES = 12
_AAD = b"therapy-cds smart session"

_table = smart_sessions_table


class SessionKeyError(ValueError):
    """No usable key for the sessions; the message says what to set or fix."""


def new_code_verifier() -> str:
    """A high-entropy verifier of 86 unreserved characters (RFC 7636 §4.1: 43..128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --------------------------------------------------------------------------- the key


def session_key(settings: Settings) -> bytes:
    """The key the sessions are sealed with.

    ``THERAPY_CDS_SESSION_KEY`` when set: what a deployment of several workers or nodes should
    do (every one of them the same key). Without it the service still starts (the setting is
    beyond the fixed contract, so a deployment configured by the contract alone keeps working),
    with a warning: for a SQLite database file, a key generated once and kept beside it
    (``<database>.session-key``, readable by its owner only), so every worker on that file
    shares it and sessions survive a restart; for any other database, a key for this process
    only (another worker cannot open its sessions)."""
    key = settings.session_key_bytes()
    if key is not None:
        return key
    database = sqlite_file(settings.database_url)
    if database is None:
        logger.warning(
            "THERAPY_CDS_SESSION_KEY is not set: SMART sessions are sealed with a key of this "
            "process only, so another worker cannot serve them; set it when running several"
        )
        return secrets.token_bytes(SESSION_KEY_BYTES)
    return development_key(database.with_name(database.name + KEY_FILE_SUFFIX))


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite ``DATABASE_URL``; None for an in-memory one or another database."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or url.query.get("mode") == "memory":
        return None  # a SQLite URI: leave it to the operator to set the key
    return Path(database)


def development_key(path: Path) -> bytes:
    """The key in ``path``, generated there first when missing. Several workers starting at
    once agree on one: each writes its own candidate to a private file and links it into place,
    which only the first does (the link is atomic and never replaces a file)."""
    if not path.exists():
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        text = base64.b64encode(secrets.token_bytes(SESSION_KEY_BYTES)).decode("ascii")
        try:
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(candidate, path)
                logger.warning(
                    "THERAPY_CDS_SESSION_KEY is not set: generated a key for the SMART sessions, "
                    "kept in %s beside the database (set THERAPY_CDS_SESSION_KEY in "
                    "production: %s)",
                    path.name,
                    SESSION_KEY_HOWTO,
                )
            except FileExistsError:
                pass  # another worker was first: its key is the one
        except OSError as exc:
            raise SessionKeyError(
                f"cannot write the development session key beside the database ({path.name}: "
                f"{exc.strerror}); set THERAPY_CDS_SESSION_KEY ({SESSION_KEY_HOWTO})"
            ) from None
        finally:
            candidate.unlink(missing_ok=True)
    try:
        text = path.read_text(encoding="ascii")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionKeyError(
            f"cannot read the development session key {path.name} ({exc}); delete it to have a "
            f"new one generated, or set THERAPY_CDS_SESSION_KEY ({SESSION_KEY_HOWTO})"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s can be read by other users of this machine; chmod 600 it", path.name)
    try:
        return decode_session_key(text)
    except ValueError:
        raise SessionKeyError(
            f"{path.name} does not hold a session key ({SESSION_KEY_BYTES} bytes in base64); "
            "delete it to have a new one generated"
        ) from None


# --------------------------------------------------------------------------- the sessions


@dataclass(slots=True)
class SmartSession:
    """One launch, from the redirect to the authorization server until it expires."""

    id: str = field(repr=False)
    iss: str
    token_endpoint: str
    redirect_uri: str
    expires_at: float  # seconds since the epoch (every worker's clock)
    client: str = field(default="", repr=False)  # who started the launch (pending pool only)
    state: str | None = field(default=None, repr=False)  # one use: cleared at the callback
    code_verifier: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    patient: str | None = field(default=None, repr=False)
    encounter: str | None = field(default=None, repr=False)
    #: The token response asked the app to show who the patient is (SMART ``need_patient_banner``).
    need_patient_banner: bool = False

    @property
    def authorized(self) -> bool:
        return self.access_token is not None


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class SessionStore:
    """Pending launches and authorized sessions by opaque id, in the database, in two bounded
    pools; ``key`` (32 bytes) seals each row."""

    def __init__(
        self,
        engine: Engine,
        key: bytes,
        *,
        lifetime_seconds: float,
        max_sessions: int,
        max_pending: int,
        max_pending_per_client: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(key) != SESSION_KEY_BYTES:
            raise SessionKeyError(f"a session key is {SESSION_KEY_BYTES} bytes, not {len(key)}")
        self.engine = engine
        self.lifetime = lifetime_seconds
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self._clock = clock
        self._aead = AESGCM(key)
        # a separate key for the client addresses' HMAC, derived from the session key
        self._client_key = hmac.digest(key, b"therapy-cds smart client address", "sha256")
        create_tables(engine)

    # -- sealing

    @staticmethod
    def _aad(id_hash: str, stage: str) -> bytes:
        return b"\0".join((_AAD, id_hash.encode("ascii"), stage.encode("ascii")))

    def _seal(self, id_hash: str, stage: str, session: SmartSession) -> bytes:
        body = orjson.dumps(
            {
                "iss": session.iss,
                "token_endpoint": session.token_endpoint,
                "redirect_uri": session.redirect_uri,
                "expires_at": session.expires_at,
                "state": session.state,
                "code_verifier": session.code_verifier,
                "access_token": session.access_token,
                "patient": session.patient,
                "encounter": session.encounter,
                "need_patient_banner": session.need_patient_banner,
            }
        )
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, body, self._aad(id_hash, stage))

    def _open(self, session_id: str, id_hash: str, row: Any) -> SmartSession | None:
        """The session in ``row``, or None when it does not open under this key (another key,
        or the row was altered)."""
        payload = bytes(row.payload)
        if payload[:1] != _FORMAT or len(payload) < 1 + _NONCE_BYTES:
            return None
        nonce, sealed = payload[1 : 1 + _NONCE_BYTES], payload[1 + _NONCE_BYTES :]
        try:
            data = orjson.loads(self._aead.decrypt(nonce, sealed, self._aad(id_hash, row.stage)))
        except (InvalidTag, orjson.JSONDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        expires = data.get("expires_at")
        iss, token_endpoint = data.get("iss"), data.get("token_endpoint")
        redirect_uri = data.get("redirect_uri")
        if not (
            isinstance(expires, int | float)
            and isinstance(iss, str)
            and isinstance(token_endpoint, str)
            and isinstance(redirect_uri, str)
        ):
            return None
        return SmartSession(
            id=session_id,
            iss=iss,
            token_endpoint=token_endpoint,
            redirect_uri=redirect_uri,
            # the row's expiry may only shorten the sealed one (shorten() writes the row)
            expires_at=min(float(expires), float(row.expires_at)),
            state=_optional_text(data.get("state")),
            code_verifier=_optional_text(data.get("code_verifier")),
            access_token=_optional_text(data.get("access_token")),
            patient=_optional_text(data.get("patient")),
            encounter=_optional_text(data.get("encounter")),
            need_patient_banner=data.get("need_patient_banner") is True,
        )

    def _client_hash(self, client: str) -> str:
        return hmac.new(self._client_key, client.encode("utf-8"), "sha256").hexdigest()

    # -- upkeep

    @staticmethod
    def _purge(connection: Connection, now: float) -> int:
        """Delete every expired row; how many went."""
        result = connection.execute(delete(_table).where(_table.c.expires_at <= now))
        return max(0, result.rowcount)

    def purge(self) -> int:
        """Delete every expired session and launch now; how many went. (Each launch and sign-in
        does this too, and a read deletes the expired row it finds.)"""
        with self.engine.begin() as connection:
            return self._purge(connection, self._clock())

    @staticmethod
    def _trim(
        connection: Connection, where: ColumnElement[bool], keep: int, newest_first: Any
    ) -> None:
        """Delete the rows matching ``where`` beyond the ``keep`` newest (by ``newest_first``)."""
        beyond = (
            select(_table.c.id_hash)
            .where(where)
            .order_by(newest_first.desc(), _table.c.id_hash.desc())
            .offset(max(0, keep))
        )
        old = [row[0] for row in connection.execute(beyond)]
        if old:
            connection.execute(delete(_table).where(_table.c.id_hash.in_(old)))

    def _count(self, where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(_table).where(where)
        query = query.where(_table.c.expires_at > self._clock())
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def __len__(self) -> int:
        return self._count(true())

    @property
    def pending_count(self) -> int:
        return self._count(_table.c.stage != AUTHORIZED)

    @property
    def authorized_count(self) -> int:
        return self._count(_table.c.stage == AUTHORIZED)

    # -- pending launches

    def create(
        self, *, iss: str, token_endpoint: str, redirect_uri: str, client: str = ""
    ) -> SmartSession:
        """A new pending launch for ``client`` with a fresh ``state`` and PKCE verifier."""
        now = self._clock()
        session = SmartSession(
            id=secrets.token_urlsafe(32),
            iss=iss,
            token_endpoint=token_endpoint,
            redirect_uri=redirect_uri,
            expires_at=now + self.lifetime,
            client=client,
            state=secrets.token_urlsafe(24),
            code_verifier=new_code_verifier(),
        )
        id_hash, client_hash = _id_hash(session.id), self._client_hash(client)
        pending = _table.c.stage != AUTHORIZED
        with self.engine.begin() as connection:
            self._purge(connection, now)
            # this client's oldest launches beyond its cap, then everyone's beyond the total
            mine = pending & (_table.c.client == client_hash)
            self._trim(connection, mine, self.max_pending_per_client - 1, _table.c.created_at)
            self._trim(connection, pending, self.max_pending - 1, _table.c.created_at)
            connection.execute(
                insert(_table).values(
                    id_hash=id_hash,
                    stage=PENDING,
                    client=client_hash,
                    created_at=now,
                    last_used=now,
                    expires_at=session.expires_at,
                    payload=self._seal(id_hash, PENDING, session),
                )
            )
        return session

    def claim(self, session: SmartSession) -> str | None:
        """Take the launch's PKCE verifier for the token exchange, once: the first callback to
        claim it (on whichever worker) gets it, any other gets None. The stored launch keeps
        neither the verifier nor the ``state`` from then on."""
        verifier = session.code_verifier
        session.state = session.code_verifier = None
        if verifier is None:
            return None
        id_hash = _id_hash(session.id)
        with self.engine.begin() as connection:
            result = connection.execute(
                update(_table)
                .where(
                    (_table.c.id_hash == id_hash)
                    & (_table.c.stage == PENDING)
                    & (_table.c.expires_at > self._clock())
                )
                .values(stage=EXCHANGING, payload=self._seal(id_hash, EXCHANGING, session))
            )
        return verifier if result.rowcount == 1 else None

    # -- authorized sessions

    def authorize(
        self,
        session: SmartSession,
        *,
        access_token: str,
        patient: str | None,
        encounter: str | None,
        expires_in: float | None,
        need_patient_banner: bool = False,
    ) -> None:
        """Move ``session`` from the pending launches to the authorized sessions."""
        now = self._clock()
        session.state = session.code_verifier = None
        session.access_token = access_token
        session.patient = patient
        session.encounter = encounter
        session.need_patient_banner = need_patient_banner
        session.client = ""
        if expires_in is not None:
            session.expires_at = min(session.expires_at, now + max(0.0, expires_in))
        id_hash = _id_hash(session.id)
        with self.engine.begin() as connection:
            connection.execute(delete(_table).where(_table.c.id_hash == id_hash))
            self._purge(connection, now)
            authorized = _table.c.stage == AUTHORIZED
            self._trim(connection, authorized, self.max_sessions - 1, _table.c.last_used)
            connection.execute(
                insert(_table).values(
                    id_hash=id_hash,
                    stage=AUTHORIZED,
                    client="",
                    created_at=now,
                    last_used=now,
                    expires_at=session.expires_at,
                    payload=self._seal(id_hash, AUTHORIZED, session),
                )
            )

    # -- either pool

    def get(self, session_id: str | None) -> SmartSession | None:
        """The live session ``session_id`` names, or None (unknown, expired, or not opening
        under this key: the last two are deleted). An authorized session counts as used."""
        if not session_id or len(session_id) > _MAX_ID_CHARS:
            return None
        id_hash = _id_hash(session_id)
        now = self._clock()
        with self.engine.connect() as connection:
            row = connection.execute(select(_table).where(_table.c.id_hash == id_hash)).first()
        if row is None:
            return None
        session = self._open(session_id, id_hash, row)
        if session is None:
            logger.warning(
                "a stored SMART session does not open under THERAPY_CDS_SESSION_KEY (another "
                "key sealed it, or the row was altered); it is dropped, the user launches again"
            )
            self.drop(session_id)
            return None
        if session.expires_at <= now:
            self.drop(session_id)
            return None
        if row.stage == AUTHORIZED:
            with self.engine.begin() as connection:
                connection.execute(
                    update(_table).where(_table.c.id_hash == id_hash).values(last_used=now)
                )
        return session

    def shorten(self, session: SmartSession, seconds: float) -> None:
        """Expire ``session`` no later than ``seconds`` from now (the token's ``expires_in``)."""
        session.expires_at = min(session.expires_at, self._clock() + max(0.0, seconds))
        with self.engine.begin() as connection:
            connection.execute(
                update(_table)
                .where(
                    (_table.c.id_hash == _id_hash(session.id))
                    & (_table.c.expires_at > session.expires_at)
                )
                .values(expires_at=session.expires_at)
            )

    def drop(self, session_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(_table).where(_table.c.id_hash == _id_hash(session_id)))
