"""Routes for platform tokens."""

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict

from mlplatform.api.deps import PlatformDep, PrincipalDep
from mlplatform.domain.route_auth import parse_basic_header

router = APIRouter()


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str
    name: str
    role: str = "user"
    ttl: str | None = None  # e.g. "30d"; no expiry when unset


class TokenCreated(BaseModel):
    id: str
    token: str  # shown once


class RegisterTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = "user"
    ttl: str | None = None  # default 1d
    name: str = "register"


class TokenExchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    register_token: str
    name: str = "refresh"


class TokenOut(BaseModel):
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


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreate, platform: PlatformDep, principal: PrincipalDep
) -> TokenCreated:
    issued = platform.tokens.issue(
        principal,
        body.owner,
        body.name,
        body.role,
        body.ttl,
        user_exists=platform.require_user,
    )
    return TokenCreated(id=issued.id, token=issued.secret)


@router.post("/tokens/register", status_code=201)
def create_register_token(
    body: RegisterTokenCreate, platform: PlatformDep, principal: PrincipalDep
) -> TokenCreated:
    issued = platform.tokens.issue_register(principal, body.role, body.ttl, body.name)
    return TokenCreated(id=issued.id, token=issued.secret)


@router.post("/tokens/exchange", status_code=201)
def exchange_register_token(
    body: TokenExchange,
    platform: PlatformDep,
    authorization: Annotated[str | None, Header()] = None,
) -> TokenCreated:
    """Trade a register token for an access token; needs no token, only MLflow auth."""
    issued = platform.exchange_register_token(
        body.register_token, parse_basic_header(authorization), body.name
    )
    return TokenCreated(id=issued.id, token=issued.secret)


@router.get("/tokens")
def list_tokens(platform: PlatformDep, principal: PrincipalDep) -> list[TokenOut]:
    return [TokenOut(**asdict(t)) for t in platform.tokens.list(principal)]


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(
    token_id: str, platform: PlatformDep, principal: PrincipalDep
) -> Response:
    platform.tokens.revoke(principal, token_id)
    return Response(status_code=204)
