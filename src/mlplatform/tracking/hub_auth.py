"""MLflow ``authorization_function`` for an MLflow server linked to a JupyterHub.

The linked server names ``authenticate`` in its ``basic_auth.ini``. A request is then
accepted with a JupyterHub API token sent as any of:

    Authorization: Bearer <token>              (MLFLOW_TRACKING_TOKEN)
    Authorization: token <token>               (JupyterHub's own scheme)
    Authorization: Basic <hub user>:<token>    (MLFLOW_TRACKING_USERNAME/PASSWORD)
    Cookie: mlplatform-hub-token=<token>       (the UI, after the login below)

The token is resolved with ``GET <hub api>/user``, sent with the token itself: since
JupyterHub 2 every token may identify its owner there, which is how JupyterHub's own
``HubAuth`` does it, so no lookup needs the ``mlflow`` service's credentials. The
answer lists the token's scopes; one without ``access:services!service=mlflow`` (or
the unfiltered ``access:services``) is refused, since JupyterHub grants access to a
service only through roles. A Basic password that is not a hub token falls through to
MLflow's own password check, so the instance's bootstrap admin from the ini still
works; the users created here get a random password nobody is told.

Lookups are cached per server process for ``MLPLATFORM_HUB_CACHE_TTL`` seconds
(default 30), the bad answers as well as the good ones. A token revoked or deleted in
the hub therefore still passes for at most that long after its last fresh lookup in
each process. Within one request MLflow asks several times; the first answer is kept
in ``flask.g``.

On each fresh lookup the hub user is created in MLflow's auth store if missing (both
the Flask routes and the FastAPI bridge read the user from it) and its ``is_admin`` is
set to the hub's admin flag; cached lookups change nothing in the store. The user's
hub groups are left in ``flask.g`` under ``HUB_GROUPS`` for permission checks.

Hub groups are also MLflow roles: on each fresh lookup the user is made a member of a
role ``hub:<group>`` for every hub group (the role is created on first need) and is
taken out of the ``hub:`` roles of groups they left; roles without that prefix are
never touched. An admin grants a group access by adding a permission to its role
(``/api/3.0/mlflow/roles/permissions/add``). The roles live in MLflow's default
workspace, the only one a server without workspaces has.

Configuration, from the server's environment:

    MLPLATFORM_HUB_API_URL     the Hub API, e.g. http://127.0.0.1:8000/hub/api
    MLPLATFORM_HUB_CACHE_TTL   seconds a lookup is reused; 0 disables the cache
    MLPLATFORM_HUB_SERVICE     the hub service whose access scope is required
                               (default ``mlflow``)

Browsers log in through the hub (OAuth 2, authorization code), when the server is
given the settings below. A GET without credentials that asks for HTML outside
``/api/`` and ``/ajax-api/`` is redirected to the hub's authorize URL with a random
``state``, kept in a short-lived cookie. The hub logs the user in if needed and sends
the browser back to ``<MLflow public URL>/oauth_callback``; there the state is checked,
the code is redeemed at the hub's token URL with the ``mlflow`` service's client
secret, and the access token is set in an HttpOnly, SameSite=Lax cookie scoped to the
server's path. From then on the cookie is one more way to send a hub token: it is
looked up like a Bearer token, on every path, since MLflow's UI calls ``/ajax-api/``
with the browser's cookies and nothing else. An Authorization header, when sent, wins
over the cookie.

MLflow has no route for ``/oauth_callback``. It needs none: MLflow's auth app calls
this function from Flask's ``before_request``, which runs before the URL is matched
(Flask raises the routing 404 later, in ``dispatch_request``), and returns the response
it gets. With uvicorn, unknown paths fall through the FastAPI app to the Flask one.

The login's configuration, from the server's environment; without it, no login:

    MLPLATFORM_HUB_OAUTH_AUTHORIZE_URL   the hub's /hub/api/oauth2/authorize (public)
    MLPLATFORM_HUB_OAUTH_TOKEN_URL       the hub's /hub/api/oauth2/token (loopback)
    MLPLATFORM_HUB_OAUTH_CLIENT_ID       e.g. service-mlflow
    MLPLATFORM_HUB_SERVICE_TOKEN         the client secret: the service's API token
    MLPLATFORM_MLFLOW_PUBLIC_URL         this server as browsers reach it, with prefix

Token lookups never need the service token (see above); only the code exchange does.
"""

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx
from flask import g, make_response, redirect, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.server import auth as mlflow_auth
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME
from werkzeug.datastructures import Authorization
from werkzeug.wrappers import Response

