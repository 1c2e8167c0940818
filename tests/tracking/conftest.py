"""A real MLflow tracking server (basic-auth app) shared by the tracking tests.

The server runs with ``default_permission = NO_PERMISSIONS`` so that a user without a
grant is really refused; ``reader`` gets READ on the model and its experiment, while
``reader2`` gets nothing. The admin logs and registers one small sklearn model.
"""

import logging
import secrets
from collections.abc import Iterator

import pytest
from tracking_support import MODEL_NAME, READER, READER2, TrackingFixture, free_port

from mlplatform.tracking.server import TrackingServer

logger = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingFixture]:
    data_dir = tmp_path_factory.mktemp("tracking")
    password = "Adm1n-" + secrets.token_urlsafe(24)
    server = TrackingServer(
        data_dir,
        free_port(),
        password,
        default_permission="NO_PERMISSIONS",
        public_url="http://localhost:8080",
    )
    server.start(data_dir / "server.log")
    try:
        startup = server.wait_healthy(timeout=120)
        logger.info("tracking server healthy after %.1fs", startup)
        yield _populate(server, password, startup)
    finally:
        server.stop()


def _populate(server: TrackingServer, password: str, startup: float) -> TrackingFixture:
    # MLflow's client reads credentials from the environment; patch it for setup only.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server.url)
        mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
        run_id, model_id, experiment_id, source = _log_model()
        _create_users(server.url, experiment_id)
    return TrackingFixture(
        server, password, run_id, model_id, experiment_id, source, startup
    )


def _log_model() -> tuple[str, str, str, str]:
    import mlflow
    from mlflow import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300).fit(features, labels)
    experiment_id = mlflow.create_experiment("iris-experiment")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name=MODEL_NAME
        )
    client = MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    source = client.get_model_version(MODEL_NAME, "1").source
    assert source is not None
    return str(run.info.run_id), str(info.model_id), experiment_id, source


def _create_users(url: str, experiment_id: str) -> None:
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=url)
    auth.create_user(*READER)
    auth.create_user(*READER2)
    # Model artifacts come through the artifact proxy, which MLflow checks against the
    # experiment: READ on the registered model alone is not enough to download.
    auth.grant_user_permission(READER[0], "registered_model", MODEL_NAME, "READ")
    auth.grant_user_permission(READER[0], "experiment", experiment_id, "READ")
