"""Quickstart: train on a real dataset, register in MLflow, deploy, predict via Traefik.

Run after `eval "$(mlplatform env)"`; it uses only those environment variables.
"""

import contextlib
import os
import secrets
import sys

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from mlplatform_client import ConflictError, MLPlatform, NotFoundError

MODEL_NAME = "quickstart-wine"
DEPLOY_SERVER = "quickstart"
DEPLOYMENT = "wine"


def train_and_register() -> tuple[RandomForestClassifier, object, str]:
    data = load_wine(as_frame=True)
    x_train, x_test, y_train, _ = train_test_split(
        data.data, data.target, test_size=0.2, random_state=0
    )
    mlflow.set_experiment("quickstart")
    with mlflow.start_run(run_name="random-forest"):
        model = RandomForestClassifier(n_estimators=100, random_state=0)
        model.fit(x_train, y_train)
        mlflow.log_metric("train_accuracy", model.score(x_train, y_train))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL_NAME,
            input_example=x_test.head(2),
            # Random forests hold tree arrays skops does not trust by default; we
            # built this model ourselves just above.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    version = MlflowClient().get_model_version(
        MODEL_NAME, info.registered_model_version
    )
    print(f"registered {MODEL_NAME} version {version.version}; source {version.source}")
    return model, x_test, version.source


def deploy(model_uri: str, auth: str) -> dict[str, object]:
    client = MLPlatform(refresh_token=os.getenv("REFRESH_TOKEN"))
    with contextlib.suppress(ConflictError):  # created by an earlier run
        client.create_endpoint_standalone(name=DEPLOY_SERVER)
    with contextlib.suppress(NotFoundError):
        client.delete_deployment(DEPLOY_SERVER, DEPLOYMENT)
    return client.create_deployment_standalone(
        DEPLOY_SERVER, DEPLOYMENT, model_uri, auth=auth
    )


def main() -> int:
    model, x_test, model_uri = train_and_register()
    auth = f"demo:{secrets.token_urlsafe(12)}"
    deployment = deploy(model_uri, auth)
    print(f"deployment {DEPLOY_SERVER}/{DEPLOYMENT}: {deployment['status']}")

    client = MLPlatform(refresh_token=os.getenv("REFRESH_TOKEN"))
    served = client.predict_model(x_test, DEPLOY_SERVER, DEPLOYMENT, auth=auth)
    predictions = np.asarray(served["predictions"])
    local = model.predict(x_test)
    print(f"MLflow UI:        {os.environ['MLFLOW_TRACKING_URI']}")
    print(f"invocations URL:  {deployment['model_ref']}")
    print(f"route auth:       {auth}")
    print(f"predictions:      {predictions.tolist()}")
    body = x_test.head(2).to_json(orient="split", index=False)
    print("try it:")
    print(
        f"  curl -u '{auth}' -H 'Content-Type: application/json' "
        f"-d '{{\"dataframe_split\": {body}}}' {deployment['model_ref']}"
    )
    if not np.array_equal(predictions, local):
        print("FAILED: served predictions differ from model.predict", file=sys.stderr)
        return 1
    print(f"OK: {len(local)} served predictions equal the local model.predict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
