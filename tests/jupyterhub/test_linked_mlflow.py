"""A real JupyterHub signs users up and in; the linked MLflow trusts its tokens."""

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from hub_support import (
    ADMIN,
    CACHE_TTL,
    Browser,
    ClosedMlflow,
    Linked,
    hub_api,
    log_run_with_client,
    poll,
    run_in_kernel,
    start_server,
    user_token,
)

pytestmark = pytest.mark.integration

NOTEBOOK_CODE = """
import os
import mlflow
mlflow.set_experiment("alice-notebook")
with mlflow.start_run() as run:
    mlflow.log_metric("accuracy", 0.9)
print(os.environ["MLFLOW_TRACKING_URI"])
print(run.info.run_id)
"""


@dataclass(frozen=True)
class Users:
    alice: str  # an API token of each approved user
    bob: str
    admin: str
    alice_password: str


@pytest.fixture(scope="module")
def users(linked: Linked) -> Iterator[Users]:
    hub = linked.hub
    passwords = {name: "Pw-" + secrets.token_urlsafe(12) for name in ("alice", "bob")}
    admin = Browser(hub)
    try:
        for name, password in passwords.items():
            newcomer = Browser(hub)
            try:
                newcomer.sign_up(name, password)
                # Before the admin approves, the hub shows the login form again.
                refused = newcomer.log_in(name, password)
                assert refused.status_code == 200
                assert "jupyterhub-session-id" not in newcomer.http.cookies
            finally:
                newcomer.close()
        assert admin.log_in(ADMIN, linked.admin_password).status_code == 302
        assert admin.http.cookies.get("jupyterhub-session-id")
        for name in passwords:
            admin.approve(name)
        for name, password in passwords.items():
            # The hub knows a user from the first login on; tokens come after it.
            approved = Browser(hub)
            try:
                assert approved.log_in(name, password).status_code == 302
            finally:
                approved.close()
    finally:
        admin.close()
    yield Users(
        alice=user_token(hub, "alice", passwords["alice"])[0],
        bob=user_token(hub, "bob", passwords["bob"])[0],
        admin=user_token(hub, ADMIN, linked.admin_password)[0],
        alice_password=passwords["alice"],
    )


def mlflow_get(
    linked: Linked, path: str, auth: str | None, **params: str
) -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    return httpx.get(
        f"{linked.mlflow.url}/api/2.0/mlflow/{path}", headers=headers, params=params
    )


def create_run(linked: Linked, token: str, experiment_id: str) -> httpx.Response:
    return httpx.post(
        f"{linked.mlflow.url}/api/2.0/mlflow/runs/create",
        headers={"Authorization": f"Bearer {token}"},
        json={"experiment_id": experiment_id},
    )


def experiment_id(linked: Linked, token: str, name: str) -> str:
    response = mlflow_get(
        linked, "experiments/get-by-name", f"Bearer {token}", experiment_name=name
    )
    assert response.status_code == 200, response.text
    return str(response.json()["experiment"]["experiment_id"])


def can_edit(linked: Linked, token: str, experiment: str) -> bool:
    """Whether ``token``'s owner may edit ``experiment`` (default_permission is READ).

    Only the experiment's creator and admins hold more than READ here, so this shows
    whom MLflow took the creating request for.
    """
    response = httpx.post(
        f"{linked.mlflow.url}/api/2.0/mlflow/experiments/set-experiment-tag",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "experiment_id": experiment_id(linked, token, experiment),
            "key": "checked",
            "value": "yes",
        },
    )
    assert response.status_code in (200, 403), response.text
    return response.status_code == 200


def basic(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


def test_an_approved_user_token_logs_a_run(linked: Linked, users: Users) -> None:
    run_id = log_run_with_client(linked.mlflow.url, users.alice, "alice-client")

    response = mlflow_get(linked, "runs/get", f"Bearer {users.alice}", run_id=run_id)
    assert response.status_code == 200
    assert can_edit(linked, users.alice, "alice-client")
    assert not can_edit(linked, users.bob, "alice-client")


def test_code_in_the_users_kernel_logs_a_run_with_no_credentials_typed(
    linked: Linked, users: Users
) -> None:
    start_server(linked.hub, "alice", users.alice)

    output = run_in_kernel(linked.hub, "alice", users.alice, NOTEBOOK_CODE)

    tracking_uri, run_id = output.split()[-2:]
    assert tracking_uri == linked.mlflow.url
    response = mlflow_get(linked, "runs/get", f"Bearer {users.alice}", run_id=run_id)
    assert response.status_code == 200
    assert can_edit(linked, users.alice, "alice-notebook")
    assert not can_edit(linked, users.bob, "alice-notebook")


def test_another_user_cannot_write_to_the_experiment(
    linked: Linked, users: Users
) -> None:
    log_run_with_client(linked.mlflow.url, users.alice, "alice-private")
    exp_id = experiment_id(linked, users.alice, "alice-private")

    assert create_run(linked, users.bob, exp_id).status_code == 403
    # default_permission READ: reading is still allowed.
    assert experiment_id(linked, users.bob, "alice-private") == exp_id


def test_a_hub_admin_is_an_mlflow_admin(linked: Linked, users: Users) -> None:
    log_run_with_client(linked.mlflow.url, users.alice, "alice-admin-check")
    exp_id = experiment_id(linked, users.alice, "alice-admin-check")

    current = mlflow_get(linked, "users/current", f"Bearer {users.admin}")
    assert current.status_code == 200
    assert current.json()["user"] == {
        "id": current.json()["user"]["id"],
        "username": ADMIN,
        "is_admin": True,
    }
    assert create_run(linked, users.admin, exp_id).status_code == 200
    alice = mlflow_get(linked, "users/current", f"Bearer {users.alice}")
    assert alice.json()["user"]["is_admin"] is False


@pytest.mark.parametrize("scheme", ["Bearer", "token"])
def test_token_schemes_are_accepted(linked: Linked, users: Users, scheme: str) -> None:
    response = mlflow_get(linked, "users/current", f"{scheme} {users.alice}")
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "alice"


def test_the_token_as_basic_password_needs_its_owners_name(
    linked: Linked, users: Users
) -> None:
    assert mlflow_get(linked, "users/current", basic("alice", users.alice)).is_success
    wrong = mlflow_get(linked, "users/current", basic("bob", users.alice))
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer not-a-hub-token",
        "token not-a-hub-token",
        basic("alice", "not-a-hub-token"),
    ],
)
def test_a_bad_token_is_401(linked: Linked, users: Users, auth: str | None) -> None:
    response = mlflow_get(linked, "experiments/search", auth, max_results="1")
    assert response.status_code == 401
    # No Basic prompt for browsers unless Basic was sent.
    if auth is None or not auth.startswith("Basic"):
        assert "Basic" not in response.headers.get("WWW-Authenticate", "")


