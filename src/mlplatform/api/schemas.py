"""Request and response bodies of the platform API."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from mlplatform.domain.names import NAME_RULE


class DeployServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"Deploy server name: {NAME_RULE}.")
    runtime: str | None = Field(
        default=None, description="process or docker; default: the platform's"
    )
    size: str | None = Field(
        default=None, description="low, mid (default) or high: CPU and memory limits"
    )
    instance: str | None = Field(
        default=None, description="The MLflow instance models come from; 'default'"
    )


class DeployServerOut(BaseModel):
    name: str
    owner: str
    runtime: str
    created_at: datetime
    deployments: int
    url: str
    size: str
    instance: str


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"Deployment name: {NAME_RULE}.")
    model_uri: str = Field(
        description="models:/<name>/<version>, models:/<name>@<alias>, models:/m-<id>, "
        "runs:/<run>/<path> or mlflow-artifacts:/..."
    )
    auth: str | None = Field(
        default=None, description="'user:password' protecting the public route."
    )


class DeploymentOut(BaseModel):
    deploy_server: str
    name: str
    owner: str
    model_uri: str
    status: str
    model_ref: str
    url: str
    auth: bool
    auth_user: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class WhoAmI(BaseModel):
    username: str
    role: str


class ErrorOut(BaseModel):
    status: int
    message: str
