"""One MLflow tracking server, run as a child process with MLflow's basic-auth app.

Everything the server keeps lives in its data folder:

    <data_dir>/mlflow.db        backend and registry store (SQLite)
    <data_dir>/auth.db          users and permissions of the basic-auth app
    <data_dir>/artifacts/       artifacts, served by the tracking server itself
    <data_dir>/basic_auth.ini   auth config (no secrets in it)
    <data_dir>/secret_key       Flask secret for CSRF, stable across restarts

The admin password reaches the child only through ``MLFLOW_AUTH_ADMIN_PASSWORD`` in
its environment: never argv (visible in ``ps``), never the ini file, never a log line.

A server linked to a JupyterHub (``hub_api_url``) may also sign browsers in through
the hub (``hub_oauth``); the OAuth client secret reaches the child the same way as the
admin password, through its environment only.

Given the platform database, the server also accepts platform tokens: the ini names
``mlplatform.tracking.auth_hook:authenticate`` as MLflow's ``authorization_function``
and the child finds the database in ``MLPLATFORM_DATABASE_URL``.
"""

import configparser
import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from mlplatform.children import log_tail, stop_group, wait_http_ok
from mlplatform.errors import Unauthenticated, Unavailable
from mlplatform.tracking.auth_hook import DATABASE_URL_ENV, HOOK

logger = logging.getLogger(__name__)

# The linked-mode hook (tracking/hub_auth.py) reads these; named here so that starting
# a server does not import MLflow's server code into the platform's processes.
HUB_HOOK = "mlplatform.tracking.hub_auth:authenticate"
HUB_API_URL_ENV = "MLPLATFORM_HUB_API_URL"
HUB_CACHE_TTL_ENV = "MLPLATFORM_HUB_CACHE_TTL"
HUB_OAUTH_AUTHORIZE_URL_ENV = "MLPLATFORM_HUB_OAUTH_AUTHORIZE_URL"
HUB_OAUTH_TOKEN_URL_ENV = "MLPLATFORM_HUB_OAUTH_TOKEN_URL"
HUB_OAUTH_CLIENT_ID_ENV = "MLPLATFORM_HUB_OAUTH_CLIENT_ID"
# The hub's name for the same secret: the service's API token is its client secret.
HUB_OAUTH_CLIENT_SECRET_ENV = "MLPLATFORM_HUB_SERVICE_TOKEN"
MLFLOW_PUBLIC_URL_ENV = "MLPLATFORM_MLFLOW_PUBLIC_URL"

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
_LOG_TAIL_LINES = 40
_STOP_GRACE_SECONDS = 10.0
_MLFLOW_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"

# Settings inherited from the parent that would silently change what the child does:
# the ADMIN_* pair overrides the ini, the TRACKING_* ones belong to clients.
_SCRUBBED_ENV = (
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
    "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE",
    # The child never needs the platform admin's password; it has its own.
    "MLPLATFORM_ADMIN_PASSWORD",
    # Only a server given ``hub_oauth`` signs browsers in, with its own hub's secret.
    HUB_OAUTH_CLIENT_SECRET_ENV,
)


@dataclass(frozen=True)
class HubOAuth:
    """How a linked server sends browsers through its JupyterHub's login (OAuth).

    ``authorize_url`` is the hub's ``/hub/api/oauth2/authorize`` as browsers reach it;
    ``token_url`` is its ``/hub/api/oauth2/token`` as the server reaches it (loopback).
    """

    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)


