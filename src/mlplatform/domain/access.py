"""Users and their permissions on experiments and registered models.

Users live in the tracking server's auth store (MLflow's basic-auth app), so MLflow's
own permission checks apply to them. Every change is made through MLflow's auth API
with the caller's own credentials: MLflow decides who may grant what.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from mlplatform.credentials import check_password_policy
from mlplatform.domain.names import BasicCredentials
from mlplatform.domain.principals import Caller
from mlplatform.domain.tokens import TokenService, require_admin
from mlplatform.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mlplatform.tracking.auth_api import MlflowAuthApi

logger = logging.getLogger(__name__)

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "DENY")


@dataclass(frozen=True)
class Grant:
    username: str
    permission: str


@dataclass(frozen=True)
class UserInfo:
    username: str
    is_admin: bool


class AccessService:
    def __init__(
        self,
        tracking_url: str,
        tokens: TokenService,
        admin_credentials: Callable[[], BasicCredentials],
    ) -> None:
        self.tracking_url = tracking_url
        self.tokens = tokens
        self._admin_credentials = admin_credentials

    # -- users ----------------------------------------------------------------

    def create_user(self, caller: Caller, username: str, password: str) -> UserInfo:
        require_admin(caller.principal, "creating users")
        if not username or any(ch.isspace() or ch == ":" for ch in username):
            raise InvalidInput(
                f"invalid user name {username!r}: no spaces, no ':', not empty"
            )
        check_password_policy(password, what="the user's password")
        self._as_caller(caller).create_user(username, password)
        logger.info("user %s created by %s", username, caller.principal.username)
        return UserInfo(username, is_admin=False)

    def list_users(self, caller: Caller) -> list[UserInfo]:
        require_admin(caller.principal, "listing users")
        users = self._as_caller(caller).list_users()
        return [UserInfo(u["username"], bool(u.get("is_admin"))) for u in users]

    def delete_user(self, caller: Caller, username: str) -> None:
        require_admin(caller.principal, "deleting users")
        self._as_caller(caller).delete_user(username)
        revoked = self.tokens.revoke_all(username)
        logger.info(
            "user %s deleted by %s; %d token(s) revoked",
            username,
            caller.principal.username,
            revoked,
        )

    def require_user(self, username: str) -> None:
        """Raise ``NotFound`` unless ``username`` is a user of the tracking server."""
        MlflowAuthApi(self.tracking_url, self._admin_credentials()).get_user(username)

    # -- permissions ----------------------------------------------------------

    def grant(
        self,
        caller: Caller,
        username: str,
        resource_type: str,
        resource: str,
        permission: str,
    ) -> None:
        permission = permission.upper()
        if permission not in PERMISSIONS:
            known = ", ".join(PERMISSIONS)
            raise InvalidInput(f"invalid permission {permission!r}: use one of {known}")
        api = self._as_caller(caller)
        resource_id = self._resource_id(api, resource_type, resource)
        self.require_user(username)
        try:
            api.grant(username, resource_type, resource_id, permission)
        except Conflict:
            raise Conflict(
                f"{username!r} already has a grant on {resource_type} {resource!r}; "
                "revoke it first to change it"
            ) from None
        logger.info(
            "%s granted %s on %s %s to %s",
            caller.principal.username,
            permission,
            resource_type,
            resource_id,
            username,
        )

    def revoke(
        self, caller: Caller, username: str, resource_type: str, resource: str
    ) -> None:
        api = self._as_caller(caller)
        resource_id = self._resource_id(api, resource_type, resource)
        self.require_user(username)
        try:
            api.revoke(username, resource_type, resource_id)
        except NotFound:
            raise NotFound(
                f"{username!r} has no grant on {resource_type} {resource!r}"
            ) from None

    def list_grants(
        self, caller: Caller, resource_type: str, resource: str
    ) -> list[Grant]:
        """Who has which access to one resource: for admins and its managers."""
        api = self._as_caller(caller)
        resource_id = self._resource_id(api, resource_type, resource)
        if not caller.principal.is_admin:
            mine = api.permission(caller.principal.username, resource_type, resource_id)
            if mine != "MANAGE":
                raise PermissionDenied(
                    f"listing access to {resource_type} {resource!r} needs MANAGE on "
                    "it or the admin role"
                )
        # MLflow has no "who can access X" call: ask it user by user, as the admin.
        admin = MlflowAuthApi(self.tracking_url, self._admin_credentials())
        grants = []
        for user in admin.list_users():
            name = user["username"]
            if user.get("is_admin"):
                grants.append(Grant(name, "ADMIN"))
                continue
            permission = admin.permission(name, resource_type, resource_id)
            if permission not in ("NO_PERMISSIONS", "DENY"):
                grants.append(Grant(name, permission))
        return grants

    # -- steps ----------------------------------------------------------------

    def _as_caller(self, caller: Caller) -> MlflowAuthApi:
        if caller.mlflow is None:
            raise Unauthenticated(
                "missing MLflow credentials: send Authorization: Basic built from "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        return MlflowAuthApi(self.tracking_url, caller.mlflow)

    @staticmethod
    def _resource_id(api: MlflowAuthApi, resource_type: str, resource: str) -> str:
        if resource_type == "experiment":
            return api.experiment_id(resource)
        if resource_type == "registered_model":
            return api.registered_model_name(resource)
        raise InvalidInput(
            f"invalid resource type {resource_type!r}: "
            "use experiment or registered_model"
        )