from mlplatform.jupyterhub.config import OAUTH_CALLBACK_PATH
from mlplatform.tracking.server import (
    HUB_API_URL_ENV,
    HUB_CACHE_TTL_ENV,
    HUB_HOOK,
    HUB_OAUTH_AUTHORIZE_URL_ENV,
    HUB_OAUTH_CLIENT_ID_ENV,
    HUB_OAUTH_CLIENT_SECRET_ENV,
    HUB_OAUTH_TOKEN_URL_ENV,
    MLFLOW_PUBLIC_URL_ENV,
)

logger = logging.getLogger(__name__)

HOOK = HUB_HOOK
CACHE_TTL_ENV = HUB_CACHE_TTL_ENV
SERVICE_ENV = "MLPLATFORM_HUB_SERVICE"
DEFAULT_CACHE_TTL = 30.0
HUB_GROUPS = "mlplatform_hub_groups"
TOKEN_COOKIE = "mlplatform-hub-token"
STATE_COOKIE = "mlplatform-oauth-state"
STATE_MAX_AGE = 600
GROUP_ROLE_PREFIX = "hub:"

_MEMO = "_mlplatform_hub_authorization"
_TOKEN_SCHEMES = ("bearer", "token")
_MAX_CACHE_ENTRIES = 10_000
_LOOKUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class HubUser:
    """The owner of a token, as the hub described it."""

    name: str
    admin: bool
    groups: tuple[str, ...]
    scopes: frozenset[str]

    def may_access(self, service: str) -> bool:
        return bool(
            {"access:services", f"access:services!service={service}"} & self.scopes
        )


class HubUnavailable(Exception):
    """The hub did not give a yes or no about a token."""


