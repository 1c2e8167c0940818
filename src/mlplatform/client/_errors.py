"""Errors raised by the client.

MLPlatformError            status and message of the failed call
 +-- AuthenticationError   401: missing or wrong token / MLflow credentials
 +-- PermissionDeniedError 403: authenticated, but not allowed
 +-- NotFoundError         404: deploy server, deployment or model missing
 +-- ConflictError         409: name taken, or still in use
 +-- ValidationError       422: a malformed name, URI or auth string
 +-- DeploymentFailedError the model server did not start; ``.deployment`` says why
 +-- ServerError           5xx, or the platform could not be reached
"""

from typing import Any


class MLPlatformError(Exception):
    status: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class AuthenticationError(MLPlatformError):
    status = 401


class PermissionDeniedError(MLPlatformError):
    status = 403


class NotFoundError(MLPlatformError):
    status = 404


class ConflictError(MLPlatformError):
    status = 409


class ValidationError(MLPlatformError):
    status = 422


class ServerError(MLPlatformError):
    pass


class DeploymentFailedError(MLPlatformError):
    def __init__(self, message: str, deployment: dict[str, Any]) -> None:
        super().__init__(message)
        self.deployment = deployment


_BY_STATUS: dict[int, type[MLPlatformError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
}


def error_for(status: int, message: str) -> MLPlatformError:
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else MLPlatformError)
    return cls(message, status)
