"""Names of deploy servers and deployments, and the ``user:password`` auth string."""

import re
from dataclasses import dataclass

from mlplatform.errors import InvalidInput

MAX_PASSWORD_BYTES = 72
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_RULE = (
    "1-63 characters: lowercase letters, digits, '_' and '-', starting with a letter "
    "or digit"
)
_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"invalid {kind} name {name!r}: use {NAME_RULE}")
    return name


@dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str

    def __repr__(self) -> str:  # keep passwords out of logs and tracebacks
        return f"BasicCredentials(username={self.username!r}, password=***)"


def parse_auth(auth: str) -> BasicCredentials:
    """Parse the ``user:password`` string given for a deployment's public route."""
    user, colon, password = auth.partition(":")
    if not colon:
        raise InvalidInput("invalid auth: expected 'user:password' with a colon")
    if not user:
        raise InvalidInput("invalid auth: the user name before ':' is empty")
    if not password:
        raise InvalidInput("invalid auth: the password after ':' is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in user):
        raise InvalidInput("invalid auth: the user name contains whitespace")
    # bcrypt reads at most 72 bytes; a longer password would be silently cut.
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInput(
            f"invalid auth: the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )
    return BasicCredentials(user, password)
