"""Driving a real JupyterHub over HTTP the way a browser and a notebook user do."""

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import websocket

from mlplatform.jupyterhub import JupyterHubInstance
from mlplatform.tracking.server import TrackingServer

ADMIN = "hubadmin"
CACHE_TTL = 2.0

T = TypeVar("T")


@dataclass(frozen=True)
class Linked:
    hub: JupyterHubInstance
    mlflow: TrackingServer
    admin_password: str
    hub_startup: float


@dataclass(frozen=True)
class ClosedMlflow:
    """Another MLflow linked to the same hub; nobody reads what is not granted."""

    linked: Linked  # the shared hub, with this server as its MLflow
    admin_auth: str  # the Authorization header of the instance's own admin


def poll(
    probe: Callable[[], T | None], timeout: float, what: str, initial: float = 0.1
) -> T:
    """``probe()`` until it returns something; backoff up to 1 s between tries."""
    deadline = time.monotonic() + timeout
    delay = initial
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


class Browser:
    """A cookie jar on the hub's pages, sending the ``_xsrf`` form field on POST."""

    def __init__(self, hub: JupyterHubInstance) -> None:
        self.hub = hub
        self.http = httpx.Client(base_url=hub.url, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def post_form(self, path: str, data: dict[str, str]) -> httpx.Response:
        page = self.http.get(path)
        page.raise_for_status()
        xsrf = self.http.cookies.get("_xsrf")
        assert xsrf, f"no _xsrf cookie from {path}"
        return self.http.post(path, data={**data, "_xsrf": xsrf})

    def sign_up(self, name: str, password: str) -> None:
        response = self.post_form(
            "hub/signup",
            {
                "username": name,
                "signup_password": password,
                "signup_password_confirmation": password,
            },
        )
        assert response.status_code == 200, response.text
        assert "sent to the admin" in response.text

    def log_in(self, name: str, password: str) -> httpx.Response:
        return self.post_form("hub/login", {"username": name, "password": password})

    def approve(self, name: str) -> None:
        """As the admin: toggle ``name`` to authorized on NativeAuthenticator's page."""
        response = self.http.get(f"hub/authorize/{name}")
        assert response.status_code in (200, 302), response.status_code


def user_token(
    hub: JupyterHubInstance,
    name: str,
    password: str,
    scopes: list[str] | None = None,
) -> tuple[str, str]:
    """A new API token of ``name`` and its id, asked for with the user's password."""
    body: dict[str, Any] = {"auth": {"username": name, "password": password}}
    if scopes is not None:
        body["scopes"] = scopes
    response = httpx.post(f"{hub.api_url}/users/{name}/tokens", json=body)
    assert response.status_code == 201, response.text
    model = response.json()
    return model["token"], model["id"]


def hub_api(
    hub: JupyterHubInstance, token: str, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    return httpx.request(
        method,
        f"{hub.api_url}{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30.0,
        **kwargs,
    )


def start_server(hub: JupyterHubInstance, name: str, token: str) -> dict[str, Any]:
    """Spawn ``name``'s server and return its model once the hub says it is ready."""
    response = hub_api(hub, token, "POST", f"/users/{name}/server")
    assert response.status_code in (201, 202), response.text

    def ready() -> dict[str, Any] | None:
        model = hub_api(hub, token, "GET", f"/users/{name}").json()
        server: dict[str, Any] | None = model.get("servers", {}).get("")
        return server if server and server.get("ready") else None

    return poll(ready, timeout=120, what=f"the server of {name}")


def run_in_kernel(
    hub: JupyterHubInstance, name: str, token: str, code: str, timeout: float = 120
) -> str:
    """Run ``code`` in a new kernel of ``name``'s server; return its stdout."""
    base = f"{hub.url}user/{name}/api"
    headers = {"Authorization": f"token {token}"}
    response = httpx.post(f"{base}/kernels", headers=headers, json={}, timeout=60)
    assert response.status_code == 201, response.text
    kernel_id = response.json()["id"]
    ws_url = base.replace("http://", "ws://", 1) + f"/kernels/{kernel_id}/channels"
    conn = websocket.create_connection(
        ws_url, header=[f"Authorization: token {token}"], timeout=timeout
    )
    try:
        msg_id = _send_execute(conn, code)
        return _collect_output(conn, msg_id)
    finally:
        conn.close()
        httpx.delete(f"{base}/kernels/{kernel_id}", headers=headers, timeout=30)


def _send_execute(conn: websocket.WebSocket, code: str) -> str:
    msg_id = uuid.uuid4().hex
    conn.send(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "msg_type": "execute_request",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    return msg_id


def _collect_output(conn: websocket.WebSocket, msg_id: str) -> str:
    stdout: list[str] = []
    while True:
        message = json.loads(conn.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = message["msg_type"]
        content = message["content"]
        if kind == "stream" and content["name"] == "stdout":
            stdout.append(content["text"])
        elif kind == "error":
            raise AssertionError("kernel error:\n" + "\n".join(content["traceback"]))
        elif kind == "execute_reply":
            assert content["status"] == "ok", content
            return "".join(stdout)


def log_run_with_client(tracking_uri: str, token: str, experiment: str) -> str:
    """Log a run with MLflow's client in a fresh process, authenticated by ``token``."""
    code = (
        "import mlflow\n"
        f"mlflow.set_experiment({experiment!r})\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_param('source', 'client')\n"
        "print(run.info.run_id)\n"
    )
    env = {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_TOKEN": token,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]
