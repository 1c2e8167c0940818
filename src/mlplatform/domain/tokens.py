"""Platform API tokens: random secrets handed out once, kept only as SHA-256 digests.

A plain digest is enough because a token has 256 bits of entropy: unlike a password it
cannot be guessed, so a slow hash would only slow down every API call.
"""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mlplatform.domain.principals import Principal
from mlplatform.errors import Unauthenticated
from mlplatform.store import Database, Token

TOKEN_PREFIX = "mlp_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: str
    secret: str  # shown once, never stored


class TokenService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, owner: str, name: str, role: str, ttl: timedelta | None = None
    ) -> IssuedToken:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + ttl if ttl else None
        token = Token(
            owner=owner,
            name=name,
            role=role,
            secret_hash=digest(secret),
            expires_at=expires_at,
        )
        with self.db.session() as session:
            session.add(token)
            session.flush()
            return IssuedToken(token.id, secret)

    def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(
                "missing platform token: pass refresh_token to MLPlatform or set "
                "REFRESH_TOKEN (header X-MLPlatform-Token)"
            )
        now = datetime.now(UTC)
        with self.db.session() as session:
            token = session.scalar(
                select(Token).where(Token.secret_hash == digest(secret))
            )
            if token is None or token.revoked_at is not None:
                raise Unauthenticated("invalid or revoked platform token")
            expires_at = token.expires_at
            if expires_at is not None and expires_at.replace(tzinfo=UTC) <= now:
                raise Unauthenticated("the platform token has expired")
            last = token.last_used_at
            # One write a minute is enough for "last used" and keeps reads cheap.
            if last is None or now - last.replace(tzinfo=UTC) > timedelta(minutes=1):
                token.last_used_at = now
            return Principal(token.owner, token.role, token.id)
