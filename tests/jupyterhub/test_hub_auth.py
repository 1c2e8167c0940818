"""The hub token lookup and browser login of a linked MLflow, against a stand-in hub."""

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from flask import Flask
from mlflow.server import auth as mlflow_auth
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
from werkzeug.wrappers import Response

from mlplatform.tracking import hub_auth
from mlplatform.tracking.hub_auth import (
    HubClient,
    HubLogin,
    HubUnavailable,
    HubUser,
    LoginRefused,
    TokenCache,
)

ACCESS = "access:services!service=mlflow"


def client(
    handler: Callable[[httpx.Request], httpx.Response], ttl: float = 30.0
) -> tuple[HubClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.Client(transport=httpx.MockTransport(record))
    return HubClient("http://hub/hub/api/", TokenCache(ttl), http), seen


def user_model(request: httpx.Request) -> httpx.Response:
    assert request.headers["Authorization"] == "token good"
    body = {
        "kind": "user",
        "name": "alice",
        "admin": True,
        "groups": ["team"],
        "scopes": [ACCESS, "read:users:name!user=alice"],
    }
    return httpx.Response(200, content=json.dumps(body))


def test_a_token_resolves_to_its_owner_with_admin_flag_groups_and_scopes() -> None:
    hub, seen = client(user_model)

    user, fresh = hub.lookup("good")

    assert fresh
    assert user == HubUser(
        "alice", True, ("team",), frozenset({ACCESS, "read:users:name!user=alice"})
    )
    assert str(seen[0].url) == "http://hub/hub/api/user"
    assert user.may_access("mlflow")
    assert not user.may_access("other")


def test_a_second_lookup_within_the_ttl_is_served_from_the_cache() -> None:
    hub, seen = client(user_model)

    hub.lookup("good")
    user, fresh = hub.lookup("good")

    assert user is not None and not fresh
    assert len(seen) == 1


def test_a_zero_ttl_asks_the_hub_every_time() -> None:
    hub, seen = client(user_model, ttl=0)

    hub.lookup("good")
    hub.lookup("good")

    assert len(seen) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_token_the_hub_refuses_has_no_owner(status: int) -> None:
    hub, _ = client(lambda request: httpx.Response(status))

    assert hub.lookup("bad") == (None, True)
    assert hub.lookup("bad") == (None, False)


def test_a_service_token_is_no_user() -> None:
    model = {"kind": "service", "name": "mlflow", "scopes": []}
    hub, _ = client(lambda request: httpx.Response(200, json=model))

    assert hub.lookup("service-token")[0] is None


def test_a_failing_hub_is_unavailable_and_nothing_is_cached() -> None:
    hub, seen = client(lambda request: httpx.Response(502))

    for _ in range(2):
        with pytest.raises(HubUnavailable, match="HTTP 502"):
            hub.lookup("good")
    assert len(seen) == 2


def test_the_cache_never_keeps_the_token_itself() -> None:
    cache = TokenCache(30)
    cache.put("secret-token", None)

    assert "secret-token" not in repr(cache.__dict__)
    assert cache.get("secret-token") == (True, None)
    assert cache.get("other") == (False, None)


def login(
    handler: Callable[[httpx.Request], httpx.Response] = user_model,
) -> HubLogin:
    return HubLogin(
        authorize_url="http://platform/instances/hub/hub/api/oauth2/authorize",
        token_url="http://127.0.0.1:9/instances/hub/hub/api/oauth2/token",
        client_id="service-mlflow",
        client_secret="client-secret",
        public_url="http://platform/instances/ml",
        http=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def test_the_authorize_redirect_names_the_client_its_callback_and_the_state() -> None:
    url = httpx.URL(login().authorize_redirect("the-state"))

    assert url.path == "/instances/hub/hub/api/oauth2/authorize"
    assert dict(url.params) == {
        "client_id": "service-mlflow",
        "redirect_uri": "http://platform/instances/ml/oauth_callback",
        "response_type": "code",
        "state": "the-state",
    }
    assert "client-secret" not in str(url)


def test_a_code_is_redeemed_with_the_client_secret_for_a_token() -> None:
    seen: list[httpx.Request] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"access_token": "oauth-token", "expires_in": 60}
        )

    assert login(token_endpoint).redeem("the-code") == ("oauth-token", 60)
    form = parse_qs(seen[0].content.decode())
    assert form["client_secret"] == ["client-secret"]
    assert form["code"] == ["the-code"]
    assert form["redirect_uri"] == ["http://platform/instances/ml/oauth_callback"]


