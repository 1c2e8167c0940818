"""Who is calling: the platform token's owner and the MLflow credentials sent along."""

from dataclasses import dataclass

from mlplatform.domain.names import BasicCredentials


@dataclass(frozen=True)
class Principal:
    username: str
    role: str  # "admin" or "user"
    token_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    # The caller's own MLflow credentials; used for one fetch, never stored.
    mlflow: BasicCredentials | None