def test_the_hub_password_is_not_an_mlflow_password(
    linked: Linked, users: Users
) -> None:
    response = mlflow_get(linked, "users/current", basic("alice", users.alice_password))
    assert response.status_code == 401


def test_a_token_without_the_service_scope_is_401(linked: Linked, users: Users) -> None:
    token, _ = user_token(
        linked.hub, "alice", users.alice_password, scopes=["read:users:name!user"]
    )
    assert hub_api(linked.hub, token, "GET", "/user").status_code == 200

    response = mlflow_get(linked, "users/current", f"Bearer {token}")
    assert response.status_code == 401


def test_a_revoked_token_stops_working_after_the_cache_time(
    linked: Linked, users: Users
) -> None:
    token, token_id = user_token(linked.hub, "alice", users.alice_password)
    assert mlflow_get(linked, "users/current", f"Bearer {token}").status_code == 200

    revoked = hub_api(
        linked.hub, users.alice, "DELETE", f"/users/alice/tokens/{token_id}"
    )
    assert revoked.status_code == 204

    def refused() -> bool | None:
        status = mlflow_get(linked, "users/current", f"Bearer {token}").status_code
        return True if status == 401 else None

    poll(refused, timeout=CACHE_TTL + 30, what="MLflow to refuse a revoked token")


def group_role_id(closed: ClosedMlflow, group: str) -> int | None:
    response = httpx.get(
        f"{closed.linked.mlflow.url}/api/3.0/mlflow/roles/list",
        headers={"Authorization": closed.admin_auth},
        params={"workspace": "default"},
    )
    assert response.status_code == 200, response.text
    ids = [r["id"] for r in response.json()["roles"] if r["name"] == f"hub:{group}"]
    return int(ids[0]) if ids else None


def read_experiment(closed: ClosedMlflow, token: str, exp_id: str) -> int:
    auth = f"Bearer {token}"
    response = mlflow_get(closed.linked, "experiments/get", auth, experiment_id=exp_id)
    assert response.status_code in (200, 403), response.text
    return response.status_code


def test_a_grant_to_a_hub_groups_role_reaches_its_members(
    closed_mlflow: ClosedMlflow, users: Users
) -> None:
    closed, hub = closed_mlflow, closed_mlflow.linked.hub
    assert hub_api(hub, users.admin, "POST", "/groups/team").status_code == 201
    members = {"users": ["alice"]}
    joined = hub_api(hub, users.admin, "POST", "/groups/team/users", json=members)
    assert joined.status_code == 200, joined.text

    def role_after_a_fresh_lookup() -> int | None:
        mlflow_get(closed.linked, "users/current", f"Bearer {users.alice}")
        return group_role_id(closed, "team")

    role_id = poll(
        role_after_a_fresh_lookup, CACHE_TTL + 30, "the role hub:team to be made"
    )
    created = httpx.post(
        f"{closed.linked.mlflow.url}/api/2.0/mlflow/experiments/create",
        headers={"Authorization": closed.admin_auth},
        json={"name": "team-only"},
    )
    assert created.status_code == 200, created.text
    exp_id = str(created.json()["experiment_id"])
    granted = httpx.post(
        f"{closed.linked.mlflow.url}/api/3.0/mlflow/roles/permissions/add",
        headers={"Authorization": closed.admin_auth},
        json={
            "role_id": role_id,
            "resource_type": "experiment",
            "resource_pattern": exp_id,
            "permission": "READ",
        },
    )
    assert granted.status_code == 200, granted.text

    assert read_experiment(closed, users.alice, exp_id) == 200
    assert read_experiment(closed, users.bob, exp_id) == 403

    left = hub_api(hub, users.admin, "DELETE", "/groups/team/users", json=members)
    assert left.status_code == 200, left.text

    def refused() -> bool | None:
        return read_experiment(closed, users.alice, exp_id) == 403 or None

    poll(refused, CACHE_TTL + 30, "MLflow to drop alice from hub:team")
