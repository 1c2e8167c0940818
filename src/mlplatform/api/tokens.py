"""Routes for platform tokens."""

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from mlplatform.api.deps import PlatformDep, PrincipalDep

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


class TokenOut(BaseModel):
    id: str
    owner: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreate, platform: PlatformDep, principal: PrincipalDep
) -> TokenCreated:
    issued = platform.tokens.issue(
        principal, body.owner, body.name, body.role, body.ttl
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
