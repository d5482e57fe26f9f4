"""Session tokens: signed, short-lived, one session each, naming exactly one guest endpoint.

A token is `base64url(payload).base64url(HMAC-SHA256(secret, payload))`.
`spicectl connect` mints it with the secret in STATE/proxy/secret; the proxy
(same host, same state dir) verifies it. A token opens one session: the
first connection that uses it starts the session, further connections (a
SPICE client opens one per channel) join it while it lasts, and once the
session has ended the token is spent.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from spicectl.errors import AuthError, InvalidInput

SECRET_BYTES = 32


def wall_clock() -> float:
    """The wall clock that tokens' expiry is judged by (tests move it instead of sleeping)."""
    return time.time()


MAX_SECRET_BYTES = 4096


def load_secret(state_dir: Path) -> bytes:
    """STATE/proxy/secret, made on first use; refused if it could not keep tokens unforgeable."""
    import os
    import stat

    from spicectl.pki import store

    path = state_dir / "proxy" / "secret"
    if not os.path.lexists(path):
        store.ensure_dir(path.parent)
        store.atomic_write(path, secrets.token_bytes(SECRET_BYTES), 0o600)
    hint = f"remove {path} and spicectl makes a new one (tokens already minted stop working)"
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read the proxy secret {path}: {exc.strerror}", hint=hint) from None
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"the proxy secret {path} is not a regular file", hint=hint)
    if info.st_mode & 0o077:
        raise InvalidInput(f"the proxy secret {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o})",
                           hint=f"chmod 600 {path}, or {hint}")
    with open(path, "rb") as fh:
        secret = fh.read(MAX_SECRET_BYTES + 1)
    if not SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise InvalidInput(f"the proxy secret {path} holds {len(secret)} bytes; tokens need "
                           f"{SECRET_BYTES} to {MAX_SECRET_BYTES}", hint=hint)
    return secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Grant:
    guest: str
    host: str
    port: int
    tls: bool          # the proxy itself opens TLS to the guest (WebSocket front end)
    kind: str          # "ws" or "connect"
    expires: float
    nonce: str

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class Signer:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def mint(self, *, guest: str, host: str, port: int, tls: bool, kind: str, ttl: float) -> tuple[str, Grant]:
        grant = Grant(guest, host, port, tls, kind, wall_clock() + ttl, secrets.token_urlsafe(16))
        payload = json.dumps({"g": guest, "h": host, "p": port, "t": tls, "k": kind, "e": grant.expires,
                              "n": grant.nonce}, separators=(",", ":")).encode()
        mac = hmac.new(self.secret, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}", grant

    def verify(self, token: str | None) -> Grant:
        if not token or token.count(".") != 1 or len(token) > 2048:
            raise AuthError("no valid token")
        body, mac = token.split(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (ValueError, TypeError):
            raise AuthError("malformed token") from None
        if not hmac.compare_digest(hmac.new(self.secret, payload, hashlib.sha256).digest(), given):
            raise AuthError("token signature does not verify")
        try:
            d = json.loads(payload)
            return Grant(str(d["g"]), str(d["h"]), int(d["p"]), bool(d["t"]), str(d["k"]), float(d["e"]),
                         str(d["n"]))
        except (ValueError, KeyError, TypeError):
            raise AuthError("malformed token") from None


@dataclass
class Session:
    grant: Grant
    peer: str
    via: str
    started: float = field(default_factory=time.monotonic)
    connections: int = 0
    channels: int = 0
    up: int = 0
    down: int = 0
    ended: bool = False
    closing: bool = False   # one of its connections has ended: no more join it


class MemorySpent:
    """Spent tokens of one process, forgotten once they would have expired anyway."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}  # nonce -> expiry
        self.open: set[str] = set()        # claimed, and their session still takes connections
        self._expiring: list[tuple[float, str]] = []  # a heap of the same, soonest first

    def claim(self, nonce: str, expires: float) -> bool:
        """True for the first claim of `nonce`; False once it is spent."""
        self._prune()
        if nonce in self.spent:
            return False
        self.spent[nonce] = expires
        self.open.add(nonce)
        heapq.heappush(self._expiring, (expires, nonce))
        return True

    def join(self, nonce: str) -> bool:
        """Join a session another process holds: there is none, this store is one process's own."""
        return False

    def end(self, nonce: str) -> None:
        """The session of `nonce` takes no more connections."""
        self.open.discard(nonce)

    def is_spent(self, nonce: str) -> bool:
        self._prune()
        return nonce in self.spent and nonce not in self.open

    def __len__(self) -> int:
        return len(self.spent)

    def _prune(self) -> None:
        # a heap, not a scan of `spent`: at hundreds of sessions a second a scan per
        # admission walked tens of thousands of entries each time
        now = wall_clock()
        while self._expiring and self._expiring[0][0] < now:
            _, nonce = heapq.heappop(self._expiring)
            self.spent.pop(nonce, None)
            self.open.discard(nonce)


class SqliteSpent:
    """Claimed tokens in STATE/proxy/spent.db: they stay spent across restarts, and every proxy
    process on the host (and `connect`'s per-session proxies) shares them. SQLite's own locking
    makes the first INSERT of a nonce win; WAL keeps readers and that writer apart.

    A row is a session, open (`closing` 0) until one of its connections ends anywhere. Behind
    SO_REUSEPORT or a balancer a client's channels land on different proxy processes: a process
    that did not claim the token joins the session while it is open and the token unexpired
    (spice-server refuses an expired ticket on every channel anyway)."""

    PRUNE_EVERY = 1.0  # seconds between deletes of expired rows

    def __init__(self, path: Path) -> None:
        import sqlite3

        from spicectl.pki import store

        store.ensure_dir(path.parent)
        self._sqlite = sqlite3
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash may lose the last claims, never corrupt
            self.db.execute("CREATE TABLE IF NOT EXISTS tokens "
                            "(nonce TEXT PRIMARY KEY, expires REAL NOT NULL, closing INTEGER NOT NULL)")
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='spent'").fetchone():
                # the store before sessions were shared: every token in it is spent
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT OR IGNORE INTO tokens SELECT nonce, expires, 1 FROM spent")
                self.db.execute("DROP TABLE spent")
                self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot open the spent-token store {path}: {exc}",
                               hint=f"remove {path} if it is damaged (tokens still valid become usable again)") \
                from None
        path.chmod(0o600)
        self._pruned = 0.0

    def claim(self, nonce: str, expires: float) -> bool:
        self._prune()
        try:
            self.db.execute("INSERT INTO tokens (nonce, expires, closing) VALUES (?, ?, 0)", (nonce, expires))
            return True
        except self._sqlite.IntegrityError:
            return False

    def join(self, nonce: str) -> bool:
        return self.db.execute("SELECT 1 FROM tokens WHERE nonce = ? AND closing = 0 AND expires >= ?",
                               (nonce, wall_clock())).fetchone() is not None

    def end(self, nonce: str) -> None:
        self.db.execute("UPDATE tokens SET closing = 1 WHERE nonce = ?", (nonce,))

    def is_spent(self, nonce: str) -> bool:
        return self.db.execute("SELECT 1 FROM tokens WHERE nonce = ? AND closing = 1 AND expires >= ?",
                               (nonce, wall_clock())).fetchone() is not None

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM tokens WHERE expires >= ?", (wall_clock(),)).fetchone()[0]

    def _prune(self) -> None:
        now = wall_clock()
        if now - self._pruned >= self.PRUNE_EVERY:
            self._pruned = now
            self.db.execute("DELETE FROM tokens WHERE expires < ?", (now,))

    def close(self) -> None:
        self.db.close()


