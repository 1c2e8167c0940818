"""The platform API: FastAPI routers translating HTTP to domain calls, nothing else."""

from mlplatform.api.app import create_app

__all__ = ["create_app"]
