"""Errors of the platform's server side.

    PlatformError (500)
     +-- InvalidInput (422)      a name, URI, auth string or setting is malformed
     +-- Unauthenticated (401)   missing or wrong token / MLflow credentials
     +-- PermissionDenied (403)  the caller is known but may not do this
     +-- NotFound (404)          a deploy server, deployment, model or run is missing
     +-- Conflict (409)          a name is taken, or a resource is still in use
     +-- Unavailable (503)       a component (tracking server, runtime) does not answer
     +-- StartupError (500)      a component of `mlplatform up` cannot start

Each carries the HTTP status the API answers with. Messages name the cause and, where
there is one, the fix. They never contain a password, a token or a header value.
"""


class PlatformError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PlatformError):
    status_code = 422


class Unauthenticated(PlatformError):
    status_code = 401


class PermissionDenied(PlatformError):
    status_code = 403


class NotFound(PlatformError):
    status_code = 404


class Conflict(PlatformError):
    status_code = 409


class Unavailable(PlatformError):
    status_code = 503


class StartupError(PlatformError):
    status_code = 500
