"""Basic auth of deployment routes, checked for Traefik through forwardAuth.

Only a bcrypt hash of each route's password is stored. Checking bcrypt on every
request would add ~50 ms, so a credential that verified once is remembered in memory
as an HMAC under a key that lives only in this process, for ``ttl`` seconds. A hit
costs one HMAC; a stolen database or memory dump of the cache yields no password.
"""

import base64
import hashlib
import hmac
import secrets
import threading
import time

import bcrypt

BCRYPT_ROUNDS = 12


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def parse_basic_header(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


class RouteAuthCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, dict[bytes, float]] = {}
        self._lock = threading.Lock()

    def _digest(self, deployment_id: str, header: str) -> bytes:
        message = f"{deployment_id}\0{header}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def cached(self, deployment_id: str, header: str | None) -> bool:
        """True if ``header`` verified for this deployment within the last ``ttl``."""
        if header is None:
            return False
        digest = self._digest(deployment_id, header)
        with self._lock:
            expiry = self._verified.get(deployment_id, {}).get(digest)
        return expiry is not None and expiry > time.monotonic()

    def check(
        self, deployment_id: str, header: str | None, user: str, password_hash: str
    ) -> bool:
        """True if ``header`` carries ``user`` and the password of ``password_hash``.

        Costs one bcrypt check unless ``cached``; call it off the event loop.
        """
        if header is None:
            return False
        if self.cached(deployment_id, header):
            return True
        credentials = parse_basic_header(header)
        # Bytes: compare_digest refuses non-ASCII str, and user names may be Unicode.
        sent_user = credentials[0].encode() if credentials else b""
        if credentials is None or not hmac.compare_digest(sent_user, user.encode()):
            return False
        password = credentials[1].encode()
        if len(password) > 72 or not bcrypt.checkpw(password, password_hash.encode()):
            return False
        digest = self._digest(deployment_id, header)
        with self._lock:
            entries = self._verified.setdefault(deployment_id, {})
            entries[digest] = time.monotonic() + self.ttl
        return True

    def forget(self, deployment_id: str) -> None:
        with self._lock:
            self._verified.pop(deployment_id, None)
