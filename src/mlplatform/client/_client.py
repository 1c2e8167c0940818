"""The ``MLPlatform`` client: deploy servers and deployments from Python."""

import base64
import os
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from mlplatform.client._errors import (
    AuthenticationError,
    DeploymentFailedError,
    MLPlatformError,
    ServerError,
    ValidationError,
    error_for,
)

API_PREFIX = "/platform/api/v1"
TOKEN_HEADER = "X-MLPlatform-Token"


def _segment(value: str) -> str:
    """One path segment of the API; empty or slashed values would name another route."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("a name or id is empty")
    return quote(value, safe="")


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _base_url(url: str | None, tracking_uri: str | None) -> str:
    url = url or os.getenv("MLPLATFORM_URL")
    if not url:
        tracking_uri = tracking_uri or os.getenv("MLFLOW_TRACKING_URI")
        if tracking_uri and tracking_uri.startswith(("http://", "https://")):
            parts = urlsplit(tracking_uri)
            url = f"{parts.scheme}://{parts.netloc}"
    if not url:
        raise MLPlatformError(
            "no platform URL: set MLPLATFORM_URL (see `mlplatform env`) or pass url="
        )
    return url.rstrip("/")


def _payload(data: Any) -> Any:
    """Shape ``data`` the way MLflow's scoring server expects it."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        return {"dataframe_split": data.to_dict(orient="split")}
    if isinstance(data, Mapping) and data.keys() & {
        "dataframe_split",
        "dataframe_records",
        "instances",
        "inputs",
    }:
        return dict(data)
    if hasattr(data, "tolist"):  # a NumPy array
        return {"inputs": data.tolist()}
    return {"inputs": data}


