"""Routes for MLflow and JupyterHub instances (admin tokens only)."""

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, SecretStr

from mlplatform.api.deps import PlatformDep, PrincipalDep

router = APIRouter()


class JupyterHubCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    admin_name: str
    admin_password: SecretStr


class MlflowCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    jupyterhub: str | None = None  # id or name of the hub to link to
    admin_name: str = "admin"
    admin_password: SecretStr | None = None  # required for Standalone
    demo_mode: bool = True


class InstanceOut(BaseModel):
    id: str
    name: str
    kind: str
    mode: str
    linked_to: str | None
    status: str
    url: str
    admin_user: str
    created_at: datetime


@router.post("/instances/jupyterhub", status_code=201)
async def create_jupyterhub(
    body: JupyterHubCreate, platform: PlatformDep, principal: PrincipalDep
) -> InstanceOut:
    view = await run_in_threadpool(
        platform.instances.create_jupyterhub,
        principal,
        body.name,
        body.admin_name,
        body.admin_password.get_secret_value(),
    )
    return InstanceOut(**asdict(view))


@router.post("/instances/mlflow", status_code=201)
async def create_mlflow(
    body: MlflowCreate, platform: PlatformDep, principal: PrincipalDep
) -> InstanceOut:
    password = body.admin_password.get_secret_value() if body.admin_password else None
    view = await run_in_threadpool(
        platform.instances.create_mlflow,
        principal,
        body.name,
        body.jupyterhub,
        body.admin_name,
        password,
        body.demo_mode,
    )
    return InstanceOut(**asdict(view))


@router.get("/instances")
def list_instances(platform: PlatformDep, principal: PrincipalDep) -> list[InstanceOut]:
    return [InstanceOut(**asdict(v)) for v in platform.instances.list_all(principal)]


@router.get("/instances/{key}")
def get_instance(
    key: str, platform: PlatformDep, principal: PrincipalDep
) -> InstanceOut:
    return InstanceOut(**asdict(platform.instances.get(principal, key)))


@router.delete("/instances/{key}", status_code=204)
async def delete_instance(
    key: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    force: bool = False,
    delete_data: bool = False,
) -> Response:
    await run_in_threadpool(
        platform.instances.delete, principal, key, force, delete_data
    )
    return Response(status_code=204)
