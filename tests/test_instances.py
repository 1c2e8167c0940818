"""MLflow and JupyterHub instances through the platform, served by its Traefik."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hub_support import Browser, user_token
from mlplatform.tracking.hub_auth import TOKEN_COOKIE
from mlplatform_client import (
    ConflictError,
    MLPlatform,
    PermissionDeniedError,
    ValidationError,
)
from platform_support import RunningPlatform

pytestmark = pytest.mark.integration

HUB, MLFLOW = "hub_t", "ml_t"
HUB_ADMIN = "hubadmin"
NOT_IN_A_NOTEBOOK = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "REFRESH_TOKEN",
    "MLPLATFORM_URL",
)
HUB_ADMIN_PASSWORD = "Hub-admin-" + secrets.token_urlsafe(8)


@dataclass(frozen=True)
class PublicHub:
    """The hub as users reach it: through the platform's entrance."""

    url: str
    api_url: str


def admin_client(platform: RunningPlatform) -> MLPlatform:
    return MLPlatform(
        platform.env["REFRESH_TOKEN"],
        url=platform.url,
        tracking_username=platform.env["MLFLOW_TRACKING_USERNAME"],
        tracking_password=platform.env["MLFLOW_TRACKING_PASSWORD"],
        timeout=300,
    )


@pytest.fixture(scope="module")
def linked(platform: RunningPlatform) -> Iterator[PublicHub]:
    with admin_client(platform) as admin:
        hub = admin.create_jupyter_hub(HUB, HUB_ADMIN, HUB_ADMIN_PASSWORD)
        assert hub["status"] == "running"
        mlflow = admin.create_mlflow(MLFLOW, jh_id=hub["id"])
        assert (mlflow["mode"], mlflow["linked_to"]) == ("linked", HUB)
        base = f"{platform.url}/instances/{HUB}/"
        yield PublicHub(base, base + "hub/api")
        admin.delete_instance(HUB, force=True, delete_data=True)


def approved_user(hub: PublicHub, name: str, password: str | None = None) -> str:
    """Sign ``name`` up, have the hub admin approve, return the user's hub token."""
    password = password or "Pw-" + secrets.token_urlsafe(12)
    newcomer = Browser(hub)  # type: ignore[arg-type]
    admin = Browser(hub)  # type: ignore[arg-type]
    try:
        newcomer.sign_up(name, password)
        assert admin.log_in(HUB_ADMIN, HUB_ADMIN_PASSWORD).status_code == 302
        admin.approve(name)
        assert newcomer.log_in(name, password).status_code == 302
    finally:
        newcomer.close()
        admin.close()
    return user_token(hub, name, password)[0]  # type: ignore[arg-type]


def test_rules_of_instances(platform: RunningPlatform, linked: PublicHub) -> None:
    with admin_client(platform) as admin:
        with pytest.raises(ConflictError, match=MLFLOW):
            admin.create_mlflow("second_link", jh_id=HUB)
        with pytest.raises(ConflictError, match=MLFLOW):
            admin.delete_instance(HUB)
        with pytest.raises(ValidationError, match="too short"):
            admin.create_mlflow("weak", admin_password="short")
        with pytest.raises(ValidationError, match="admin_password"):
            admin.create_mlflow("nopass")
        with pytest.raises(ConflictError):
            admin.create_jupyter_hub(HUB, HUB_ADMIN, HUB_ADMIN_PASSWORD)
        names = {i["name"] for i in admin.get_all_instances_info()}
        assert {HUB, MLFLOW} <= names
        assert "second_link" not in names and "weak" not in names

        admin.create_user("instance-user", "Instance-user-123")
        token = admin.create_token("instance-user", "t")["token"]
    with MLPlatform(token, url=platform.url) as user:
        with pytest.raises(PermissionDeniedError, match="admin role"):
            user.get_all_instances_info()
        with pytest.raises(PermissionDeniedError, match="admin role"):
            user.create_mlflow("mine", admin_password="Mine-pass-12345")


def test_standalone_instance_lives_under_its_path(platform: RunningPlatform) -> None:
    password = "Solo-admin-" + secrets.token_urlsafe(8)
    with admin_client(platform) as admin:
        solo = admin.create_mlflow("solo", admin_password=password)
        url = f"{platform.url}/instances/solo"
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(search, auth=("admin", password)).status_code == 200
        assert httpx.get(search).status_code == 401
        assert admin.get_instance_info(solo["id"])["name"] == "solo"

        admin.delete_instance("solo")
        assert httpx.get(f"{url}/health").status_code != 200
        assert (platform.home / "instances" / "solo" / "data").exists()
        admin.create_mlflow("solo2", admin_password=password)
        admin.delete_instance("solo2", delete_data=True)
        assert not (platform.home / "instances" / "solo2").exists()


