"""MLflow ``authorization_function`` for an MLflow server linked to a JupyterHub.

The linked server names ``authenticate`` in its ``basic_auth.ini``. A request is then
accepted with a JupyterHub API token sent as any of:

    Authorization: Bearer <token>              (MLFLOW_TRACKING_TOKEN)
    Authorization: token <token>               (JupyterHub's own scheme)
    Authorization: Basic <hub user>:<token>    (MLFLOW_TRACKING_USERNAME/PASSWORD)

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

Configuration, from the server's environment:

    MLPLATFORM_HUB_API_URL     the Hub API, e.g. http://127.0.0.1:8000/hub/api
    MLPLATFORM_HUB_CACHE_TTL   seconds a lookup is reused; 0 disables the cache
    MLPLATFORM_HUB_SERVICE     the hub service whose access scope is required
                               (default ``mlflow``)

``MLPLATFORM_HUB_SERVICE_TOKEN``, the service's own token, is not read here: no lookup
needs it (see above). It belongs to the browser login (OAuth), which is not built yet.
"""

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass

import httpx
from flask import g, make_response, request
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.server import auth as mlflow_auth
from werkzeug.datastructures import Authorization
from werkzeug.wrappers import Response

from mlplatform.tracking.server import HUB_API_URL_ENV, HUB_CACHE_TTL_ENV, HUB_HOOK

logger = logging.getLogger(__name__)

HOOK = HUB_HOOK
CACHE_TTL_ENV = HUB_CACHE_TTL_ENV
SERVICE_ENV = "MLPLATFORM_HUB_SERVICE"
DEFAULT_CACHE_TTL = 30.0
HUB_GROUPS = "mlplatform_hub_groups"

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


_client: HubClient | None = None
_client_lock = threading.Lock()


def authenticate() -> Authorization | Response:
    """Authenticate the current Flask request; a 401 or 503 response if it fails."""
    header = request.headers.get("Authorization", "")
    memo: tuple[str, Authorization | Response] | None = g.get(_MEMO)
    if memo is not None and memo[0] == header:
        return memo[1]
    result = _authenticate(request.authorization)
    setattr(g, _MEMO, (header, result))
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


def _authenticate(auth: Authorization | None) -> Authorization | Response:
    if auth is None:
        return _unauthenticated()
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
