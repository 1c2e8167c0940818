"""Platform settings, read from ``MLPLATFORM_*`` environment variables.

Every field can be set as ``MLPLATFORM_<FIELD>``; the CLI overrides a few of them with
flags (``--port``, ``--admin-user``, ...). All state lives under ``home``.
"""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLPLATFORM_", extra="ignore")

    home: Path = Field(
        default=Path("~/.mlplatform"),
        description="Folder holding every piece of platform state.",
    )
    host: str = Field(default="127.0.0.1", description="Address Traefik listens on.")
    port: int = Field(
        default=8080, ge=1, le=65535, description="The single public port (Traefik)."
    )
    public_url: str | None = Field(
        default=None,
        description="URL users reach the platform at; default http://<host>:<port>.",
    )
    admin_user: str = Field(default="admin", description="The tracking server's admin.")
    admin_password: SecretStr | None = Field(
        default=None,
        description="Admin password; generated and shown once if unset at first start.",
    )
    database_url: str | None = Field(
        default=None,
        description="Platform database; default SQLite in <home>/platform.db.",
    )
    runtime: str = Field(
        default="process", description="Default runtime of new deploy servers."
    )
    docker_base_image: str | None = Field(
        default=None,
        description="Base of the docker runtime's images; default python:3.11-slim "
        "if present, else the offline one from `mlplatform images build-base`.",
    )
    default_permission: str = Field(
        default="NO_PERMISSIONS",
        description="Tracking server access to resources nobody granted: the "
        "Standalone preset denies (NO_PERMISSIONS); READ opens them to every user.",
    )
    deploy_timeout: float = Field(
        default=180.0, description="Seconds a new deployment may take to answer /ping."
    )
    auth_cache_ttl: float = Field(
        default=300.0,
        description="Seconds a verified deployment credential is remembered in memory.",
    )

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "localhost" if self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home() / 'platform.db'}"