@pytest.mark.parametrize(
    ("status", "error"), [(400, LoginRefused), (502, HubUnavailable)]
)
def test_a_refused_or_failed_exchange_is_told_apart(
    status: int, error: type[Exception]
) -> None:
    with pytest.raises(error):
        login(lambda request: httpx.Response(status)).redeem("the-code")


@pytest.mark.parametrize(
    ("method", "path", "accept", "expected"),
    [
        ("GET", "/instances/ml/", "text/html,application/xhtml+xml,*/*;q=0.8", True),
        ("GET", "/instances/ml/", "*/*", False),
        (
            "GET",
            "/instances/ml/ajax-api/2.0/mlflow/experiments/search",
            "text/html",
            False,
        ),
        ("GET", "/instances/ml/api/2.0/mlflow/experiments/search", "text/html", False),
        ("POST", "/instances/ml/", "text/html", False),
    ],
)
def test_only_a_browser_opening_a_page_is_sent_to_the_login(
    method: str, path: str, accept: str, expected: bool
) -> None:
    app = Flask(__name__)
    with app.test_request_context(path, method=method, headers={"Accept": accept}):
        assert hub_auth._is_page_load("/instances/ml") is expected


def test_a_callback_whose_state_is_not_the_browsers_is_400(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_auth, "_login", login())
    monkeypatch.setattr(hub_auth, "_login_loaded", True)
    app = Flask(__name__)
    path = "/instances/ml/oauth_callback?code=c&state=forged"
    with app.test_request_context(
        path, headers={"Cookie": f"{hub_auth.STATE_COOKIE}=mine"}
    ):
        response = hub_auth.authenticate()

    assert isinstance(response, Response) and response.status_code == 400
    assert "WWW-Authenticate" not in response.headers


def test_a_page_load_without_credentials_is_redirected_with_a_state_cookie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_auth, "_login", login())
    monkeypatch.setattr(hub_auth, "_login_loaded", True)
    app = Flask(__name__)
    with app.test_request_context("/instances/ml/", headers={"Accept": "text/html"}):
        response = hub_auth.authenticate()

    assert isinstance(response, Response) and response.status_code == 302
    state = httpx.URL(response.headers["Location"]).params["state"]
    cookie = response.headers["Set-Cookie"]
    assert f"{hub_auth.STATE_COOKIE}={state}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/instances/ml/oauth_callback" in cookie


def role_names(store: SqlAlchemyStore, name: str) -> set[str]:
    return {role.name for role in store.list_user_roles(store.get_user(name).id)}


def test_hub_group_roles_follow_the_groups_and_leave_other_roles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    monkeypatch.setattr(mlflow_auth, "store", store)
    store.create_user("alice", "Pw-not-used-1", is_admin=False)
    reviewers = store.create_role("reviewers", "default")
    store.assign_role_to_user(store.get_user("alice").id, reviewers.id)

    def sync(*groups: str) -> None:
        hub_auth._sync_group_roles(HubUser("alice", False, groups, frozenset()))

    sync("team", "ops")
    assert role_names(store, "alice") == {"hub:team", "hub:ops", "reviewers"}
    sync("ops")
    assert role_names(store, "alice") == {"hub:ops", "reviewers"}
    # The left group's role stays, with whatever an admin granted it.
    assert store.get_role_by_name("default", "hub:team").name == "hub:team"
    sync()
    assert role_names(store, "alice") == {"reviewers"}
