"""Login without passwords: one-time link tokens and browser sessions, held in the server's memory.

``hpcplat board`` asks the server (munge-authenticated, like every API call) for a link; the
server mints a random token bound to the caller's verified :class:`Identity` and answers the
link. Visiting it spends the token (once; after :data:`TOKEN_TTL_S` it is void) and sets a session
cookie: random, ``HttpOnly``, ``SameSite=Strict``; the session table maps it to the identity.
Only SHA-256 hashes of tokens and session ids are kept, so a dump of the table opens nothing.
A server restart forgets every session: users run ``hpcplat board`` again.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hpcplat.server.identity import Identity

TOKEN_TTL_S = 300.0
SESSION_TTL_S = 12 * 3600.0
MAX_ENTRIES = 10_000
COOKIE = "hpcplat_board"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class _Table:
    ttl_s: float
    clock: Callable[[], float]
    entries: dict[str, tuple[Identity, float]] = field(default_factory=dict)

    def add(self, who: Identity) -> str:
        self._expire()
        secret = secrets.token_urlsafe(32)
        self.entries[_hash(secret)] = (who, self.clock() + self.ttl_s)
        return secret

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, until) in self.entries.items() if until <= now]:
            del self.entries[key]
        while len(self.entries) >= MAX_ENTRIES:  # oldest first (dicts keep insertion order)
            del self.entries[next(iter(self.entries))]


class Sessions:
    """One-time link tokens and sessions; thread-safe (handlers run in a thread pool)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._tokens = _Table(TOKEN_TTL_S, clock)
        self._sessions = _Table(SESSION_TTL_S, clock)
        self._clock = clock

    def mint_token(self, who: Identity) -> str:
        with self._lock:
            return self._tokens.add(who)

    def redeem(self, token: str) -> str | None:
        """A new session id for a valid unspent token (which is then spent), else None."""
        with self._lock:
            entry = self._tokens.entries.pop(_hash(token), None)
            if entry is None or entry[1] <= self._clock():
                return None
            return self._sessions.add(entry[0])

    def identity(self, session_id: str | None) -> Identity | None:
        if not session_id:
            return None
        with self._lock:
            entry = self._sessions.entries.get(_hash(session_id))
            if entry is None or entry[1] <= self._clock():
                return None
            return entry[0]

    def end(self, session_id: str) -> None:
        with self._lock:
            self._sessions.entries.pop(_hash(session_id), None)
