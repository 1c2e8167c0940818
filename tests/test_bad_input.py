"""Every bad input gets a precise error and leaves nothing behind."""

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from iris_models import RegisteredModel, log_altered_model, register_iris
from mlplatform_client import (
    AuthenticationError,
    ConflictError,
    DeploymentFailedError,
    MLPlatform,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from platform_support import RunningPlatform

pytestmark = pytest.mark.integration

SERVER = "bad_input"


@pytest.fixture(scope="module")
def iris(platform: RunningPlatform, tracking_env: None) -> RegisteredModel:
    return register_iris("iris-bad-input")


@pytest.fixture(scope="module")
def client(platform: RunningPlatform) -> Iterator[MLPlatform]:
    with platform.admin_client() as mlp:
        mlp.create_endpoint_standalone(SERVER)
        yield mlp
        mlp.delete_endpoint(SERVER, force=True)


def leftovers(platform: RunningPlatform, client: MLPlatform) -> list[object]:
    folders = list((platform.home / "deployments").glob("*/model"))
    return [*client.list_deployments(SERVER), *folders]


@pytest.mark.parametrize(
    "uri",
    [
        "models:/no-such-model/1",
        "models:/iris-bad-input/999",
        "models:/iris-bad-input@no-such-alias",
        "models:/m-00000000000000000000000000000000",
        "runs:/00000000000000000000000000000000/model",
    ],
)
def test_unknown_model_is_404_with_uri_and_nothing_left(
    platform: RunningPlatform, client: MLPlatform, iris: RegisteredModel, uri: str
) -> None:
    before = leftovers(platform, client)
    with pytest.raises(NotFoundError) as caught:
        client.create_deployment_standalone(SERVER, "unknown", uri)
    assert caught.value.status == 404
    assert uri in caught.value.message
    assert leftovers(platform, client) == before


def test_wrong_mlflow_credentials_are_401(
    platform: RunningPlatform, iris: RegisteredModel
) -> None:
    with (
        MLPlatform(
            platform.env["REFRESH_TOKEN"],
            url=platform.url,
            tracking_username=platform.env["MLFLOW_TRACKING_USERNAME"],
            tracking_password="not-the-password",
        ) as mlp,
        pytest.raises(AuthenticationError) as caught,
    ):
        mlp.create_deployment_standalone(SERVER, "creds", iris.source)
    assert "not-the-password" not in str(caught.value)


def test_duplicate_names_are_409(client: MLPlatform, iris: RegisteredModel) -> None:
    with pytest.raises(ConflictError, match=SERVER):
        client.create_endpoint_standalone(SERVER)
    client.create_deployment_standalone(SERVER, "twice", iris.source)
    try:
        with pytest.raises(ConflictError, match="twice"):
            client.create_deployment_standalone(SERVER, "twice", iris.source)
        assert client.get_deployment(SERVER, "twice")["status"] == "running"
    finally:
        client.delete_deployment(SERVER, "twice")


@pytest.mark.parametrize("auth", ["nocolon", ":password", "user:", "", "u:" + "p" * 73])
def test_malformed_auth_is_422(
    client: MLPlatform, iris: RegisteredModel, auth: str
) -> None:
    with pytest.raises(ValidationError, match="auth"):
        client.create_deployment_standalone(SERVER, "auth", iris.source, auth=auth)


@pytest.mark.parametrize(
    "name", ["Upper", "-dash-first", "a/b", "x" * 64, "sp ace", ""]
)
def test_names_outside_the_pattern_are_422(
    client: MLPlatform, iris: RegisteredModel, name: str
) -> None:
    with pytest.raises(ValidationError, match="name"):
        client.create_endpoint_standalone(name)
    with pytest.raises((ValidationError, NotFoundError)):
        client.create_deployment_standalone(SERVER, name, iris.source)


def test_model_that_fails_to_load_ends_failed_without_route(
    platform: RunningPlatform, client: MLPlatform, iris: RegisteredModel, runtime: str
) -> None:
    def corrupt(folder: Path) -> None:
        # MLflow 3.17 saves scikit-learn models as model.skops, older ones as .pkl.
        for model_file in folder.glob("model.*"):
            model_file.write_bytes(b"this is not a model")

    uri = log_altered_model(f"corrupt_model_{runtime}", corrupt)
    server = f"broken_{runtime}"
    client.create_endpoint_standalone(server, runtime=runtime)
    with pytest.raises(DeploymentFailedError) as caught:
        client.create_deployment_standalone(server, "broken", uri, auth="u:p")
    deployment = client.get_deployment(server, "broken")
    assert deployment["status"] == "failed"
    # The error ends with the last lines of the server's log: here, the load failure.
    assert "failed to start" in deployment["error"]
    assert "BadZipFile" in deployment["error"]
    assert caught.value.deployment["status"] == "failed"
    answer = httpx.get(deployment["url"] + "/ping", auth=("u", "p"))
    assert answer.status_code == 404
    client.delete_endpoint(server, force=True)


def test_unsatisfied_requirements_name_the_packages(
    platform: RunningPlatform, client: MLPlatform, iris: RegisteredModel
) -> None:
    def require_missing(folder: Path) -> None:
        with (folder / "requirements.txt").open("a") as requirements:
            requirements.write("\nsurely-not-installed-pkg==1.0\n")

    uri = log_altered_model("needs_missing_pkg", require_missing)
    before = leftovers(platform, client)
    with pytest.raises(ValidationError, match="surely-not-installed-pkg"):
        client.create_deployment_standalone(SERVER, "reqs", uri)
    assert leftovers(platform, client) == before


def test_deleting_a_server_with_deployments_needs_force(
    client: MLPlatform, iris: RegisteredModel
) -> None:
    client.create_endpoint_standalone("busy")
    client.create_deployment_standalone("busy", "one", iris.source)
    with pytest.raises(ConflictError, match="one"):
        client.delete_endpoint("busy")
    assert client.get_deployment("busy", "one")["status"] == "running"
    client.delete_endpoint("busy", force=True)
    with pytest.raises(NotFoundError):
        client.get_endpoint("busy")


@pytest.mark.parametrize("token", [None, "mlp_not-a-real-token", ""])
def test_platform_api_without_valid_token_is_401(
    platform: RunningPlatform, token: str | None
) -> None:
    headers = {"X-MLPlatform-Token": token} if token is not None else {}
    answer = httpx.get(
        f"{platform.url}/platform/api/v1/deploy-servers", headers=headers
    )
    assert answer.status_code == 401
    assert "token" in answer.json()["message"]


def test_unknown_deploy_server_and_deployment_are_404(client: MLPlatform) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        client.get_endpoint("nope")
    with pytest.raises(NotFoundError, match="nope"):
        client.get_deployment(SERVER, "nope")


def test_model_the_caller_cannot_read_is_403(
    platform: RunningPlatform, iris: RegisteredModel
) -> None:
    admin = (
        platform.env["MLFLOW_TRACKING_USERNAME"],
        platform.env["MLFLOW_TRACKING_PASSWORD"],
    )
    user, password = "stranger", "Stranger-pass-123"
    created = httpx.post(
        f"{platform.url}/api/2.0/mlflow/users/create",
        json={"username": user, "password": password},
        auth=admin,
    )
    assert created.status_code == 200, created.text
    experiment_id = mlflow.get_run(iris.run_id).info.experiment_id
    for resource_type, resource_id in (
        ("registered_model", iris.name),
        ("experiment", experiment_id),
    ):
        denied = httpx.post(
            f"{platform.url}/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": user,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "permission": "DENY",
            },
            auth=admin,
        )
        assert denied.status_code == 200, denied.text
    token = platform.cli(
        "token", "create", "--user", user, "--name", "test"
    ).stdout.strip()

    with MLPlatform(
        token, url=platform.url, tracking_username=user, tracking_password=password
    ) as mlp:
        mlp.create_endpoint_standalone("strangers")
        with pytest.raises(PermissionDeniedError) as caught:
            mlp.create_deployment_standalone("strangers", "m", iris.source)
        assert iris.source in caught.value.message
        assert mlp.list_deployments("strangers") == []
        mlp.delete_endpoint("strangers")
    assert base64.b64encode(password.encode()).decode() not in caught.value.message


def test_unicode_route_credentials_work(
    platform: RunningPlatform, client: MLPlatform, iris: RegisteredModel
) -> None:
    deployment = client.create_deployment_standalone(
        SERVER, "unicode", iris.source, auth="üser:pässwörd 🎉"
    )
    ping = deployment["url"] + "/ping"
    try:
        assert httpx.get(ping, auth=("üser", "pässwörd 🎉")).status_code == 200
        assert httpx.get(ping, auth=("üser", "wrong")).status_code == 401
    finally:
        client.delete_deployment(SERVER, "unicode")


def test_tokens_need_an_existing_user_and_a_sane_ttl(client: MLPlatform) -> None:
    with pytest.raises(NotFoundError, match="nosuchuser"):
        client.create_token("nosuchuser", "t")
    with pytest.raises(ValidationError, match="ttl"):
        client.create_token("admin", "t", ttl="99999999d")
    with pytest.raises(ValidationError, match="empty"):
        client.delete_token("")