def spent_store(state_dir: Path) -> SqliteSpent:
    return SqliteSpent(state_dir / "proxy" / "spent.db")


class Sessions:
    """Which sessions are live here, and which tokens are spent (claimed by a first connection).

    A token is claimed when its first connection arrives: later connections join that session
    while it lasts (a SPICE client opens one per channel); anywhere else, or afterwards, the
    token is spent."""

    def __init__(self, spent: MemorySpent | SqliteSpent | None = None) -> None:
        self.live: dict[str, Session] = {}
        self.spent = spent if spent is not None else MemorySpent()

    def check(self, grant: Grant) -> None:
        """Raise AuthError unless `grant` may open or join a session now."""
        session = self.live.get(grant.nonce)
        if session is not None:
            if not session.closing and self.spent.is_spent(grant.nonce):
                session.closing = True  # a connection of it ended in another process
            if session.closing:
                raise AuthError("token already used")
            return
        spent = self.spent.is_spent(grant.nonce)  # (and forgets the spent tokens that have expired)
        if wall_clock() > grant.expires:
            raise AuthError("token expired")
        if spent:
            raise AuthError("token already used")

    def join(self, grant: Grant, peer: str, via: str) -> Session:
        self.check(grant)
        session = self.live.get(grant.nonce)
        if session is None:
            # claimed here, or open in another process that shares the store
            if not self.spent.claim(grant.nonce, grant.expires) and not self.spent.join(grant.nonce):
                raise AuthError("token already used")
            session = self.live[grant.nonce] = Session(grant, peer, via)
        session.connections += 1
        session.channels += 1
        return session

    def close(self, session: Session) -> None:
        """One of the session's connections has ended: from now on nobody joins it, here or elsewhere."""
        if not session.closing:
            session.closing = True
            self.spent.end(session.grant.nonce)

    def leave(self, session: Session) -> bool:
        """One connection closed; True if that ended the session."""
        session.connections -= 1
        if session.connections > 0:
            return False
        self.close(session)
        session.ended = True
        self.live.pop(session.grant.nonce, None)
        return True
