"""What the domain hands to the API and the CLI: plain data, no ORM objects."""

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class DeployServerView:
    name: str
    owner: str
    runtime: str
    created_at: datetime
    deployments: int
    url: str
    size: str
    instance: str


@dataclass(frozen=True)
class DeploymentView:
    deploy_server: str
    name: str
    owner: str
    model_uri: str
    status: str
    model_ref: str  # the public invocations URL
    url: str  # the public base URL of the deployment
    auth: bool
    auth_user: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