class TokenCache:
    """Lookups by token for ``ttl`` seconds; keys are keyed hashes, never tokens."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, HubUser | None]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> tuple[bool, HubUser | None]:
        """``(True, answer)`` if an answer younger than the TTL is kept, else a miss."""
        key = self._hash(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= time.monotonic():
                self._entries.pop(key, None)
                return False, None
            return True, entry[1]

    def put(self, token: str, user: HubUser | None) -> None:
        if self.ttl <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._entries) >= _MAX_CACHE_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= _MAX_CACHE_ENTRIES:
                self._entries.clear()
            self._entries[self._hash(token)] = (now + self.ttl, user)

    def _hash(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()


class HubClient:
    """Resolves tokens against one hub's REST API."""

    def __init__(
        self, api_url: str, cache: TokenCache, http: httpx.Client | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.cache = cache
        self._http = http or httpx.Client(timeout=_LOOKUP_TIMEOUT)

    def lookup(self, token: str) -> tuple[HubUser | None, bool]:
        """The token's owner (None if the hub refuses it) and whether it was fresh.

        Raises ``HubUnavailable`` when the hub does not answer yes or no.
        """
        cached, user = self.cache.get(token)
        if cached:
            return user, False
        user = self._fetch(token)
        self.cache.put(token, user)
        return user, True

    def _fetch(self, token: str) -> HubUser | None:
        try:
            response = self._http.get(
                f"{self.api_url}/user", headers={"Authorization": f"token {token}"}
            )
        except httpx.HTTPError as exc:
            raise HubUnavailable(type(exc).__name__) from None
        # JupyterHub answers 403, not 401, for a token it does not know.
        if response.status_code in (401, 403):
            return None
        if response.status_code != 200:
            raise HubUnavailable(f"HTTP {response.status_code}")
        model = response.json()
        if model.get("kind", "user") != "user":
            # A service's own token identifies a service, which is no MLflow user.
            return None
        return HubUser(
            name=str(model["name"]),
            admin=bool(model.get("admin", False)),
            groups=tuple(model.get("groups") or ()),
            scopes=frozenset(model.get("scopes") or ()),
        )


class LoginRefused(Exception):
    """The hub would not exchange an authorization code for a token."""


@dataclass(frozen=True)
class HubLogin:
    """The browser login of one linked server, with its hub as OAuth provider."""

    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    public_url: str
    http: httpx.Client = field(repr=False, compare=False)

    @property
    def prefix(self) -> str:
        """The server's path prefix ("" at the root); the token cookie's scope."""
        return urlsplit(self.public_url).path.rstrip("/")

    @property
    def callback_path(self) -> str:
        return self.prefix + OAUTH_CALLBACK_PATH

    @property
    def redirect_uri(self) -> str:
        return self.public_url.rstrip("/") + OAUTH_CALLBACK_PATH

    @property
    def secure(self) -> bool:
        return self.public_url.startswith("https:")

    def authorize_redirect(self, state: str) -> str:
        # No scope asked for: the hub then grants the client's allowed scopes, which
        # the hub config sets to what this module checks (see jupyterhub.config).
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "response_type": "code",
                "state": state,
            }
        )
        return f"{self.authorize_url}?{query}"

    def redeem(self, code: str) -> tuple[str, int | None]:
        """The access token for ``code`` and its lifetime in seconds, if the hub says.

        Raises ``LoginRefused`` if the hub refuses the code, ``HubUnavailable`` if it
        does not answer.
        """
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        try:
            response = self.http.post(self.token_url, data=form)
        except httpx.HTTPError as exc:
            raise HubUnavailable(type(exc).__name__) from None
        if 400 <= response.status_code < 500:
            raise LoginRefused(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise HubUnavailable(f"HTTP {response.status_code}")
        reply = response.json()
        expires_in = reply.get("expires_in")
        return str(reply["access_token"]), (
            int(expires_in) if isinstance(expires_in, int | float) else None
        )


_client: HubClient | None = None
_client_lock = threading.Lock()
_login: HubLogin | None = None
_login_loaded = False


def authenticate() -> Authorization | Response:
    """Authenticate the current Flask request.

    A redirect to the hub's login for a browser's page load, the end of that login at
    ``/oauth_callback``, else a 401 or 503 response if the request is not let in.
    """
    key = (request.headers.get("Authorization", ""), request.cookies.get(TOKEN_COOKIE))
    memo: tuple[object, Authorization | Response] | None = g.get(_MEMO)
    if memo is not None and memo[0] == key:
        return memo[1]
    result = _authenticate(request.authorization, hub_login())
    setattr(g, _MEMO, (key, result))
    return result


def hub_client() -> HubClient:
    """The process's client, configured from the environment on first use."""
    global _client
    with _client_lock:
        if _client is None:
            api_url = os.environ.get(HUB_API_URL_ENV)
            if not api_url:
                raise RuntimeError(
                    f"{HUB_API_URL_ENV} is not set; a linked MLflow server needs the "
                    "Hub API URL of its JupyterHub in its environment"
                )
            ttl = float(os.environ.get(CACHE_TTL_ENV) or DEFAULT_CACHE_TTL)
            _client = HubClient(api_url, TokenCache(ttl))
            logger.info(
                "MLflow users come from the JupyterHub at %s (lookups cached %ss)",
                api_url,
                ttl,
            )
        return _client


def hub_login() -> HubLogin | None:
    """The process's browser login, from the environment; None if not configured."""
    global _login, _login_loaded
    with _client_lock:
        if not _login_loaded:
            _login = _login_from_env()
            _login_loaded = True
        return _login


def _login_from_env() -> HubLogin | None:
    names = (
        HUB_OAUTH_AUTHORIZE_URL_ENV,
        HUB_OAUTH_TOKEN_URL_ENV,
        HUB_OAUTH_CLIENT_ID_ENV,
        HUB_OAUTH_CLIENT_SECRET_ENV,
        MLFLOW_PUBLIC_URL_ENV,
    )
    values = [os.environ.get(name, "") for name in names]
    if not all(values):
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        logger.info("no browser login through the hub: %s not set", ", ".join(missing))
        return None
    authorize_url, token_url, client_id, client_secret, public_url = values
    logger.info(
        "browsers log in through the hub at %s (client %s, callback %s%s)",
        authorize_url,
        client_id,
        public_url.rstrip("/"),
        OAUTH_CALLBACK_PATH,
    )
    return HubLogin(
        authorize_url,
        token_url,
        client_id,
        client_secret,
        public_url,
        httpx.Client(timeout=_LOOKUP_TIMEOUT),
    )


def _authenticate(
    auth: Authorization | None, login: HubLogin | None
) -> Authorization | Response:
    if login is not None and request.path == login.callback_path:
        return _finish_login(login)
    if auth is None:
        return _authenticate_browser(login)
    if auth.type in _TOKEN_SCHEMES:
        return _check_token(auth.token or "", claimed_name=None) or _unauthenticated()
    if auth.type == "basic" and auth.password:
        verified = _check_token(auth.password, claimed_name=auth.username)
        if verified is not None:
            return verified
        # Not a hub token of this user: it may be the password of a user MLflow
        # knows by itself, the instance's bootstrap admin.
        return mlflow_auth.authenticate_request_basic_auth()
    return _unauthenticated()


def _check_token(
    token: str, claimed_name: str | None
) -> Authorization | Response | None:
    """The owner's authorization, a 503 response, or None when the token is no good."""
    if not token:
        return None
    client = hub_client()
    try:
        user, fresh = client.lookup(token)
    except HubUnavailable as exc:
        return _hub_unavailable(client.api_url, str(exc))
    service = os.environ.get(SERVICE_ENV) or "mlflow"
    if user is None:
        logger.debug("hub token refused by the hub")
        return None
    if not user.may_access(service):
        logger.debug("hub token of %s lacks access to service %s", user.name, service)
        return None
    if claimed_name is not None and claimed_name != user.name:
        logger.debug("hub token of %s sent with another user name", user.name)
        return None
    if fresh:
        _sync_user(user)
        _sync_group_roles(user)
    setattr(g, HUB_GROUPS, user.groups)
    return Authorization("basic", {"username": user.name})


def _sync_user(user: HubUser) -> None:
    store = mlflow_auth.store
    if not store.has_user(user.name):
        try:
            # Nobody is ever told this password: hub users come in with tokens only.
            store.create_user(user.name, secrets.token_urlsafe(32), is_admin=user.admin)
            logger.info("created MLflow user %s (admin: %s)", user.name, user.admin)
            return
        except MlflowException as exc:
            # Another worker or thread created it between the check and the insert.
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
    if store.get_user(user.name).is_admin != user.admin:
        store.update_user(user.name, is_admin=user.admin)
        logger.warning(
            "MLflow user %s: is_admin %s -> %s (from the hub)",
            user.name,
            not user.admin,
            user.admin,
        )


def _sync_group_roles(user: HubUser) -> None:
    """Give the user the ``hub:`` role of each of their hub groups, and no other."""
    store = mlflow_auth.store
    user_id: int = store.get_user(user.name).id
    held = {
        role.name: role.id
        for role in store.list_user_roles_for_workspace(user_id, DEFAULT_WORKSPACE_NAME)
        if role.name.startswith(GROUP_ROLE_PREFIX)
    }
    wanted = {GROUP_ROLE_PREFIX + group for group in user.groups}
    if wanted == held.keys():
        return
    for name in wanted - held.keys():
        with _done_elsewhere(RESOURCE_ALREADY_EXISTS):
            store.assign_role_to_user(user_id, _group_role_id(name))
    for name in held.keys() - wanted:
        with _done_elsewhere(RESOURCE_DOES_NOT_EXIST):
            store.unassign_role_from_user(user_id, held[name])
    logger.warning(
        "MLflow user %s: hub group roles %s -> %s (from the hub)",
        user.name,
        sorted(held) or "none",
        sorted(wanted) or "none",
    )


def _group_role_id(name: str) -> int:
    store = mlflow_auth.store
    with _done_elsewhere(RESOURCE_ALREADY_EXISTS):
        role = store.create_role(
            name, DEFAULT_WORKSPACE_NAME, "Members of the JupyterHub group"
        )
        logger.info("created MLflow role %s for a hub group", name)
        return int(role.id)
    return int(store.get_role_by_name(DEFAULT_WORKSPACE_NAME, name).id)


@contextmanager
def _done_elsewhere(code: int) -> Iterator[None]:
    """Ignore the store's ``code`` error: another worker or thread made the change."""
    try:
        yield
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(code):
            raise


def _authenticate_browser(login: HubLogin | None) -> Authorization | Response:
    cookie = request.cookies.get(TOKEN_COOKIE)
    if cookie:
        checked = _check_token(cookie, claimed_name=None)
        if checked is not None:
            return checked
    if login is not None and _is_page_load(login.prefix):
        return _start_login(login)
    return _unauthenticated()


def _is_page_load(prefix: str) -> bool:
    """Whether the request is a browser opening a page (not a script calling an API).

    The Accept header is read as text: ``*/*``, what API clients send, would match
    text/html in Werkzeug's parsed form.
    """
    if request.method != "GET" or "text/html" not in request.headers.get("Accept", ""):
        return False
    path = request.path.removeprefix(prefix)
    return not path.startswith(("/api/", "/ajax-api/"))


def _start_login(login: HubLogin) -> Response:
    state = secrets.token_urlsafe(32)
    response = redirect(login.authorize_redirect(state), 302)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=STATE_MAX_AGE,
        path=login.callback_path,
        secure=login.secure,
        httponly=True,
        samesite="Lax",
    )
    return response


