"""Tables of the platform database. Secrets are stored only as hashes."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class Token(Base):
    """A platform API token. Only its SHA-256 is kept: tokens are 256-bit random."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(256), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16), default="user")
    # "access": used on every call; "register": single use, exchanged for an access
    # token by the user it was handed to.
    kind: Mapped[str] = mapped_column(String(16), default="access")
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeployServer(Base):
    __tablename__ = "deploy_servers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(256))
    runtime: Mapped[str] = mapped_column(String(32))
    size: Mapped[str] = mapped_column(String(16), default="mid")
    # The MLflow instance its models come from; "default" is the one `up` starts.
    instance: Mapped[str] = mapped_column(String(64), default="default")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )

    deployments: Mapped[list["Deployment"]] = relationship(
        back_populates="deploy_server", cascade="all, delete-orphan"
    )


class Deployment(Base):
    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("deploy_server_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    deploy_server_id: Mapped[str] = mapped_column(
        ForeignKey("deploy_servers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(256))
    model_uri: Mapped[str] = mapped_column(Text)
    # The caller's basic auth for the public route: the user name and a bcrypt hash.
    auth_user: Mapped[str | None] = mapped_column(String(256))
    auth_hash: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="starting")
    error: Mapped[str | None] = mapped_column(Text)
    upstream_url: Mapped[str | None] = mapped_column(String(256))
    pid: Mapped[int | None] = mapped_column(Integer)
    runtime_ref: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    deploy_server: Mapped[DeployServer] = relationship(back_populates="deployments")


class Instance(Base):
    """An MLflow or JupyterHub instance besides the default tracking server.

    Secrets (admin passwords, the hub's service token) are kept in the instance's own
    data folder, readable by the platform's user only, never in this table.
    """

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "mlflow" or "jupyterhub"
    owner: Mapped[str] = mapped_column(String(256))
    admin_user: Mapped[str] = mapped_column(String(256))
    # A linked MLflow instance names its JupyterHub; at most one per hub.
    jupyterhub_id: Mapped[str | None] = mapped_column(
        ForeignKey("instances.id"), unique=True
    )
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
