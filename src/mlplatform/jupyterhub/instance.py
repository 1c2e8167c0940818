"""One JupyterHub instance, run as a child process with its own proxy.

The hub runs real JupyterHub (``python -m jupyterhub -f <config>``) with:

- NativeAuthenticator: users sign up at ``<base_url>hub/signup`` and the admin approves
  them at ``<base_url>hub/authorize``; the admin is created at start, approved.
- configurable-http-proxy (CHP) as its proxy, from ``scripts/ensure-node-proxy.sh``.
  CHP is JupyterHub's default and simplest proxy; the platform's Traefik already sits
  in front of every instance, so the hub gains nothing from driving Traefik itself
  through jupyterhub-traefik-proxy, and it would share a route table with the
  platform's own routes.
- SimpleLocalProcessSpawner: each user's server is a local JupyterLab process with a
  home folder under ``<data_dir>/users/<name>``. It gives no isolation between users.
- A registered service ``mlflow`` whose token the linked MLflow server holds, and roles
  that let users and their servers' tokens reach it (see ``config``).

Everything lives in its data folder:

    <data_dir>/jupyterhub_config.py   written at each start, no secrets in it
    <data_dir>/jupyterhub.sqlite      hub state: users, tokens, NativeAuthenticator rows
    <data_dir>/cookie_secret          written by JupyterHub, owner-only
    <data_dir>/users/<name>/          each user's home folder

The admin password and the service token reach the hub only through its environment.
"""

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from mlplatform.children import free_port, log_tail, stop_group, wait_http_ok
from mlplatform.errors import StartupError
from mlplatform.jupyterhub import config as hub_config

logger = logging.getLogger(__name__)

PROXY_PATH_ENV = "MLPLATFORM_CHP_PATH"
_PROXY_BINARY = "configurable-http-proxy"
_LOG_TAIL_LINES = 40
_STOP_GRACE_SECONDS = 10.0


class JupyterHubInstance:
    """A JupyterHub reachable at ``http://127.0.0.1:<port><base_url>`` through its CHP.

    ``mlflow_url`` is the linked MLflow server as seen from the users' servers; when it
    is set, every server gets ``MLFLOW_TRACKING_URI`` and, in ``MLFLOW_TRACKING_TOKEN``,
    its own hub API token, which the linked MLflow accepts.

    ``mlflow_service_token`` is the API token of the hub's ``mlflow`` service; one is
    generated when none is given. The linked MLflow server gets it through
    ``service_token`` (as ``MLPLATFORM_HUB_SERVICE_TOKEN``); keep it to restart the hub
    with the same one.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        admin_name: str,
        admin_password: str,
        *,
        base_url: str = "/",
        mlflow_url: str | None = None,
        mlflow_service_token: str | None = None,
        proxy_command: Path | None = None,
    ) -> None:
        if not base_url.startswith("/") or not base_url.endswith("/"):
            raise ValueError("base_url must start and end with '/'")
        if not admin_password:
            raise ValueError("admin_password must not be empty")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.admin_name = admin_name
        self.base_url = base_url
        self.mlflow_url = mlflow_url
        self.proxy_command = proxy_command
        self._admin_password = admin_password
        self._service_token = mlflow_service_token or secrets.token_hex(32)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: Path | None = None

    def __repr__(self) -> str:
        return f"JupyterHubInstance(data_dir={self.data_dir!r}, port={self.port})"

    @property
    def url(self) -> str:
        """The hub's public root, ending in ``/`` (the proxy's address)."""
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def api_url(self) -> str:
        """The Hub REST API, as the linked MLflow's ``MLPLATFORM_HUB_API_URL``."""
        return f"{self.url}hub/api"

    @property
    def service_token(self) -> str:
        return self._service_token

    @property
    def config_path(self) -> Path:
        return self.data_dir / "jupyterhub_config.py"

    def write_config(self) -> Path:
        config = hub_config.HubConfig(
            data_dir=self.data_dir,
            port=self.port,
            hub_port=free_port(),
            proxy_api_port=free_port(),
            proxy_command=self.proxy_command or find_proxy_command(),
            admin_name=self.admin_name,
            base_url=self.base_url,
            mlflow_url=self.mlflow_url,
            single_user_command=(sys.executable, "-m", "jupyterhub.singleuser"),
            allow_root=os.geteuid() == 0,
        )
        self.config_path.write_text(hub_config.render(config))
        return self.config_path

    def command(self) -> list[str]:
        return [sys.executable, "-m", "jupyterhub", "-f", str(self.config_path)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[hub_config.ADMIN_PASSWORD_ENV] = self._admin_password
        env[hub_config.SERVICE_TOKEN_ENV] = self._service_token
        # The single-user servers find jupyterhub-singleuser's dependencies (and the
        # kernel's mlflow) in the same virtual environment as the hub.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self, log_file: Path) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "users").mkdir(exist_ok=True)
        self.write_config()
        cmd = self.command()
        logger.debug("starting JupyterHub: %s", " ".join(cmd))
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log_file = log_file
        logger.info("JupyterHub starting at %s (pid %s)", self.url, self.process.pid)
        return self.process

    def wait_healthy(self, timeout: float) -> float:
        """Block until ``GET <hub>/hub/api`` answers 200; return the seconds it took."""
        elapsed = wait_http_ok(
            self.api_url,
            timeout,
            what="JupyterHub",
            process=self.process,
            tail=self._log_tail,
        )
        logger.info("JupyterHub running at %s (%.1fs)", self.url, elapsed)
        return elapsed

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """Stop the hub, its proxy and the users' servers: terminate, then kill."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        # The spawner starts each user's server in a session of its own, out of reach
        # of the hub's process group; remember them while the hub is their parent.
        descendants = _descendants(proc.pid)
        stop_group(proc, "JupyterHub", grace)
        _terminate_then_kill(descendants, grace)
        logger.info("JupyterHub at %s stopped", self.url)

    def _log_tail(self) -> str:
        hidden = (self._admin_password, self._service_token)
        return log_tail(self.log_file, _LOG_TAIL_LINES, hidden)


def find_proxy_command() -> Path:
    """The configurable-http-proxy binary: env override, PATH, or the repo's ``.node``.

    Raises ``StartupError`` naming the install script when there is none.
    """
    configured = os.environ.get(PROXY_PATH_ENV)
    if configured:
        return Path(configured)
    on_path = shutil.which(_PROXY_BINARY)
    if on_path:
        return Path(on_path)
    # Where scripts/ensure-node-proxy.sh puts it in a source checkout.
    local = (
        Path(__file__).resolve().parents[3] / ".node/node_modules/.bin" / _PROXY_BINARY
    )
    if local.exists():
        return local
    raise StartupError(
        "configurable-http-proxy is not installed; run scripts/ensure-node-proxy.sh "
        f"or set {PROXY_PATH_ENV} to its path"
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return children


def _terminate_then_kill(processes: list[psutil.Process], grace: float) -> None:
    alive = [p for p in processes if p.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, still_alive = psutil.wait_procs(alive, timeout=grace)
    for process in still_alive:
        logger.warning("process %s outlived JupyterHub; killing it", process.pid)
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(still_alive, timeout=grace)
