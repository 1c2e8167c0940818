import base64

import numpy as np
import pandas as pd
import pytest

from mlplatform.client._client import MLPlatform, _payload
from mlplatform_client import MLPlatformError, ValidationError

ENV = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "JUPYTERHUB_USER",
    "MLPLATFORM_URL",
    "MLFLOW_TRACKING_URI",
    "REFRESH_TOKEN",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def basic_of(headers: dict[str, str]) -> str:
    return base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()


def test_headers_from_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw:with:colons")
    client = MLPlatform("mlp_x", url="http://localhost:1")
    headers = client._headers(None)
    assert headers["X-MLPlatform-Token"] == "mlp_x"
    assert basic_of(headers) == "alice:pw:with:colons"


def test_notebook_credentials_are_the_hub_user_and_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "carol")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "hubtoken")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:9/instances/team")
    client = MLPlatform("mlp_x")
    assert client.url == "http://localhost:9"
    assert basic_of(client._headers(None)) == "carol:hubtoken"


def test_explicit_credentials_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "env-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-pw")
    client = MLPlatform(
        "t", url="http://x", tracking_username="bob", tracking_password="pw"
    )
    assert basic_of(client._headers(None)) == "bob:pw"


def test_no_credentials_send_no_authorization() -> None:
    assert "Authorization" not in MLPlatform("t", url="http://x")._headers(None)


def test_no_url_is_a_clear_error() -> None:
    with pytest.raises(MLPlatformError, match="MLPLATFORM_URL"):
        MLPlatform("t")


def test_payload_shapes() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    assert _payload(frame) == {
        "dataframe_split": {"index": [0, 1], "columns": ["a"], "data": [[1], [2]]}
    }
    assert _payload(np.array([[1, 2]])) == {"inputs": [[1, 2]]}
    assert _payload({"inputs": [1]}) == {"inputs": [1]}
    assert _payload([[1, 2]]) == {"inputs": [[1, 2]]}


def test_long_form_needs_both_username_and_password() -> None:
    client = MLPlatform("t", url="http://localhost:1")
    with pytest.raises(ValidationError, match="both"):
        client.create_deployment("s", "d", "models:/m/1", username="only")
