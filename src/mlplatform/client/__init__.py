"""The mlplatform client library: what users import."""

from mlplatform.client._client import MLPlatform
from mlplatform.client._errors import (
    AuthenticationError,
    ConflictError,
    DeploymentFailedError,
    MLPlatformError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ValidationError,
)

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "DeploymentFailedError",
    "MLPlatform",
    "MLPlatformError",
    "NotFoundError",
    "PermissionDeniedError",
    "ServerError",
    "ValidationError",
]
