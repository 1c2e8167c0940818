"""The admin's credentials of one installation, kept in ``<home>/credentials.json``.

Like a kubeconfig or ``~/.netrc``, the file is readable by its owner only (0600); it
is what ``mlplatform env`` prints from. The database itself holds only hashes.
"""

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from mlplatform.domain.tokens import TokenService
from mlplatform.errors import InvalidInput
from mlplatform.settings import Settings
from mlplatform.store import Database

logger = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
KNOWN_DEFAULTS = frozenset(
    {"password1234", "password123!", "admin1234567", "changeme1234"}
)


@dataclass(frozen=True)
class AdminCredentials:
    admin_user: str
    admin_password: str
    refresh_token: str

    def __repr__(self) -> str:
        return f"AdminCredentials(admin_user={self.admin_user!r}, ...)"


def check_password_policy(password: str, what: str = "the admin password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"{what} is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if password.lower() in KNOWN_DEFAULTS or len(set(password)) < 4:
        raise InvalidInput(
            f"{what} is a well-known default or too simple; choose another"
        )


def credentials_path(home: Path) -> Path:
    return home / "credentials.json"


def load(home: Path) -> AdminCredentials | None:
    path = credentials_path(home)
    if not path.exists():
        return None
    return AdminCredentials(**json.loads(path.read_text()))


def _save(home: Path, credentials: AdminCredentials) -> None:
    path = credentials_path(home)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(asdict(credentials), file, indent=2)


def bootstrap(settings: Settings, db: Database) -> tuple[AdminCredentials, bool]:
    """Return the admin credentials, creating them on first start.

    The second value tells whether the password was generated just now (and so must
    be shown once).
    """
    home = settings.resolved_home()
    given = (
        settings.admin_password.get_secret_value() if settings.admin_password else None
    )
    existing = load(home)
    if existing is not None:
        if given is not None and given != existing.admin_password:
            logger.warning(
                "the admin user already exists; the given admin password is ignored"
            )
        return existing, False

    if given is not None:
        check_password_policy(given)
    password = given or secrets.token_urlsafe(18)
    token = TokenService(db).create(settings.admin_user, "mlplatform env", "admin")
    credentials = AdminCredentials(settings.admin_user, password, token.secret)
    _save(home, credentials)
    return credentials, given is None
