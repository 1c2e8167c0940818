"""The platform database: SQLAlchemy models and Alembic migrations."""

from mlplatform.store.db import Database
from mlplatform.store.models import Deployment, DeployServer, Instance, Token

__all__ = ["Database", "DeployServer", "Deployment", "Instance", "Token"]
