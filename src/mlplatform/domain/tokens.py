"""Platform tokens: random secrets handed out once, kept only as SHA-256 digests.

Access tokens authenticate every call (platform API, and the tracking server through
its auth hook). Register tokens are single-use invitations: an admin makes one with a
role and a lifetime, and the user it is handed to exchanges it, while proving who they
are with their MLflow credentials, for an access token of their own with that role.

A plain digest is enough because a token has 256 bits of entropy: unlike a password it
cannot be guessed, so a slow hash would only slow down every API call.
"""

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from mlplatform.domain.principals import Principal
from mlplatform.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated
from mlplatform.store import Database, Token

TOKEN_PREFIX = "mlp_"
ACCESS = "access"
REGISTER = "register"
DEFAULT_REGISTER_TTL = timedelta(days=1)
ROLES = ("user", "admin")
MAX_TTL = timedelta(days=3650)
MAX_NAME_LENGTH = 128
_TTL = re.compile(r"^(\d+)([smhdw])$")
_TTL_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_ttl(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``... as a timedelta."""
    match = _TTL.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise InvalidInput(
            f"invalid ttl {text!r}: use a number and s, m, h, d or w (30d)"
        )
    try:
        ttl = timedelta(**{_TTL_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        ttl = MAX_TTL * 2
    if ttl > MAX_TTL:
        raise InvalidInput(f"invalid ttl {text!r}: at most {MAX_TTL.days} days")
    return ttl


def require_admin(principal: Principal, action: str) -> None:
    if not principal.is_admin:
        raise PermissionDenied(f"{action} needs the admin role; your token has 'user'")


@dataclass(frozen=True)
class TokenInfo:
    id: str
    owner: str
    name: str
    role: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    used: bool


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
        self,
        owner: str,
        name: str,
        role: str,
        ttl: timedelta | None = None,
        kind: str = ACCESS,
    ) -> IssuedToken:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + ttl if ttl else None
        token = Token(
            owner=owner,
            name=name,
            role=role,
            kind=kind,
            secret_hash=digest(secret),
            expires_at=expires_at,
        )
        with self.db.session() as session:
            session.add(token)
            session.flush()
            return IssuedToken(token.id, secret)

    def issue(
        self,
        principal: Principal,
        owner: str,
        name: str,
        role: str,
        ttl: str | None,
        user_exists: Callable[[str], None],
    ) -> IssuedToken:
        require_admin(principal, "creating tokens")
        if role not in ROLES:
            raise InvalidInput(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
        if not owner or not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidInput(
                f"a token needs an owner and a name of 1-{MAX_NAME_LENGTH} characters"
            )
        lifetime = parse_ttl(ttl) if ttl else None
        user_exists(owner)
        return self.create(owner, name, role, lifetime)

    def issue_register(
        self, principal: Principal, role: str, ttl: str | None, name: str
    ) -> IssuedToken:
        require_admin(principal, "creating register tokens")
        if role not in ROLES:
            raise InvalidInput(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
        lifetime = parse_ttl(ttl) if ttl else DEFAULT_REGISTER_TTL
        return self.create(principal.username, name, role, lifetime, kind=REGISTER)

    def exchange(self, register_secret: str, username: str, name: str) -> IssuedToken:
        """Spend a register token: an access token for ``username`` with its role.

        The caller must already have proved to be ``username`` (MLflow credentials).
        """
        now = datetime.now(UTC)
        with self.db.session() as session:
            # Marking it used in the same UPDATE that checks it makes a race between
            # two exchanges of one token impossible: one of them updates no row.
            spent = session.execute(
                update(Token)
                .where(
                    Token.secret_hash == digest(register_secret),
                    Token.kind == REGISTER,
                    Token.used_at.is_(None),
                    Token.revoked_at.is_(None),
                )
                .values(used_at=now, last_used_at=now)
                .returning(Token.role, Token.expires_at)
            ).first()
            if spent is None:
                raise Unauthenticated("invalid, revoked or already used register token")
            role, expires_at = spent
            if expires_at is not None and expires_at.replace(tzinfo=UTC) <= now:
                raise Unauthenticated("the register token has expired")
        return self.create(username, name, role)

    def revoke_all(self, owner: str) -> int:
        """Revoke every token of ``owner`` (a deleted user); returns how many."""
        now = datetime.now(UTC)
        with self.db.session() as session:
            result = session.execute(
                update(Token)
                .where(Token.owner == owner, Token.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def list(self, principal: Principal) -> list[TokenInfo]:
        with self.db.session() as session:
            query = select(Token).order_by(Token.created_at)
            if not principal.is_admin:
                query = query.where(Token.owner == principal.username)
            return [_info(token) for token in session.scalars(query)]

    def revoke(self, principal: Principal, token_id: str) -> None:
        with self.db.session() as session:
            token = session.get(Token, token_id)
            visible = token is not None and (
                principal.is_admin or token.owner == principal.username
            )
            if token is None or not visible:
                raise NotFound(f"token {token_id!r} not found")
            token.revoked_at = datetime.now(UTC)

    def authenticate(self, secret: str | None) -> Principal:
        if not secret:
            raise Unauthenticated(
                "missing platform token: pass refresh_token to MLPlatform or set "
                "REFRESH_TOKEN (header X-MLPlatform-Token)"
            )
        now = datetime.now(UTC)
        with self.db.session() as session:
            token = session.scalar(
                select(Token).where(
                    Token.secret_hash == digest(secret), Token.kind == ACCESS
                )
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


def _info(token: Token) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        owner=token.owner,
        name=token.name,
        role=token.role,
        kind=token.kind,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked=token.revoked_at is not None,
        used=token.used_at is not None,
    )
