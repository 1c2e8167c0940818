"""End to end: deploy registered models and call them through Traefik."""

import os
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from iris_models import RegisteredModel, register_iris
from mlplatform_client import MLPlatform
from platform_support import RunningPlatform

pytestmark = pytest.mark.integration

ROUTE_AUTH = "user:Password123!"


@pytest.fixture(scope="session")
def iris(platform: RunningPlatform, tracking_env: None) -> RegisteredModel:
    return register_iris("iris-e2e")


@pytest.fixture()
def client(platform: RunningPlatform) -> Iterator[MLPlatform]:
    with platform.admin_client() as mlp:
        yield mlp


def invoke(url: str, frame: object, auth: tuple[str, str] | None) -> httpx.Response:
    body = {"dataframe_split": frame.to_dict(orient="split")}  # type: ignore[attr-defined]
    return httpx.post(url, json=body, auth=auth, timeout=30)


def test_hosted_platform_snippet_runs_unchanged(
    platform: RunningPlatform, iris: RegisteredModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in platform.env.items():
        monkeypatch.setenv(name, value)
    from mlflow.tracking import MlflowClient

    from mlplatform_client import MLPlatform

    tracking_cli = MlflowClient()
    mlp_client = MLPlatform(refresh_token=os.getenv("REFRESH_TOKEN"))
    deploy_server_name = "deploy_server_q2"
    mlp_client.create_endpoint_standalone(name=deploy_server_name)
    model_source_uri = (
        tracking_cli.search_registered_models()[0].latest_versions[0].source
    )
    mlp_client.create_deployment_standalone(
        deploy_server_name, "test_deploy_auth", model_source_uri, auth=ROUTE_AUTH
    )

    info = mlp_client.get_deployment(deploy_server_name, "test_deploy_auth")
    assert info["status"] == "running"
    assert info["model_uri"] == model_source_uri
    url = f"{platform.url}/deploy/deploy_server_q2/test_deploy_auth/invocations"
    assert info["model_ref"] == url

    answer = invoke(url, iris.sample, ("user", "Password123!"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == iris.model.predict(iris.sample).tolist()
    assert invoke(url, iris.sample, None).status_code == 401
    assert invoke(url, iris.sample, ("user", "wrong")).status_code == 401
    assert invoke(url, iris.sample, ("other", "Password123!")).status_code == 401

    served = mlp_client.predict_model(
        iris.sample, deploy_server_name, "test_deploy_auth"
    )
    assert served["predictions"] == iris.model.predict(iris.sample).tolist()
    assert mlp_client.ping_model(deploy_server_name, "test_deploy_auth")
    mlp_client.delete_endpoint(deploy_server_name, force=True)


@pytest.mark.parametrize(
    "form", ["version", "alias", "logged_model", "runs", "mlflow_artifacts"]
)
def test_every_model_uri_form_deploys(
    client: MLPlatform, iris: RegisteredModel, form: str, runtime: str
) -> None:
    uri = {
        "version": f"models:/{iris.name}/{iris.version}",
        "alias": f"models:/{iris.name}@{iris.alias}",
        "logged_model": f"models:/{iris.logged_model_id}",
        "runs": f"runs:/{iris.run_id}/model",
        "mlflow_artifacts": iris.artifact_uri,
    }[form]
    server = f"forms_{form}_{runtime}"
    client.create_endpoint_standalone(server, runtime=runtime)
    try:
        deployment = client.create_deployment_standalone(server, "m", uri)
        assert deployment["status"] == "running"
        assert deployment["model_uri"] == uri
        answer = invoke(deployment["model_ref"], iris.sample, None)
        assert answer.status_code == 200, answer.text
        expected = iris.model.predict(iris.sample)
        assert np.array_equal(answer.json()["predictions"], expected)
    finally:
        client.delete_endpoint(server, force=True)


def test_list_get_delete_and_logs(
    platform: RunningPlatform, client: MLPlatform, iris: RegisteredModel, runtime: str
) -> None:
    client.create_endpoint_standalone("lifecycle", runtime=runtime)
    assert client.get_endpoint("lifecycle")["runtime"] == runtime
    client.create_deployment_standalone("lifecycle", "d1", iris.source, auth=ROUTE_AUTH)

    assert [s["name"] for s in client.list_endpoints()].count("lifecycle") == 1
    assert client.get_endpoint("lifecycle")["deployments"] == 1
    assert [d["name"] for d in client.list_deployments("lifecycle")] == ["d1"]
    logs = client.get_deployment_logs("lifecycle", "d1")
    assert "Uvicorn running" in logs or "Application startup complete" in logs

    cli_logs = platform.cli("deployment", "logs", "lifecycle", "d1", "--tail", "5")
    assert 0 < len(cli_logs.stdout.splitlines()) <= 5

    url = client.get_deployment("lifecycle", "d1")["model_ref"]
    client.delete_deployment("lifecycle", "d1")
    assert client.list_deployments("lifecycle") == []
    assert invoke(url, iris.sample, ("user", "Password123!")).status_code == 404
    client.delete_endpoint("lifecycle")
    assert "lifecycle" not in [s["name"] for s in client.list_endpoints()]