def _finish_login(login: HubLogin) -> Authorization | Response:
    if not _state_matches():
        logger.warning("OAuth callback refused: its state is not this browser's")
        return _login_failed(
            400,
            "This login link is not the one this browser started; open the page again.",
        )
    if not request.args.get("code"):
        # OAuth 2 sends ?error=... instead of a code when the login was refused.
        logger.warning(
            "OAuth callback without a code (error: %r)", request.args.get("error")
        )
        return _login_failed(403, "The JupyterHub did not let you into this MLflow.")
    try:
        token, max_age = login.redeem(request.args["code"])
    except LoginRefused as exc:
        logger.warning("the hub refused an OAuth code (%s)", exc)
        return _login_failed(
            400, "The login expired or was already used; open the page again."
        )
    except HubUnavailable as exc:
        return _hub_unavailable(login.token_url, str(exc))
    checked = _check_token(token, claimed_name=None)
    if isinstance(checked, Response):
        return checked
    if checked is None:
        return _login_failed(
            403, "Your JupyterHub account has no access to this MLflow."
        )
    logger.info("%s logged in to the UI through the hub", checked.username)
    return _logged_in(login, token, max_age)


def _state_matches() -> bool:
    # The state ties the callback to a login this browser started (RFC 6749 10.12):
    # without it, a page elsewhere could log the browser in as another hub user.
    expected = request.cookies.get(STATE_COOKIE, "")
    state = request.args.get("state", "")
    return bool(expected) and hmac.compare_digest(state.encode(), expected.encode())


