"""The ``jupyterhub_config.py`` of one JupyterHub instance, built as text.

The file holds addresses, paths and scopes only. The two secrets the hub needs, the
admin's password and the ``mlflow`` service's API token, are read from the hub's
environment when JupyterHub executes the file (see ``ADMIN_PASSWORD_ENV`` and
``SERVICE_TOKEN_ENV``), so neither is ever written to disk.

Scopes, and why each is granted:

- ``access:services!service=mlflow`` to the ``user`` role and to every server token:
  JupyterHub gives no one access to a service by default, and the linked MLflow refuses
  a token that does not carry this scope.
- ``read:users:name!user`` to server tokens: their owner's name and admin flag. The hub
  grants it to any token on ``GET /hub/api/user`` alone; with it the token may also
  read its owner at ``/hub/api/users/<name>``.
- ``read:users`` and ``read:tokens`` to the ``mlflow`` service, so that the platform,
  holding the service's token, can read users, admin flags, groups and tokens. The
  per-request check of the linked MLflow does not need them (see ``hub_auth``).
- ``OAUTH_SCOPES`` to the tokens the hub issues to the linked MLflow when a browser
  logs in (OAuth): the service access scope, which the MLflow requires of every token,
  and the owner's name, admin flag and groups, which it reads on each fresh lookup.

With a linked MLflow the ``mlflow`` service is also an OAuth client of the hub: its
client id is ``OAUTH_CLIENT_ID``, its client secret is the service's API token (the
way JupyterHub registers every service client), and its one redirect URI is the
MLflow's ``/oauth_callback``. ``oauth_no_confirm`` skips the hub's "authorize this
application" page, as for JupyterHub's own single-user servers: the service is run
by the same admin as the hub.
"""

from dataclasses import dataclass, field
from pathlib import Path

SERVICE_NAME = "mlflow"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
ADMIN_PASSWORD_ENV = "MLPLATFORM_HUB_ADMIN_PASSWORD"
SERVICE_TOKEN_ENV = "MLPLATFORM_HUB_SERVICE_TOKEN"
AUTHENTICATOR = "mlplatform.jupyterhub.authenticator.PlatformAuthenticator"

# JupyterHub's default ``server`` role, plus what the linked MLflow needs.
SERVER_TOKEN_SCOPES = (
    "users:activity!user",
    "access:servers!server",
    ACCESS_SCOPE,
    "read:users:name!user",
)
USER_SCOPES = ("self", ACCESS_SCOPE)
OAUTH_CLIENT_ID = f"service-{SERVICE_NAME}"  # JupyterHub requires the prefix
OAUTH_CALLBACK_PATH = "/oauth_callback"
OAUTH_SCOPES = (ACCESS_SCOPE, "read:users:name!user", "read:users:groups!user")
SERVICE_SCOPES = ("read:users", "read:tokens")


@dataclass(frozen=True)
class HubConfig:
    """Everything that differs between two JupyterHub instances."""

    data_dir: Path
    port: int
    hub_port: int
    proxy_api_port: int
    proxy_command: Path
    admin_name: str
    base_url: str = "/"
    mlflow_url: str | None = None
    single_user_command: tuple[str, ...] = field(default_factory=tuple)
    # Jupyter Server refuses to run as root unless told; the spawner runs the users'
    # servers as the hub's own OS user, which is root in containers and CI.
    allow_root: bool = False

    @property
    def bind_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    @property
    def users_dir(self) -> Path:
        return self.data_dir / "users"


def render(config: HubConfig) -> str:
    """The text of ``jupyterhub_config.py`` for ``config``."""
    data = config.data_dir
    lines = [
        "# Written by mlplatform at each start; edits are lost.",
        "import os",
        "",
        "c = get_config()  # noqa: F821",
        "",
        f"c.JupyterHub.bind_url = {config.bind_url!r}",
        f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{config.hub_port}'",
        f"c.JupyterHub.db_url = {'sqlite:///' + str(data / 'jupyterhub.sqlite')!r}",
        f"c.JupyterHub.cookie_secret_file = {str(data / 'cookie_secret')!r}",
        f"c.JupyterHub.pid_file = {str(data / 'jupyterhub.pid')!r}",
        "",
        f"c.ConfigurableHTTPProxy.command = [{str(config.proxy_command)!r}]",
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{config.proxy_api_port}'",
        f"c.ConfigurableHTTPProxy.pid_file = {str(data / 'proxy.pid')!r}",
        "",
        f"c.JupyterHub.authenticator_class = {AUTHENTICATOR!r}",
        f"c.Authenticator.admin_users = {{{config.admin_name!r}}}",
        # NativeAuthenticator refuses unapproved users itself, in its authenticate().
        "c.Authenticator.allow_all = True",
        "c.NativeAuthenticator.open_signup = False",
        "",
        "c.JupyterHub.spawner_class = 'jupyterhub.spawner.SimpleLocalProcessSpawner'",
        "c.SimpleLocalProcessSpawner.home_dir_template = "
        f"{str(config.users_dir / '{username}')!r}",
        f"c.Spawner.cmd = {list(config.single_user_command)!r}",
        "c.Spawner.default_url = '/lab'",
        f"c.Spawner.args = {_single_user_args(config)!r}",
        f"c.Spawner.server_token_scopes = {list(SERVER_TOKEN_SCOPES)!r}",
        *_environment_lines(config.mlflow_url),
        "",
        "c.JupyterHub.services = [",
        f"    {{'name': {SERVICE_NAME!r}, "
        f"'api_token': os.environ.pop({SERVICE_TOKEN_ENV!r}),",
        *_oauth_client_lines(config.mlflow_url),
        "    },",
        "]",
        "c.JupyterHub.load_roles = [",
        f"    {{'name': 'user', 'scopes': {list(USER_SCOPES)!r}}},",
        f"    {{'name': 'mlflow-service', 'scopes': {list(SERVICE_SCOPES)!r}, "
        f"'services': [{SERVICE_NAME!r}]}},",
        "]",
    ]
    return "\n".join(lines) + "\n"


def _single_user_args(config: HubConfig) -> list[str]:
    return ["--ServerApp.allow_root=True"] if config.allow_root else []


def oauth_redirect_uri(mlflow_url: str) -> str:
    """Where the hub sends a browser back to the linked MLflow after its login."""
    return mlflow_url.rstrip("/") + OAUTH_CALLBACK_PATH


def _oauth_client_lines(mlflow_url: str | None) -> list[str]:
    if mlflow_url is None:
        return []
    return [
        f"     'oauth_client_id': {OAUTH_CLIENT_ID!r},",
        f"     'oauth_redirect_uri': {oauth_redirect_uri(mlflow_url)!r},",
        f"     'oauth_client_allowed_scopes': {list(OAUTH_SCOPES)!r},",
        "     'oauth_no_confirm': True,",
    ]


def _environment_lines(mlflow_url: str | None) -> list[str]:
    if mlflow_url is None:
        return []
    # The server's own API token is only minted at spawn time, so it is read from the
    # spawner there; it carries SERVER_TOKEN_SCOPES and dies with the server.
    return [
        "c.Spawner.environment = {",
        f"    'MLFLOW_TRACKING_URI': {mlflow_url!r},",
        "    'MLFLOW_TRACKING_TOKEN': lambda spawner: spawner.api_token,",
        "}",
    ]
