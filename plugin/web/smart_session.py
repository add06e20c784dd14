"""Short-lived, in-memory SMART launch sessions and the PKCE pieces (RFC 7636, S256).

The browser holds only an opaque session id (an HttpOnly, SameSite cookie); the PKCE verifier,
the ``state`` and the access token stay on the server, leave no log line and are left out of
``repr``. Sessions expire after the configured lifetime or the token's own, whichever is first.
One process holds them: with several workers, route a user to one worker (sticky sessions).

Two separate, bounded pools, so that unauthenticated traffic can never end a signed-in user's
session:

- **pending launches** (``/smart/launch`` answered, authorization not yet back): anyone can
  start one, so each client (address) holds at most ``max_pending_per_client`` of them and all
  clients together ``max_pending``; beyond either cap the oldest *pending launch* goes (the same
  client's first). A flood of launches can only push out other pending launches.
- **authorized sessions** (the token exchange succeeded): at most ``max_sessions``; a launch
  only gets here through a successful token exchange with an allow-listed EHR. When full, the
  least recently used authorized session gives way.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE_NAME = "therapy_cds_smart"


def new_code_verifier() -> str:
    """A high-entropy verifier of 86 unreserved characters (RFC 7636 §4.1: 43..128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(slots=True)
class SmartSession:
    """One launch, from the redirect to the authorization server until it expires."""

    id: str = field(repr=False)
    iss: str
    token_endpoint: str
    redirect_uri: str
    expires_at: float
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


class SessionStore:
    """Pending launches and authorized sessions by opaque id, in two bounded pools."""

    def __init__(
        self,
        *,
        lifetime_seconds: float,
        max_sessions: int,
        max_pending: int,
        max_pending_per_client: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime_seconds
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self._clock = clock
        # Pending launches all live ``lifetime`` from creation: oldest first is soonest expiry.
        self._pending: OrderedDict[str, SmartSession] = OrderedDict()
        self._pending_by_client: dict[str, OrderedDict[str, None]] = {}
        # Authorized sessions, least recently used first.
        self._authorized: OrderedDict[str, SmartSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending) + len(self._authorized)

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def authorized_count(self) -> int:
        return len(self._authorized)

    # -- pending launches

    def _drop_pending(self, session_id: str) -> None:
        session = self._pending.pop(session_id, None)
        if session is None:
            return
        mine = self._pending_by_client.get(session.client)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._pending_by_client[session.client]

    def _purge_pending(self) -> None:
        now = self._clock()
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if oldest.expires_at > now:
                break
            self._drop_pending(oldest.id)

    def create(
        self, *, iss: str, token_endpoint: str, redirect_uri: str, client: str = ""
    ) -> SmartSession:
        """A new pending launch for ``client`` with a fresh ``state`` and PKCE verifier."""
        self._purge_pending()
        mine = self._pending_by_client.get(client)
        while mine and len(mine) >= self.max_pending_per_client:
            oldest, _ = mine.popitem(last=False)  # this client's oldest launch
            self._pending.pop(oldest, None)
        while len(self._pending) >= self.max_pending:
            self._drop_pending(next(iter(self._pending)))
        session = SmartSession(
            id=secrets.token_urlsafe(32),
            iss=iss,
            token_endpoint=token_endpoint,
            redirect_uri=redirect_uri,
            expires_at=self._clock() + self.lifetime,
            client=client,
            state=secrets.token_urlsafe(24),
            code_verifier=new_code_verifier(),
        )
        self._pending[session.id] = session
        self._pending_by_client.setdefault(client, OrderedDict())[session.id] = None
        return session

    # -- authorized sessions

    def _purge_authorized(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._authorized.items() if s.expires_at <= now]:
            del self._authorized[key]

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
        self._drop_pending(session.id)
        session.state = session.code_verifier = None
        session.access_token = access_token
        session.patient = patient
        session.encounter = encounter
        session.need_patient_banner = need_patient_banner
        session.client = ""
        if expires_in is not None:
            self.shorten(session, expires_in)
        self._purge_authorized()
        while len(self._authorized) >= self.max_sessions:
            self._authorized.popitem(last=False)
        self._authorized[session.id] = session

    # -- either pool

    def get(self, session_id: str | None) -> SmartSession | None:
        if not session_id:
            return None
        now = self._clock()
        session = self._authorized.get(session_id)
        if session is not None:
            if session.expires_at <= now:
                del self._authorized[session_id]
                return None
            self._authorized.move_to_end(session_id)
            return session
        session = self._pending.get(session_id)
        if session is not None and session.expires_at <= now:
            self._drop_pending(session_id)
            return None
        return session

    def shorten(self, session: SmartSession, seconds: float) -> None:
        """Expire ``session`` no later than ``seconds`` from now (the token's ``expires_in``)."""
        session.expires_at = min(session.expires_at, self._clock() + max(0.0, seconds))

    def drop(self, session_id: str) -> None:
        self._drop_pending(session_id)
        self._authorized.pop(session_id, None)