class TrackingServer:
    """A Standalone MLflow tracking server listening on ``127.0.0.1:<port>``.

    ``public_url`` is where users reach it through Traefik (root path, no prefix); its
    host is added to the Host headers and CORS origins MLflow accepts.

    ``platform_database_url`` turns on platform tokens (see ``auth_hook``); without it
    only MLflow passwords are accepted.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        admin_password: str,
        *,
        admin_username: str = "admin",
        default_permission: str = "READ",
        workers: int = 1,
        public_url: str | None = None,
        platform_database_url: str | None = None,
        hub_api_url: str | None = None,
        hub_cache_ttl: float | None = None,
        static_prefix: str | None = None,
        hub_oauth: HubOAuth | None = None,
    ) -> None:
        """``hub_api_url`` links the server to a JupyterHub: its users and tokens are
        the hub's; with ``hub_oauth`` browsers log in through the hub too.
        ``static_prefix`` serves everything under a path (``/x``)."""
        if default_permission not in PERMISSIONS:
            raise ValueError(f"default_permission must be one of {PERMISSIONS}")
        if workers not in (1, 2):
            raise ValueError("workers must be 1 or 2")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.admin_username = admin_username
        self.default_permission = default_permission
        self.workers = workers
        self.public_url = public_url
        self.platform_database_url = platform_database_url
        self.hub_api_url = hub_api_url
        self.hub_cache_ttl = hub_cache_ttl
        self.static_prefix = static_prefix
        self.hub_oauth = hub_oauth
        self._admin_password = admin_password
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: Path | None = None

    def __repr__(self) -> str:
        return f"TrackingServer(data_dir={self.data_dir!r}, port={self.port})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_config_path(self) -> Path:
        return self.data_dir / "basic_auth.ini"

    def allowed_hosts(self) -> list[str]:
        hosts = ["127.0.0.1", f"127.0.0.1:{self.port}", "localhost", "localhost:*"]
        if self.public_url:
            netloc = urlsplit(self.public_url).netloc
            hosts += [h for h in (netloc, netloc.split(":")[0]) if h not in hosts]
        return hosts

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{self.data_dir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination", str(self.data_dir / "artifacts"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--allowed-hosts", ",".join(self.allowed_hosts()),
        ]  # fmt: skip
        if self.public_url:
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.public_url))
            cmd += ["--cors-allowed-origins", origin]
        if self.static_prefix:
            cmd += ["--static-prefix", self.static_prefix]
        return cmd

    @property
    def public_base_url(self) -> str:
        """Where browsers reach this server's UI: public URL (or loopback) + prefix."""
        root = (self.public_url or self.url).rstrip("/")
        return root + (self.static_prefix or "")

    @property
    def health_url(self) -> str:
        return f"{self.url}{self.static_prefix or ''}/health"

    def _authorization_function(self) -> str:
        if self.hub_api_url:
            return HUB_HOOK
        return HOOK if self.platform_database_url else _MLFLOW_AUTH_FUNCTION

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(self.auth_config_path),
            MLFLOW_AUTH_ADMIN_PASSWORD=self._admin_password,
            MLFLOW_FLASK_SERVER_SECRET_KEY=self._secret_key(),
            # The job runner (huey consumer) serves GenAI scorers the platform does not
            # use; skipping it saves a process and ~150 MB.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            MLFLOW_DISABLE_TELEMETRY="true",
            # Routes MLflow has no permission check for answer 403 to non-admins, the
            # sign-up form's POST among them. It is MLflow's default; a parent that
            # turned it off must not turn it off here.
            MLFLOW_BASIC_AUTH_FAIL_CLOSED="true",
        )
        if self.platform_database_url:
            env[DATABASE_URL_ENV] = self.platform_database_url
        if self.hub_api_url:
            env[HUB_API_URL_ENV] = self.hub_api_url
            if self.hub_cache_ttl is not None:
                env[HUB_CACHE_TTL_ENV] = str(self.hub_cache_ttl)
        if self.hub_api_url and self.hub_oauth:
            env.update(
                {
                    HUB_OAUTH_AUTHORIZE_URL_ENV: self.hub_oauth.authorize_url,
                    HUB_OAUTH_TOKEN_URL_ENV: self.hub_oauth.token_url,
                    HUB_OAUTH_CLIENT_ID_ENV: self.hub_oauth.client_id,
                    HUB_OAUTH_CLIENT_SECRET_ENV: self.hub_oauth.client_secret,
                    MLFLOW_PUBLIC_URL_ENV: self.public_base_url,
                }
            )
        return env

    def write_auth_config(self) -> Path:
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": self.default_permission,
            "database_uri": f"sqlite:///{self.data_dir / 'auth.db'}",
            "admin_username": self.admin_username,
            "authorization_function": self._authorization_function(),
        }
        with self.auth_config_path.open("w") as fh:
            config.write(fh)
        return self.auth_config_path

    def start(self, log_file: Path) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "artifacts").mkdir(exist_ok=True)
        self.write_auth_config()
        cmd = self.command()
        logger.debug("starting tracking server: %s", " ".join(cmd))
        with log_file.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.log_file = log_file
        logger.info(
            "tracking server starting at %s (pid %s)", self.url, self.process.pid
        )
        return self.process

    def wait_healthy(self, timeout: float) -> float:
        """Block until ``/health`` answers 200; return the seconds it took."""
        elapsed = wait_http_ok(
            self.health_url,
            timeout,
            what="the tracking server",
            process=self.process,
            tail=self._log_tail,
        )
        logger.info("tracking server running at %s (%.1fs)", self.url, elapsed)
        return elapsed

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """Terminate the process group (mlflow CLI + uvicorn workers), then kill it."""
        if stop_group(self.process, "the tracking server", grace):
            logger.info("tracking server at %s stopped", self.url)

    def _log_tail(self) -> str:
        hidden = [self._admin_password]
        if self.hub_oauth:
            hidden.append(self.hub_oauth.client_secret)
        return log_tail(self.log_file, _LOG_TAIL_LINES, hidden)

    def _secret_key(self) -> str:
        # CSRF tokens of logged-in browser sessions must survive a restart, so the key
        # is generated once and kept, readable by the owner only.
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def verify_credentials(base_url: str, username: str, password: str) -> None:
    """Check ``username``/``password`` against the tracking server at ``base_url``.

    Raises ``Unauthenticated`` if MLflow rejects them, ``Unavailable`` if the server
    does not answer as expected.
    """
    url = f"{base_url.rstrip('/')}/api/2.0/mlflow/users/current"
    try:
        response = httpx.get(url, auth=(username, password), timeout=10.0)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"the tracking server at {base_url} does not answer ({type(exc).__name__})"
        ) from None
    if response.status_code == 401:
        raise Unauthenticated(f"MLflow rejected the credentials of user '{username}'")
    if response.status_code != 200:
        raise Unavailable(
            f"the tracking server at {base_url} answered {response.status_code} "
            "to a credential check"
        )