class MLPlatform:
    """Client of an mlplatform installation.

    ``refresh_token`` is the platform token (default ``$REFRESH_TOKEN``); the MLflow
    credentials sent along come from ``tracking_username``/``tracking_password`` or
    ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, read at each call.
    """

    def __init__(
        self,
        refresh_token: str | None = None,
        *,
        url: str | None = None,
        tracking_uri: str | None = None,
        tracking_username: str | None = None,
        tracking_password: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        self._token = refresh_token or os.getenv("REFRESH_TOKEN")
        self.url = _base_url(url, tracking_uri)
        self._tracking_username = tracking_username
        self._tracking_password = tracking_password
        self._route_auth: dict[tuple[str, str], str] = {}
        self._http = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"MLPlatform(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "MLPlatform":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- identity -------------------------------------------------------------

    def who_am_i(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/whoami")
        return result

    def create_token(
        self, owner: str, name: str, role: str = "user", ttl: str | None = None
    ) -> dict[str, Any]:
        """Create a token for ``owner`` (admin only); its secret is shown once."""
        body = {"owner": owner, "name": name, "role": role, "ttl": ttl}
        result: dict[str, Any] = self._call("POST", "/tokens", json=body)
        return result

    def list_tokens(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/tokens")
        return result

    def get_project_tokens_info(self) -> list[dict[str, Any]]:
        """Your tokens (all tokens for an admin), without their secrets."""
        return self.list_tokens()

    def delete_token(self, token_id: str) -> None:
        self._call("DELETE", f"/tokens/{_segment(token_id)}")

    def create_register_token(
        self, user_role: str = "user", ttl: str | None = None, name: str = "register"
    ) -> dict[str, Any]:
        """A single-use invitation (admin only): hand its ``token`` to the new user."""
        body = {"role": user_role, "ttl": ttl, "name": name}
        result: dict[str, Any] = self._call("POST", "/tokens/register", json=body)
        return result

    def create_refresh_token(
        self, register_token: str, name: str = "refresh"
    ) -> dict[str, Any]:
        """Spend a register token for your own token, proving who you are to MLflow.

        The new token becomes this client's token.
        """
        body = {"register_token": register_token, "name": name}
        result: dict[str, Any] = self._call("POST", "/tokens/exchange", json=body)
        self._token = result["token"]
        return result

    # -- users and permissions ------------------------------------------------

    def create_user(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        result: dict[str, Any] = self._call("POST", "/users", json=body)
        return result

    def list_users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/users")
        return result

    def delete_user(self, username: str) -> None:
        self._call("DELETE", f"/users/{_segment(username)}")

    def grant_permission(
        self,
        username: str,
        permission: str,
        *,
        experiment: str | None = None,
        registered_model: str | None = None,
    ) -> None:
        """Give ``username`` READ, USE, EDIT, MANAGE or DENY on one resource."""
        body = _resource(experiment, registered_model)
        body.update(username=username, permission=permission)
        self._call("POST", "/permissions", json=body)

    def revoke_permission(
        self,
        username: str,
        *,
        experiment: str | None = None,
        registered_model: str | None = None,
    ) -> None:
        body = _resource(experiment, registered_model)
        body["username"] = username
        self._call("DELETE", "/permissions", json=body)

    def list_permissions(
        self, *, experiment: str | None = None, registered_model: str | None = None
    ) -> list[dict[str, Any]]:
        """Who has which access to one resource (admins and its managers only)."""
        result: list[dict[str, Any]] = self._call(
            "GET", "/permissions", params=_resource(experiment, registered_model)
        )
        return result

    # -- instances (admin) ----------------------------------------------------

    def create_jupyter_hub(
        self, instance_name: str, jh_admin_name: str, jh_admin_password: str
    ) -> dict[str, Any]:
        """A JupyterHub where users sign up and the admin approves them."""
        body = {
            "name": instance_name,
            "admin_name": jh_admin_name,
            "admin_password": jh_admin_password,
        }
        result: dict[str, Any] = self._call("POST", "/instances/jupyterhub", json=body)
        return result

    def create_mlflow(
        self,
        instance_name: str,
        jh_id: str | None = None,
        is_mlflow_demo_mode: bool = True,
        admin_name: str = "admin",
        admin_password: str | None = None,
    ) -> dict[str, Any]:
        """An MLflow instance: linked to the JupyterHub ``jh_id`` (id or name), or
        Standalone with ``admin_name``/``admin_password``."""
        body = {
            "name": instance_name,
            "jupyterhub": jh_id,
            "admin_name": admin_name,
            "admin_password": admin_password,
            "demo_mode": is_mlflow_demo_mode,
        }
        result: dict[str, Any] = self._call("POST", "/instances/mlflow", json=body)
        return result

    def get_all_instances_info(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/instances")
        return result

    def get_instance_info(self, instance_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/instances/{_segment(instance_id)}"
        )
        return result

    def delete_instance(
        self, instance_id: str, force: bool = False, delete_data: bool = False
    ) -> None:
        """Stop an instance and remove its route; its data only with ``delete_data``."""
        params = {"force": str(force).lower(), "delete_data": str(delete_data).lower()}
        self._call("DELETE", f"/instances/{_segment(instance_id)}", params=params)

    # -- deploy servers (endpoints) -------------------------------------------

    def create_endpoint_standalone(
        self,
        name: str,
        runtime: str | None = None,
        size: str | None = None,
        instance: str | None = None,
    ) -> dict[str, Any]:
        """Create a deploy server; runtime process/docker, size low/mid/high; the
        models come from MLflow ``instance`` (default: the one `up` starts)."""
        body = {"name": name, "runtime": runtime, "size": size, "instance": instance}
        result: dict[str, Any] = self._call("POST", "/deploy-servers", json=body)
        return result

    def list_endpoints(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/deploy-servers")
        return result

    def get_endpoint(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/deploy-servers/{_segment(name)}")
        return result

    def delete_endpoint(self, name: str, force: bool = False) -> None:
        params = {"force": "true"} if force else None
        self._call("DELETE", f"/deploy-servers/{_segment(name)}", params=params)

    # -- deployments ----------------------------------------------------------

    def create_deployment_standalone(
        self,
        server: str,
        name: str,
        model_uri: str,
        auth: str | None = None,
        *,
        model_username: str | None = None,
        model_password: str | None = None,
    ) -> dict[str, Any]:
        """Deploy ``model_uri`` and return once the model answers through its URL.

        Raises ``DeploymentFailedError`` (with the server's log tail) if it never does.
        """
        body = {"name": name, "model_uri": model_uri, "auth": auth}
        credentials = None
        if model_username is not None or model_password is not None:
            credentials = (model_username or "", model_password or "")
        deployment: dict[str, Any] = self._call(
            "POST",
            f"/deploy-servers/{_segment(server)}/deployments",
            json=body,
            credentials=credentials,
        )
        if auth is not None:
            self._route_auth[(server, name)] = auth
        if deployment.get("status") == "failed":
            raise DeploymentFailedError(
                f"deployment {server}/{name} failed: {deployment.get('error')}",
                deployment,
            )
        return deployment

    def create_deployment(
        self,
        deploy_server_name: str,
        deployment_name: str,
        model_uri: str,
        username: str | None = None,
        password: str | None = None,
        model_username: str | None = None,
        model_password: str | None = None,
        port_out: int | None = None,
    ) -> dict[str, Any]:
        """The long form known from hosted platforms.

        ``username``/``password`` protect the deployment's URL; ``model_username`` and
        ``model_password`` are the MLflow credentials used to fetch the model.
        """
        if port_out is not None:
            warnings.warn(
                "port_out is ignored: deployments are published by path under "
                "MLPLATFORM_URL (see model_ref in the result)",
                stacklevel=2,
            )
        if (username is None) != (password is None):
            raise ValidationError("give both username and password, or neither")
        auth = f"{username}:{password}" if username is not None else None
        return self.create_deployment_standalone(
            deploy_server_name,
            deployment_name,
            model_uri,
            auth,
            model_username=model_username,
            model_password=model_password,
        )

    def list_deployments(self, server: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call(
            "GET", f"/deploy-servers/{_segment(server)}/deployments"
        )
        return result

    def get_deployment(self, server: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", self._deployment_path(server, name))
        return result

    def delete_deployment(self, server: str, name: str) -> None:
        self._call("DELETE", self._deployment_path(server, name))
        self._route_auth.pop((server, name), None)

    def get_deployment_logs(
        self, server: str, name: str, tail: int | None = None
    ) -> str:
        params = {"tail": str(tail)} if tail else None
        response = self._request(
            "GET", self._deployment_path(server, name) + "/logs", params=params
        )
        return response.text

    # -- the model itself -----------------------------------------------------

    def ping_model(self, server: str, name: str, auth: str | None = None) -> bool:
        """True if the deployment answers ``/ping`` through its public URL."""
        response = self._model_request("GET", server, name, "ping", auth)
        return response.status_code == 200

    def predict_model(
        self, data: Any, server: str, name: str, auth: str | None = None
    ) -> Any:
        """Send ``data`` to the deployment's ``/invocations`` and return the JSON."""
        response = self._model_request(
            "POST", server, name, "invocations", auth, json=_payload(data)
        )
        return response.json()

    # -- plumbing -------------------------------------------------------------

    @staticmethod
    def _deployment_path(server: str, name: str) -> str:
        return f"/deploy-servers/{_segment(server)}/deployments/{_segment(name)}"

    def _model_request(
        self,
        method: str,
        server: str,
        name: str,
        path: str,
        auth: str | None,
        json: Any = None,
    ) -> httpx.Response:
        auth = auth or self._route_auth.get((server, name))
        headers = {}
        if auth:
            user, _, password = auth.partition(":")
            headers["Authorization"] = _basic(user, password)
        url = f"{self.url}/deploy/{_segment(server)}/{_segment(name)}/{path}"
        try:
            response = self._http.request(method, url, headers=headers, json=json)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_for(
                response.status_code, f"{method} {url}: {response.text[:500]}"
            )
        return response

    def _headers(self, credentials: tuple[str, str] | None) -> dict[str, str]:
        headers = {}
        if self._token:
            if not self._token.isascii():
                raise AuthenticationError(
                    "the platform token has non-ASCII characters: it cannot be valid"
                )
            headers[TOKEN_HEADER] = self._token
        if credentials is None:
            credentials = self._mlflow_credentials()
        if credentials is not None:
            headers["Authorization"] = _basic(*credentials)
        return headers

    def _mlflow_credentials(self) -> tuple[str, str] | None:
        """The caller's MLflow credentials, as MLflow's own client finds them.

        In a JupyterHub notebook there is no password: the server's hub token
        (MLFLOW_TRACKING_TOKEN) is the password of the hub user (JUPYTERHUB_USER),
        which a hub-linked tracking server accepts.
        """
        username = (
            self._tracking_username
            or os.getenv("MLFLOW_TRACKING_USERNAME")
            or os.getenv("JUPYTERHUB_USER")
        )
        password = (
            self._tracking_password
            or os.getenv("MLFLOW_TRACKING_PASSWORD")
            or os.getenv("MLFLOW_TRACKING_TOKEN")
        )
        if username and password:
            return username, password
        return None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> httpx.Response:
        url = self.url + API_PREFIX + path
        try:
            response = self._http.request(
                method,
                url,
                json=json,
                params=params,
                headers=self._headers(credentials),
            )
        except httpx.HTTPError as exc:
            raise ServerError(
                f"cannot reach the platform at {self.url}: {type(exc).__name__}; "
                "is it running (`mlplatform status`)?"
            ) from None
        if response.status_code >= 400:
            raise error_for(response.status_code, _message(response))
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{method} {path}: the platform answered {response.status_code} "
                "without JSON; is MLPLATFORM_URL the platform's address?",
                response.status_code,
            ) from None


def _resource(experiment: str | None, registered_model: str | None) -> dict[str, str]:
    if (experiment is None) == (registered_model is None):
        raise ValidationError("name exactly one of experiment= or registered_model=")
    if experiment is not None:
        return {"resource_type": "experiment", "resource": experiment}
    return {"resource_type": "registered_model", "resource": str(registered_model)}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return str(body)[:500]
