"""Deployments survive `mlplatform down`/`up` and a SIGKILL of the platform API.

Runs last among the end-to-end tests (file order): it restarts the shared platform.
"""

import os
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from iris_models import RegisteredModel, register_iris
from mlplatform.proxy import poll_with_backoff
from mlplatform.supervisor import read_state
from mlplatform_client import MLPlatform
from platform_support import RunningPlatform, run_cli

pytestmark = pytest.mark.integration

AUTH = ("keeper", "Keeper-pass-1")
SERVER_MARKER = "=== "  # the process runtime writes one such line per server start


@pytest.fixture(scope="module")
def deployed(
    platform: RunningPlatform, tracking_env: None
) -> tuple[RegisteredModel, str, MLPlatform]:
    iris = register_iris("iris-restart")
    client = platform.admin_client()
    client.create_endpoint_standalone("survivors")
    deployment = client.create_deployment_standalone(
        "survivors", "kept", iris.source, auth=":".join(AUTH)
    )
    return iris, deployment["model_ref"], client


def predicts(iris: RegisteredModel, url: str) -> Callable[[], bool]:
    body = {"dataframe_split": iris.sample.to_dict(orient="split")}

    def check() -> bool:
        try:
            answer = httpx.post(url, json=body, auth=AUTH, timeout=10)
        except httpx.HTTPError:
            return False
        expected = iris.model.predict(iris.sample).tolist()
        return answer.status_code == 200 and answer.json()["predictions"] == expected

    return check


def server_starts(client: MLPlatform) -> int:
    return client.get_deployment_logs("survivors", "kept").count(SERVER_MARKER)


def test_sigkill_of_the_api_loses_nothing(
    platform: RunningPlatform, deployed: tuple[RegisteredModel, str, MLPlatform]
) -> None:
    iris, url, client = deployed
    state = read_state(platform.home)
    assert state is not None
    health = f"{state.api_url}/platform/api/v1/health"
    old_pid = httpx.get(health).json()["pid"]
    starts = server_starts(client)

    os.kill(old_pid, signal.SIGKILL)

    def api_back() -> bool:
        try:
            return httpx.get(health, timeout=2).json()["pid"] != old_pid
        except (httpx.HTTPError, ValueError):
            return False

    assert poll_with_backoff(api_back, timeout=120)
    assert poll_with_backoff(predicts(iris, url), timeout=60)
    deployment = client.get_deployment("survivors", "kept")
    assert deployment["status"] == "running"
    # Adopted, not restarted: the model server kept running through the crash.
    assert server_starts(client) == starts


def test_down_and_up_serve_again_with_same_url_and_credentials(
    platform: RunningPlatform, deployed: tuple[RegisteredModel, str, MLPlatform]
) -> None:
    iris, url, client = deployed
    password = "Kept-admin-pass-1"
    client.create_mlflow("kept", admin_password=password)
    instance_health = f"{platform.url}/instances/kept/health"
    run_cli(platform.home, "down")
    assert not predicts(iris, url)()

    port = str(urlsplit(platform.url).port)
    run_cli(platform.home, "up", "--detach", "--port", port)

    assert poll_with_backoff(predicts(iris, url), timeout=120)
    assert client.get_deployment("survivors", "kept")["model_ref"] == url
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    # Instances come back too, at the same address.
    assert httpx.get(instance_health, timeout=10).status_code == 200
    assert client.get_instance_info("kept")["status"] == "running"
    client.delete_instance("kept", delete_data=True)
    client.delete_endpoint("survivors", force=True)
