"""The tracking side: run an MLflow tracking server and fetch models from it.

``TrackingServer`` runs one MLflow instance; ``fetch_model`` downloads a model with
the caller's own MLflow credentials; ``check_requirements`` compares a model's
``requirements.txt`` with the platform's environment.
"""

from mlplatform.tracking.fetch import FetchResult, fetch_model
from mlplatform.tracking.requirements import (
    RequirementsReport,
    check_requirements,
    ensure_satisfied,
)
from mlplatform.tracking.server import TrackingServer, verify_credentials

__all__ = [
    "FetchResult",
    "RequirementsReport",
    "TrackingServer",
    "check_requirements",
    "ensure_satisfied",
    "fetch_model",
    "verify_credentials",
]
