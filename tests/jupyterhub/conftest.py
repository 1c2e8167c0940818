"""A real JupyterHub and a real MLflow server linked to it, on free ports.

The hub runs with its configurable-http-proxy from ``scripts/ensure-node-proxy.sh``;
the tests that need it are skipped, saying why, when node or npm cannot install it.
The MLflow server is the platform's TrackingServer with the hub hook in its ini, the
way a linked instance runs it.
"""

import base64
import configparser
import dataclasses
import logging
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_support import ADMIN, CACHE_TTL, ClosedMlflow, Linked
from mlplatform.children import free_port
from mlplatform.jupyterhub import JupyterHubInstance
from mlplatform.tracking import hub_auth
from mlplatform.tracking.server import TrackingServer

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


class LinkedTrackingServer(TrackingServer):
    """A TrackingServer whose users are the hub's (what the instance API will run)."""

    def __init__(self, *args: object, hub_api_url: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hub_api_url = hub_api_url

    def env(self) -> dict[str, str]:
        env = super().env()
        env[hub_auth.HUB_API_URL_ENV] = self.hub_api_url
        env[hub_auth.CACHE_TTL_ENV] = str(CACHE_TTL)
        return env

    def write_auth_config(self) -> Path:
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": self.default_permission,
            "database_uri": f"sqlite:///{self.data_dir / 'auth.db'}",
            "admin_username": self.admin_username,
            "authorization_function": hub_auth.HOOK,
        }
        with self.auth_config_path.open("w") as fh:
            config.write(fh)
        return self.auth_config_path


@pytest.fixture(scope="session")
def proxy_command() -> Path:
    script = REPO / "scripts" / "ensure-node-proxy.sh"
    try:
        result = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run {script.name}: {exc}")
    if result.returncode != 0:
        pytest.skip(
            "configurable-http-proxy could not be installed with npm "
            f"({script.name} exited {result.returncode}): {result.stderr.strip()}"
        )
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def linked(
    tmp_path_factory: pytest.TempPathFactory, proxy_command: Path
) -> Iterator[Linked]:
    root = tmp_path_factory.mktemp("linked")
    hub_port, mlflow_port = free_port(), free_port()
    admin_password = "Hub-adm1n-" + secrets.token_urlsafe(12)
    hub = JupyterHubInstance(
        root / "hub",
        hub_port,
        ADMIN,
        admin_password,
        base_url="/jupyter/",
        mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        proxy_command=proxy_command,
    )
    mlflow = LinkedTrackingServer(
        root / "mlflow",
        mlflow_port,
        "Mlf-adm1n-" + secrets.token_urlsafe(12),
        default_permission="READ",
        hub_api_url=hub.api_url,
    )
    (root / "hub").mkdir()
    mlflow.data_dir.mkdir()
    try:
        mlflow.start(root / "mlflow.log")
        hub.start(root / "hub.log")
        hub_startup = hub.wait_healthy(timeout=120)
        logger.info("JupyterHub answered after %.1fs", hub_startup)
        mlflow.wait_healthy(timeout=120)
        yield Linked(hub, mlflow, admin_password, hub_startup)
    finally:
        hub.stop()
        mlflow.stop()


@pytest.fixture(scope="session")
def closed_mlflow(
    tmp_path_factory: pytest.TempPathFactory, linked: Linked
) -> Iterator[ClosedMlflow]:
    """A linked MLflow where users read only what they are granted.

    On ``linked`` everyone may read (default_permission READ), so a READ grant given
    there would show nothing.
    """
    root = tmp_path_factory.mktemp("closed")
    password = "Mlf-adm1n-" + secrets.token_urlsafe(12)
    mlflow = LinkedTrackingServer(
        root / "mlflow",
        free_port(),
        password,
        default_permission="NO_PERMISSIONS",
        hub_api_url=linked.hub.api_url,
    )
    mlflow.data_dir.mkdir()
    credentials = f"{mlflow.admin_username}:{password}".encode()
    try:
        mlflow.start(root / "mlflow.log")
        mlflow.wait_healthy(timeout=120)
        yield ClosedMlflow(
            dataclasses.replace(linked, mlflow=mlflow),
            "Basic " + base64.b64encode(credentials).decode(),
        )
    finally:
        mlflow.stop()
