"""Real models for the tests: trained on datasets that ship with scikit-learn."""

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    alias: str
    run_id: str
    logged_model_id: str
    source: str  # the version's source as MLflow hands it out
    artifact_uri: str  # mlflow-artifacts:/... of the model folder
    model: RandomForestClassifier
    sample: pd.DataFrame


TRUSTED = ["sklearn.tree._tree.Tree"]  # our own random forests


def iris_data() -> tuple[pd.DataFrame, pd.Series]:
    data = load_iris(as_frame=True)
    return data.data, data.target


def register_iris(name: str, experiment: str = "tests") -> RegisteredModel:
    features, target = iris_data()
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        model = RandomForestClassifier(n_estimators=20, random_state=0)
        model.fit(features, target)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=features[:2],
            skops_trusted_types=TRUSTED,
        )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, "champion", version)
    model_version = client.get_model_version(name, version)
    return RegisteredModel(
        name=name,
        version=version,
        alias="champion",
        run_id=run.info.run_id,
        logged_model_id=info.model_id,
        source=model_version.source,
        artifact_uri=client.get_logged_model(info.model_id).artifact_location,
        model=model,
        sample=features.iloc[[0, 60, 120]],
    )


def log_altered_model(artifact_path: str, alter: Callable[[Path], None]) -> str:
    """Log a saved iris model after ``alter`` changed its folder; return runs:/ URI."""
    features, target = iris_data()
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, target)
    folder = Path(tempfile.mkdtemp()) / "model"
    try:
        mlflow.sklearn.save_model(model, folder, skops_trusted_types=TRUSTED)
        alter(folder)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(folder), artifact_path)
        return f"runs:/{run.info.run_id}/{artifact_path}"
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
