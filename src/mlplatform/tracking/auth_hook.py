"""MLflow ``authorization_function`` that accepts platform tokens as well as passwords.

The tracking server names ``authenticate`` in its ``basic_auth.ini`` when it is given
the platform database (``MLPLATFORM_DATABASE_URL`` in its environment). A request is
then accepted with any of:

    Authorization: Bearer mlp_...           (MLFLOW_TRACKING_TOKEN) -> the token's owner
    Authorization: Basic <owner>:mlp_...    (MLFLOW_TRACKING_PASSWORD) -> the owner
    Authorization: Basic <user>:<password>  MLflow's own check, unchanged

MLflow calls the function from two places, and both run it inside a Flask request
context: ``_before_request`` for the Flask routes (the REST and ajax APIs, the UI), and
the FastAPI permission middleware for the native FastAPI routes (artifact download and
upload, OTLP traces, jobs, gateway, assistant, MCP registry), which builds a synthetic
Flask request from the ASGI one. So ``flask.request`` and ``flask.g`` always belong to
the one HTTP request being checked.

Every request reads the token row again, so revocation, expiry and the deletion of the
owner from MLflow take effect on the next request. Within one request MLflow asks
several times (validators, after-request filters); the first answer is kept in ``g``.
"""

import logging
import os
import threading

from flask import Response, g, make_response, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import Authorization

from mlplatform.domain.tokens import TOKEN_PREFIX, TokenService
from mlplatform.errors import Unauthenticated
from mlplatform.settings import Settings
from mlplatform.store import Database

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "MLPLATFORM_DATABASE_URL"
HOOK = "mlplatform.tracking.auth_hook:authenticate"

_MEMO = "_mlplatform_authorization"
_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def authenticate() -> Authorization | Response:
    """Authenticate the current Flask request; a 401 or 503 response if it fails."""
    header = request.headers.get("Authorization", "")
    memo: tuple[str, Authorization | Response] | None = g.get(_MEMO)
    if memo is not None and memo[0] == header:
        return memo[1]
    result = _authenticate(request.authorization)
    setattr(g, _MEMO, (header, result))
    return result


def _authenticate(auth: Authorization | None) -> Authorization | Response:
    if auth is not None and auth.type == "bearer":
        verified = _verify_token(auth.token or "", claimed_owner=None)
        return verified if verified is not None else _unauthenticated()
    if auth is not None and auth.type == "basic" and _looks_like_token(auth.password):
        verified = _verify_token(auth.password or "", claimed_owner=auth.username)
        if verified is not None:
            return verified
        # Not a valid token for this user; it may still be a password that merely
        # starts like one, and MLflow answers 401 for anything else.
    from mlflow.server.auth import authenticate_request_basic_auth

    return authenticate_request_basic_auth()


def _looks_like_token(secret: str | None) -> bool:
    return secret is not None and secret.startswith(TOKEN_PREFIX)


def _verify_token(
    secret: str, claimed_owner: str | None
) -> Authorization | Response | None:
    """The owner's authorization, a 503 response, or None when the token is no good."""
    if not _looks_like_token(secret):
        return None
    try:
        principal = TokenService(_database()).authenticate(secret)
    except Unauthenticated as exc:
        logger.debug("platform token refused: %s", exc.message)
        return None
    except SQLAlchemyError as exc:
        return _database_unavailable(exc)
    if claimed_owner is not None and claimed_owner != principal.username:
        logger.debug("platform token %s sent with another username", principal.token_id)
        return None
    # Deleting a user in MLflow leaves their tokens in the platform database; the
    # auth store is the one that knows whether the owner still exists.
    if not _mlflow_user_exists(principal.username):
        logger.debug("platform token %s belongs to a deleted user", principal.token_id)
        return None
    logger.debug("platform token %s accepted", principal.token_id)
    return Authorization("basic", {"username": principal.username})


def _database() -> Database:
    """The platform database; one engine per URL for the life of the process."""
    url = os.environ.get(DATABASE_URL_ENV) or Settings().resolved_database_url()
    with _databases_lock:
        database = _databases.get(url)
        if database is None:
            database = Database(url)
            _databases[url] = database
            logger.info(
                "platform tokens are checked against %s",
                database.engine.url.render_as_string(hide_password=True),
            )
        return database


# MLflow's auth module is imported where it is used: the tracking server loaded it long
# before the first request, while the supervisor, which imports this module only for
# its names, should not pay for it.


def _mlflow_user_exists(username: str) -> bool:
    from mlflow.server.auth import store

    return store.has_user(username)


def _unauthenticated() -> Response:
    from mlflow.server.auth import make_basic_auth_response

    return make_basic_auth_response()


def _database_unavailable(exc: SQLAlchemyError) -> Response:
    # SQLAlchemy's own message carries the statement and its parameters; the type and
    # the driver's message are enough to diagnose and hold neither.
    cause = getattr(exc, "orig", None) or type(exc).__name__
    logger.error(
        "cannot check a platform token: the platform database failed (%s); check %s "
        "in the tracking server's environment",
        cause,
        DATABASE_URL_ENV,
    )
    response = make_response(
        "The platform database that holds tokens is unavailable, so tokens cannot be "
        "checked right now; passwords still work. Ask the platform admin to look at "
        "the tracking server log.",
        503,
    )
    response.headers["Retry-After"] = "5"
    return response
