"""Request dependencies: the platform object, the token's principal, the caller."""

from typing import Annotated

from fastapi import Depends, Header, Request

from mlplatform.domain.names import BasicCredentials
from mlplatform.domain.principals import Caller, Principal
from mlplatform.domain.route_auth import parse_basic_header
from mlplatform.errors import PermissionDenied
from mlplatform.platform import Platform

TOKEN_HEADER = "X-MLPlatform-Token"


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def get_principal(
    platform: PlatformDep,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if token is None and (basic := parse_basic_header(authorization)) is not None:
        # A notebook of a hub-linked MLflow has its hub token, not a platform token.
        principal = platform.instances.principal_from_hub(*basic)
        if principal is not None:
            return principal
    return platform.tokens.authenticate(token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_caller(
    principal: PrincipalDep,
    token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    basic = parse_basic_header(authorization)
    credentials = BasicCredentials(*basic) if basic else None
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if credentials is None and token is not None and principal.token_id is not None:
        # A platform token is also its owner's MLflow password (the tracking server's
        # auth hook takes it), so a caller with only a token can still fetch models.
        credentials = BasicCredentials(principal.username, token)
    if credentials is not None and credentials.username != principal.username:
        raise PermissionDenied(
            f"the platform token belongs to {principal.username!r} but the MLflow "
            f"credentials are for {credentials.username!r}; use one user's both"
        )
    return Caller(principal, credentials)


CallerDep = Annotated[Caller, Depends(get_caller)]
