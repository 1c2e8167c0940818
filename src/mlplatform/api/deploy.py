"""Routes for deploy servers and deployments."""

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from mlplatform.api.deps import CallerDep, PlatformDep, PrincipalDep
from mlplatform.api.schemas import (
    DeploymentCreate,
    DeploymentOut,
    DeployServerCreate,
    DeployServerOut,
    WhoAmI,
)

router = APIRouter()


@router.get("/whoami")
def who_am_i(principal: PrincipalDep) -> WhoAmI:
    return WhoAmI(username=principal.username, role=principal.role)


@router.post("/deploy-servers", status_code=201)
def create_deploy_server(
    body: DeployServerCreate, platform: PlatformDep, principal: PrincipalDep
) -> DeployServerOut:
    view = platform.deploys.create_deploy_server(
        principal,
        body.name,
        body.runtime,
        platform.settings.runtime,
        body.size,
        body.instance,
    )
    return DeployServerOut(**asdict(view))


@router.get("/deploy-servers")
def list_deploy_servers(
    platform: PlatformDep, principal: PrincipalDep
) -> list[DeployServerOut]:
    views = platform.deploys.list_deploy_servers(principal)
    return [DeployServerOut(**asdict(v)) for v in views]


@router.get("/deploy-servers/{server}")
def get_deploy_server(
    server: str, platform: PlatformDep, principal: PrincipalDep
) -> DeployServerOut:
    return DeployServerOut(
        **asdict(platform.deploys.get_deploy_server(principal, server))
    )


@router.delete("/deploy-servers/{server}", status_code=204)
async def delete_deploy_server(
    server: str, platform: PlatformDep, principal: PrincipalDep, force: bool = False
) -> Response:
    await run_in_threadpool(
        platform.deploys.delete_deploy_server, principal, server, force
    )
    return Response(status_code=204)


@router.post("/deploy-servers/{server}/deployments", status_code=201)
async def create_deployment(
    server: str, body: DeploymentCreate, platform: PlatformDep, caller: CallerDep
) -> DeploymentOut:
    view = await run_in_threadpool(
        platform.deploys.create_deployment,
        caller,
        server,
        body.name,
        body.model_uri,
        body.auth,
    )
    return DeploymentOut(**asdict(view))


@router.get("/deploy-servers/{server}/deployments")
def list_deployments(
    server: str, platform: PlatformDep, principal: PrincipalDep
) -> list[DeploymentOut]:
    views = platform.deploys.list_deployments(principal, server)
    return [DeploymentOut(**asdict(v)) for v in views]


@router.get("/deploy-servers/{server}/deployments/{name}")
def get_deployment(
    server: str, name: str, platform: PlatformDep, principal: PrincipalDep
) -> DeploymentOut:
    view = platform.deploys.get_deployment(principal, server, name)
    return DeploymentOut(**asdict(view))


@router.delete("/deploy-servers/{server}/deployments/{name}", status_code=204)
async def delete_deployment(
    server: str, name: str, platform: PlatformDep, principal: PrincipalDep
) -> Response:
    await run_in_threadpool(platform.deploys.delete_deployment, principal, server, name)
    return Response(status_code=204)


@router.get("/deploy-servers/{server}/deployments/{name}/logs")
def deployment_logs(
    server: str,
    name: str,
    platform: PlatformDep,
    principal: PrincipalDep,
    tail: Annotated[int | None, Query(ge=1, le=100_000)] = None,
) -> Response:
    text = platform.deploys.deployment_logs(principal, server, name, tail)
    return Response(text, media_type="text/plain; charset=utf-8")
