"""Short-lived, in-memory SMART launch sessions and the PKCE pieces (RFC 7636, S256).

The browser holds only an opaque session id (an HttpOnly, SameSite cookie); the PKCE verifier,
the ``state`` and the access token stay on the server, leave no log line and are left out of
``repr``. Sessions expire after the configured lifetime or the token's own, whichever is first.
One process holds them: with several workers, route a user to one worker (sticky sessions).
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
    state: str | None = field(default=None, repr=False)  # one use: cleared at the callback
    code_verifier: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    patient: str | None = field(default=None, repr=False)
    encounter: str | None = field(default=None, repr=False)

    @property
    def authorized(self) -> bool:
        return self.access_token is not None


class SessionStore:
    """Sessions by opaque id; the oldest are dropped beyond ``max_sessions``."""

    def __init__(
        self,
        *,
        lifetime_seconds: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, SmartSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[key]
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def create(self, *, iss: str, token_endpoint: str, redirect_uri: str) -> SmartSession:
        """A new pending launch with a fresh ``state`` and PKCE verifier."""
        session = SmartSession(
            id=secrets.token_urlsafe(32),
            iss=iss,
            token_endpoint=token_endpoint,
            redirect_uri=redirect_uri,
            expires_at=self._clock() + self.lifetime,
            state=secrets.token_urlsafe(24),
            code_verifier=new_code_verifier(),
        )
        self._sessions[session.id] = session
        self._purge()
        return session

    def get(self, session_id: str | None) -> SmartSession | None:
        if not session_id:
            return None
        self._purge()
        return self._sessions.get(session_id)

    def shorten(self, session: SmartSession, seconds: float) -> None:
        """Expire ``session`` no later than ``seconds`` from now (the token's ``expires_in``)."""
        session.expires_at = min(session.expires_at, self._clock() + max(0.0, seconds))

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