def test_hub_user_logs_registers_and_deploys_with_the_hub_token(
    platform: RunningPlatform, linked: PublicHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = approved_user(linked, "carol")
    tracking_uri = f"{platform.url}/instances/{MLFLOW}"
    code = """
import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
x, y = load_iris(return_X_y=True, as_frame=True)
mlflow.set_experiment("carol-exp")
with mlflow.start_run():
    model = LogisticRegression(max_iter=300).fit(x, y)
    info = mlflow.sklearn.log_model(model, name="m", registered_model_name="carol-m")
print(info.registered_model_version)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_TRACKING_TOKEN=token)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    version = done.stdout.strip().splitlines()[-1]

    # What a notebook has: its hub user, its hub token and the tracking URI; no
    # password, no platform token.
    for name in NOT_IN_A_NOTEBOOK:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "carol")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    with MLPlatform(timeout=300) as carol:
        assert carol.who_am_i() == {"username": "carol", "role": "user"}
        carol.create_endpoint_standalone("carol_server", instance=MLFLOW)
        deployment = carol.create_deployment_standalone(
            "carol_server", "m", f"models:/carol-m/{version}"
        )
        assert deployment["status"] == "running"
        predictions = carol.predict_model([[5.1, 3.5, 1.4, 0.2]], "carol_server", "m")
        assert predictions["predictions"] == [0]
        carol.delete_endpoint("carol_server", force=True)


def test_bad_hub_token_is_401_on_the_linked_mlflow(
    platform: RunningPlatform, linked: PublicHub
) -> None:
    search = (
        f"{platform.url}/instances/{MLFLOW}/api/2.0/mlflow/experiments/search"
        "?max_results=1"
    )
    headers = {"Authorization": "Bearer not-a-hub-token"}
    assert httpx.get(search, headers=headers).status_code == 401


PAGE = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def follow(browser: httpx.Client, response: httpx.Response) -> httpx.Response:
    """One redirect step, the way a browser takes it (cookies kept in the jar)."""
    assert response.status_code == 302, (response.status_code, response.text[:500])
    return browser.get(response.url.join(response.headers["Location"]), headers=PAGE)


def test_the_browser_logs_in_to_the_linked_ui_through_the_hub(
    platform: RunningPlatform, linked: PublicHub
) -> None:
    password = "Pw-" + secrets.token_urlsafe(12)
    approved_user(linked, "dora", password)
    ui = f"{platform.url}/instances/{MLFLOW}/"
    hub = Browser(linked)  # type: ignore[arg-type]
    try:
        assert hub.log_in("dora", password).status_code == 302
        browser = hub.http

        opened = browser.get(ui, headers=PAGE)
        assert opened.status_code == 302
        authorize = urlsplit(opened.headers["Location"])
        assert authorize.path == f"/instances/{HUB}/hub/api/oauth2/authorize"
        assert "WWW-Authenticate" not in opened.headers

        # The hub knows dora from her login and asks nothing (oauth_no_confirm).
        authorized = follow(browser, opened)
        back = urlsplit(authorized.headers.get("Location", ""))
        assert back.path == f"/instances/{MLFLOW}/oauth_callback", authorized.text[:500]
        assert {"code", "state"} <= set(parse_qs(back.query))

        called_back = follow(browser, authorized)
        assert called_back.status_code == 302, called_back.text[:500]
        set_cookie = called_back.headers["Set-Cookie"]
        assert set_cookie.startswith(f"{TOKEN_COOKIE}=")
        assert f"Path=/instances/{MLFLOW};" in set_cookie
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        token = called_back.cookies[TOKEN_COOKIE]

        landed = follow(browser, called_back)
        assert str(landed.url) == ui
        assert landed.status_code == 200
        assert "text/html" in landed.headers["Content-Type"]
        assert "WWW-Authenticate" not in landed.headers
    finally:
        hub.close()

    cookie = {"Cookie": f"{TOKEN_COOKIE}={token}"}
    ajax = f"{ui}ajax-api/2.0/mlflow"
    me = httpx.get(f"{ajax}/users/current", headers=cookie)
    assert me.status_code == 200 and me.json()["user"]["username"] == "dora"
    search = httpx.get(f"{ajax}/experiments/search?max_results=1", headers=cookie)
    assert search.status_code == 200, search.text
    # What the UI sends for a change: its own origin; MLflow's CORS guard lets it by.
    created = httpx.post(
        f"{ajax}/experiments/create",
        json={"name": "dora-from-the-ui"},
        headers={**cookie, "Origin": platform.url},
    )
    assert created.status_code == 200, created.text


def test_a_login_callback_with_a_foreign_state_is_refused(
    platform: RunningPlatform, linked: PublicHub
) -> None:
    with httpx.Client() as browser:
        opened = browser.get(f"{platform.url}/instances/{MLFLOW}/", headers=PAGE)
        assert opened.status_code == 302
        refused = browser.get(
            f"{platform.url}/instances/{MLFLOW}/oauth_callback",
            params={"code": "whatever", "state": "forged"},
            headers=PAGE,
        )
    assert refused.status_code == 400
    assert TOKEN_COOKIE not in refused.cookies


def test_an_api_call_without_credentials_gets_no_basic_prompt(
    platform: RunningPlatform, linked: PublicHub
) -> None:
    ajax = f"{platform.url}/instances/{MLFLOW}/ajax-api/2.0/mlflow/experiments/search"
    for headers in ({}, PAGE, {"Cookie": f"{TOKEN_COOKIE}=not-a-hub-token"}):
        response = httpx.get(ajax, params={"max_results": 1}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
