"""NativeAuthenticator whose admin exists, approved, with the password set at creation.

NativeAuthenticator keeps its own table of users and bcrypt hashes beside the hub's,
and only lets in users an admin has approved. It has no setting for an initial
password, so at hub start this subclass writes the admin's row itself, from
``MLPLATFORM_HUB_ADMIN_PASSWORD`` in the hub's environment. The variable is removed
from the environment as soon as it is read, so the proxy and the single-user servers
the hub starts never inherit it.

Runs inside the JupyterHub process, loaded by name from ``jupyterhub_config.py``.
"""

import os
from typing import Any

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo

from mlplatform.jupyterhub.config import ADMIN_PASSWORD_ENV


class PlatformAuthenticator(NativeAuthenticator):  # type: ignore[misc]
    """Sign-up with admin approval; the one admin is seeded from the environment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        password = os.environ.pop(ADMIN_PASSWORD_ENV, None)
        if password:
            for name in self.admin_users:
                self._seed_admin(name, password)
        else:
            self.log.warning(
                "%s is not set; the admin keeps the password already stored",
                ADMIN_PASSWORD_ENV,
            )

    def _seed_admin(self, name: str, password: str) -> None:
        # A restart passes the same password again: only a changed one is rewritten,
        # so a password the admin changed in the hub UI is replaced by the platform's.
        session = self._deprecated_db_session
        info = UserInfo.find(session, self.normalize_username(name))
        if info is None:
            info = UserInfo(
                username=self.normalize_username(name),
                password=bcrypt.hashpw(password.encode(), bcrypt.gensalt()),
                is_authorized=True,
            )
            session.add(info)
            self.log.info("created hub admin %s", name)
        else:
            if not info.is_valid_password(password):
                info.password = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
                self.log.info("reset the password of hub admin %s", name)
            info.is_authorized = True
        session.commit()
