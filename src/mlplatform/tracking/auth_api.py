"""A small client of MLflow's auth REST API, always acting as a given user.

The platform never uses more rights than its caller has: each call carries the
caller's own credentials and MLflow decides. Only listing who may access a resource,
which MLflow cannot do, reads with the admin's credentials, after the caller proved
MANAGE on that resource.
"""

import logging
from typing import Any

import httpx

from mlplatform.domain.names import BasicCredentials
from mlplatform.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PlatformError,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger(__name__)

RESOURCE_TYPES = ("experiment", "registered_model")


class MlflowAuthApi:
    def __init__(self, tracking_url: str, credentials: BasicCredentials) -> None:
        self.tracking_url = tracking_url.rstrip("/")
        self.credentials = credentials

    # -- users ----------------------------------------------------------------

    def create_user(self, username: str, password: str) -> None:
        self._call(
            "POST",
            "/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            what=f"user {username!r}",
        )

    def list_users(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/api/2.0/mlflow/users/list", what="users")
        users: list[dict[str, Any]] = body.get("users", [])
        return users

    def get_user(self, username: str) -> dict[str, Any]:
        body = self._call(
            "GET",
            "/api/2.0/mlflow/users/get",
            params={"username": username},
            what=f"user {username!r}",
        )
        user: dict[str, Any] = body["user"]
        return user

    def delete_user(self, username: str) -> None:
        self._call(
            "DELETE",
            "/api/2.0/mlflow/users/delete",
            json={"username": username},
            what=f"user {username!r}",
        )

    # -- permissions ----------------------------------------------------------

    def grant(
        self, username: str, resource_type: str, resource_id: str, permission: str
    ) -> None:
        self._call(
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": permission,
            },
            what=f"{resource_type} {resource_id!r}",
        )

    def revoke(self, username: str, resource_type: str, resource_id: str) -> None:
        self._call(
            "POST",
            "/api/3.0/mlflow/users/permissions/revoke",
            json={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource_id,
            },
            what=f"{resource_type} {resource_id!r}",
        )

    def permission(self, username: str, resource_type: str, resource_id: str) -> str:
        body = self._call(
            "GET",
            "/api/3.0/mlflow/users/permissions/get",
            params={
                "username": username,
                "resource_type": resource_type,
                "resource_id": resource_id,
            },
            what=f"{resource_type} {resource_id!r}",
        )
        return str(body.get("permission", "NO_PERMISSIONS"))

    # -- resources ------------------------------------------------------------

    def experiment_id(self, experiment: str) -> str:
        """The id of an experiment given by id or by name, as the caller sees it."""
        if experiment.isdigit():
            body = self._call(
                "GET",
                "/api/2.0/mlflow/experiments/get",
                params={"experiment_id": experiment},
                what=f"experiment {experiment!r}",
            )
        else:
            body = self._call(
                "GET",
                "/api/2.0/mlflow/experiments/get-by-name",
                params={"experiment_name": experiment},
                what=f"experiment {experiment!r}",
            )
        return str(body["experiment"]["experiment_id"])

    def registered_model_name(self, name: str) -> str:
        body = self._call(
            "GET",
            "/api/2.0/mlflow/registered-models/get",
            params={"name": name},
            what=f"registered model {name!r}",
        )
        return str(body["registered_model"]["name"])

    # -- plumbing -------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        auth = (self.credentials.username, self.credentials.password)
        try:
            response = httpx.request(
                method,
                self.tracking_url + path,
                json=json,
                params=params,
                auth=auth,
                timeout=30,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the tracking server does not answer: {type(exc).__name__}"
            ) from None
        if response.status_code < 400:
            body: dict[str, Any] = response.json() if response.content else {}
            return body
        raise _error(response, what, self.credentials.username)


def _error(response: httpx.Response, what: str, username: str) -> PlatformError:
    try:
        detail = str(response.json().get("message", ""))
    except ValueError:
        detail = response.text[:200]
    status = response.status_code
    if status == 401:
        return Unauthenticated(f"MLflow rejected the credentials of user {username!r}")
    if status == 403:
        return PermissionDenied(f"user {username!r} may not do this on {what}")
    if status == 404 or "RESOURCE_DOES_NOT_EXIST" in response.text:
        return NotFound(f"{what} not found")
    if "RESOURCE_ALREADY_EXISTS" in response.text or "already exists" in detail:
        return Conflict(f"{what} already exists")
    if status == 400:
        return InvalidInput(f"MLflow refused the request for {what}: {detail}")
    return PlatformError(f"MLflow answered {status} for {what}: {detail}")
