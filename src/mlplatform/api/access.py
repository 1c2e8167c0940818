"""Routes for users and permissions."""

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from mlplatform.api.deps import CallerDep, PlatformDep

router = APIRouter()

ResourceType = Literal["experiment", "registered_model"]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    password: str


class UserOut(BaseModel):
    username: str
    is_admin: bool


class PermissionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str
    resource_type: ResourceType
    resource: str  # experiment id or name; registered model name
    permission: str | None = None  # required to grant


class GrantOut(BaseModel):
    username: str
    permission: str


@router.post("/users", status_code=201)
def create_user(body: UserCreate, platform: PlatformDep, caller: CallerDep) -> UserOut:
    user = platform.access.create_user(caller, body.username, body.password)
    return UserOut(**asdict(user))


@router.get("/users")
def list_users(platform: PlatformDep, caller: CallerDep) -> list[UserOut]:
    return [UserOut(**asdict(u)) for u in platform.access.list_users(caller)]


@router.delete("/users/{username}", status_code=204)
def delete_user(username: str, platform: PlatformDep, caller: CallerDep) -> Response:
    platform.access.delete_user(caller, username)
    return Response(status_code=204)


@router.post("/permissions", status_code=204)
def grant_permission(
    body: PermissionChange, platform: PlatformDep, caller: CallerDep
) -> Response:
    platform.access.grant(
        caller, body.username, body.resource_type, body.resource, body.permission or ""
    )
    return Response(status_code=204)


@router.delete("/permissions", status_code=204)
def revoke_permission(
    body: PermissionChange, platform: PlatformDep, caller: CallerDep
) -> Response:
    platform.access.revoke(caller, body.username, body.resource_type, body.resource)
    return Response(status_code=204)


@router.get("/permissions")
def list_permissions(
    platform: PlatformDep,
    caller: CallerDep,
    resource_type: Annotated[ResourceType, Query()],
    resource: Annotated[str, Query(min_length=1)],
) -> list[GrantOut]:
    grants = platform.access.list_grants(caller, resource_type, resource)
    return [GrantOut(**asdict(g)) for g in grants]
