"""The generated jupyterhub_config.py, checked without starting a hub."""

import os
from pathlib import Path
from typing import Any

import pytest

from mlplatform.jupyterhub import config as hub_config


class FakeConfig:
    """Enough of traitlets' config object to run the generated file."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, object]] = {}

    def __getattr__(self, section: str) -> "FakeSection":
        return FakeSection(self.sections.setdefault(section, {}))


class FakeSection:
    values: dict[str, object]

    def __init__(self, values: dict[str, object]) -> None:
        object.__setattr__(self, "values", values)

    def __setattr__(self, name: str, value: object) -> None:
        self.values[name] = value


def run(text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, object]]:
    monkeypatch.setenv(hub_config.SERVICE_TOKEN_ENV, "service-token")
    config = FakeConfig()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config.sections


def only_service(sections: dict[str, dict[str, object]]) -> dict[str, Any]:
    services = sections["JupyterHub"]["services"]
    assert isinstance(services, list) and len(services) == 1
    service: dict[str, Any] = services[0]
    return service


def sample(**overrides: object) -> hub_config.HubConfig:
    values: dict[str, object] = {
        "data_dir": Path("/data/hub"),
        "port": 8000,
        "hub_port": 8081,
        "proxy_api_port": 8001,
        "proxy_command": Path("/opt/chp"),
        "admin_name": "boss",
        "base_url": "/jupyter/",
        "mlflow_url": "http://127.0.0.1:5000",
        "single_user_command": ("python", "-m", "jupyterhub.singleuser"),
    }
    values.update(overrides)
    return hub_config.HubConfig(**values)  # type: ignore[arg-type]


def test_the_hub_listens_on_loopback_under_its_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sections = run(hub_config.render(sample()), monkeypatch)

    assert sections["JupyterHub"]["bind_url"] == "http://127.0.0.1:8000/jupyter/"
    assert sections["JupyterHub"]["hub_bind_url"] == "http://127.0.0.1:8081"
    assert sections["ConfigurableHTTPProxy"]["command"] == ["/opt/chp"]
    assert sections["Authenticator"]["admin_users"] == {"boss"}
    assert sections["NativeAuthenticator"]["open_signup"] is False


def test_users_and_server_tokens_may_reach_the_mlflow_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sections = run(hub_config.render(sample()), monkeypatch)

    hub = sections["JupyterHub"]
    service = only_service(sections)
    assert (service["name"], service["api_token"]) == ("mlflow", "service-token")
    roles = {role["name"]: role for role in hub["load_roles"]}  # type: ignore[attr-defined]
    assert hub_config.ACCESS_SCOPE in roles["user"]["scopes"]
    assert roles["mlflow-service"]["services"] == ["mlflow"]
    token_scopes = sections["Spawner"]["server_token_scopes"]
    assert hub_config.ACCESS_SCOPE in token_scopes  # type: ignore[operator]


def test_a_users_server_gets_the_tracking_uri_and_its_own_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sections = run(hub_config.render(sample()), monkeypatch)

    environment = sections["Spawner"]["environment"]
    assert isinstance(environment, dict)
    assert environment["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"

    class Spawner:
        api_token = "server-token"

    assert environment["MLFLOW_TRACKING_TOKEN"](Spawner()) == "server-token"


def test_no_mlflow_url_means_no_tracking_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sections = run(hub_config.render(sample(mlflow_url=None)), monkeypatch)

    assert "environment" not in sections["Spawner"]


def test_the_file_holds_no_secret_and_the_service_token_leaves_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = hub_config.render(sample())

    run(text, monkeypatch)

    assert "service-token" not in text
    assert hub_config.SERVICE_TOKEN_ENV not in os.environ


def test_the_mlflow_service_is_an_oauth_client_that_skips_the_confirm_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sections = run(hub_config.render(sample()), monkeypatch)

    service = only_service(sections)
    assert service["oauth_client_id"] == hub_config.OAUTH_CLIENT_ID
    assert service["oauth_redirect_uri"] == "http://127.0.0.1:5000/oauth_callback"
    assert service["oauth_no_confirm"] is True
    assert hub_config.ACCESS_SCOPE in service["oauth_client_allowed_scopes"]


def test_no_mlflow_url_means_no_oauth_client(monkeypatch: pytest.MonkeyPatch) -> None:
    sections = run(hub_config.render(sample(mlflow_url=None)), monkeypatch)

    service = only_service(sections)
    assert set(service) == {"name", "api_token"}