def _logged_in(login: HubLogin, token: str, max_age: int | None) -> Response:
    response = redirect(login.prefix + "/", 302)
    # Lax, not Strict: when the hub is on another site, the login ends in a redirect
    # chain that started there, and browsers send Strict cookies on none of it.
    response.set_cookie(
        TOKEN_COOKIE,
        token,
        max_age=max_age,
        path=login.prefix or "/",
        secure=login.secure,
        httponly=True,
        samesite="Lax",
    )
    # The used state cookie is left to expire: MLflow's SecurityHeadersMiddleware
    # rebuilds the headers as a dict, so of two Set-Cookie headers only the last one
    # reaches the browser. A state without its one-use code is worth nothing.
    return response


def _login_failed(status: int, message: str) -> Response:
    # No WWW-Authenticate: a browser would show its password prompt for Basic, and no
    # scheme fits a page that only says to start over.
    return make_response(message, status)


def _unauthenticated() -> Response:
    # Bearer rather than Basic: browsers show no password prompt for it, and hub users
    # have no password MLflow could check.
    response = make_response(
        "You are not authenticated. Send a JupyterHub API token with access to this "
        "MLflow service: MLFLOW_TRACKING_TOKEN=<token>.",
        401,
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="mlflow"'
    return response


def _hub_unavailable(api_url: str, cause: str) -> Response:
    logger.error(
        "cannot check a hub token: the JupyterHub API at %s failed (%s); check that "
        "the hub runs and %s",
        api_url,
        cause,
        HUB_API_URL_ENV,
    )
    response = make_response(
        "The JupyterHub that signs users in is unavailable, so tokens cannot be "
        "checked right now. Try again shortly, or ask the platform admin.",
        503,
    )
    response.headers["Retry-After"] = "5"
    return response
