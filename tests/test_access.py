"""Standalone access control: users, tokens and permissions, against real servers.

The Standalone preset denies by default: a user sees only what they created or were
granted. Users: admin, owner (created the experiment and model), reader (granted
READ), stranger (nothing).
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from mlplatform_client import (
    AuthenticationError,
    MLPlatform,
    MLPlatformError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from platform_support import RunningPlatform

pytestmark = pytest.mark.integration

PASSWORDS = {
    "owner": "Owner-pass-1234",
    "reader": "Reader-pass-1234",
    "stranger": "Stranger-pass-12",
}
EXPERIMENT = "access-matrix"
MODEL = "access-model"


@dataclass
class Person:
    name: str
    password: str
    token: str

    def client(self, platform: RunningPlatform) -> MLPlatform:
        return MLPlatform(
            self.token,
            url=platform.url,
            tracking_username=self.name,
            tracking_password=self.password,
        )


@dataclass
class World:
    platform: RunningPlatform
    people: dict[str, Person]
    experiment_id: str
    run_id: str
    model_uri: str


def admin_client(platform: RunningPlatform) -> MLPlatform:
    return platform.admin_client()


def as_user(platform: RunningPlatform, name: str, password: str, code: str) -> str:
    """Run MLflow client code in a child process with only this user's env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(
        MLFLOW_TRACKING_URI=platform.url,
        MLFLOW_TRACKING_USERNAME=name,
        MLFLOW_TRACKING_PASSWORD=password,
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


@pytest.fixture(scope="module")
def world(platform: RunningPlatform) -> Iterator[World]:
    admin = admin_client(platform)
    people = {}
    for name, password in PASSWORDS.items():
        admin.create_user(name, password)
        invite = admin.create_register_token("user", "1h")["token"]
        with MLPlatform(
            "unused", url=platform.url, tracking_username=name,
            tracking_password=password,
        ) as newcomer:  # fmt: skip
            token = newcomer.create_refresh_token(invite, name="laptop")["token"]
        people[name] = Person(name, password, token)

    owner = people["owner"]
    code = f"""
import mlflow
from sklearn.linear_model import LogisticRegression
from sklearn.datasets import load_iris
x, y = load_iris(return_X_y=True, as_frame=True)
mlflow.set_experiment({EXPERIMENT!r})
with mlflow.start_run() as run:
    model = LogisticRegression(max_iter=300).fit(x, y)
    info = mlflow.sklearn.log_model(
        model, name="model", registered_model_name={MODEL!r}
    )
print(run.info.experiment_id, run.info.run_id, info.registered_model_version)
"""
    experiment_id, run_id, version = (
        as_user(platform, owner.name, owner.password, code).splitlines()[-1].split()
    )
    admin.grant_permission("reader", "READ", experiment=EXPERIMENT)
    admin.grant_permission("reader", "READ", registered_model=MODEL)
    yield World(platform, people, experiment_id, run_id, f"models:/{MODEL}/{version}")
    for name in PASSWORDS:
        admin.delete_user(name)
    admin.close()


def test_only_admins_manage_users(world: World) -> None:
    with world.people["owner"].client(world.platform) as owner:
        with pytest.raises(PermissionDeniedError, match="admin role"):
            owner.create_user("eve", "Eve-password-123")
        with pytest.raises(PermissionDeniedError, match="admin role"):
            owner.list_users()
        with pytest.raises(PermissionDeniedError, match="admin role"):
            owner.create_register_token("admin")
        with pytest.raises(PermissionDeniedError, match="admin role"):
            owner.create_token("owner", "more", role="admin")
    with admin_client(world.platform) as admin:
        names = {u["username"] for u in admin.list_users()}
        assert set(PASSWORDS) <= names


@pytest.mark.parametrize("password", ["short", "password1234", "aaaaaaaaaaaaaaaa"])
def test_password_policy(world: World, password: str) -> None:
    with admin_client(world.platform) as admin, pytest.raises(ValidationError):
        admin.create_user("weak-user", password)


def test_signup_cannot_create_users(world: World) -> None:
    url = world.platform.url
    assert httpx.get(f"{url}/signup").status_code == 401
    stranger = world.people["stranger"]
    created = httpx.post(
        f"{url}/api/2.0/mlflow/users/create",
        json={"username": "sneaky", "password": "Sneaky-pass-123"},
        auth=(stranger.name, stranger.password),
    )
    assert created.status_code == 403


def test_register_token_is_single_use(world: World) -> None:
    with admin_client(world.platform) as admin:
        invite = admin.create_register_token("user", "1h")["token"]
    reader = world.people["reader"]
    with MLPlatform(
        "unused", url=world.platform.url, tracking_username=reader.name,
        tracking_password=reader.password,
    ) as client:  # fmt: skip
        client.create_refresh_token(invite)
        assert client.who_am_i() == {"username": "reader", "role": "user"}
        with pytest.raises(AuthenticationError, match="already used"):
            client.create_refresh_token(invite)


def test_register_token_needs_the_users_own_credentials(world: World) -> None:
    with admin_client(world.platform) as admin:
        invite = admin.create_register_token("admin", "1h")["token"]
    with MLPlatform(
        "unused", url=world.platform.url, tracking_username="reader",
        tracking_password="wrong-password-1",
    ) as client:  # fmt: skip
        with pytest.raises(AuthenticationError, match="rejected the credentials"):
            client.create_refresh_token(invite)


def test_tokens_are_listed_without_secrets_and_revocable(world: World) -> None:
    with admin_client(world.platform) as admin:
        extra = admin.create_token("stranger", "temp")
        listed = {t["id"]: t for t in admin.get_project_tokens_info()}
        assert listed[extra["id"]]["owner"] == "stranger"
        assert all("token" not in t and "secret_hash" not in t for t in listed.values())
        admin.delete_token(extra["id"])
    with MLPlatform(extra["token"], url=world.platform.url) as revoked:
        with pytest.raises(AuthenticationError, match="revoked"):
            revoked.who_am_i()


def test_expired_token_is_401(world: World) -> None:
    with admin_client(world.platform) as admin:
        short = admin.create_token("stranger", "short", ttl="1s")
    with MLPlatform(short["token"], url=world.platform.url) as client:

        def expired() -> bool:
            try:
                client.who_am_i()
            except AuthenticationError as exc:
                return "expired" in exc.message
            return False

        from mlplatform.proxy import poll_with_backoff

        assert poll_with_backoff(expired, timeout=10)


def test_permission_listing_for_admins_and_managers_only(world: World) -> None:
    with admin_client(world.platform) as admin:
        grants = {g["username"]: g["permission"] for g in admin.list_permissions(
            experiment=EXPERIMENT
        )}  # fmt: skip
    assert grants["owner"] == "MANAGE"
    assert grants["reader"] == "READ"
    assert "stranger" not in grants
    with world.people["owner"].client(world.platform) as owner:
        by_owner = owner.list_permissions(registered_model=MODEL)
        assert {"username": "reader", "permission": "READ"} in by_owner
    for name in ("reader", "stranger"):
        with world.people[name].client(world.platform) as client:
            with pytest.raises((PermissionDeniedError, NotFoundError)):
                client.list_permissions(experiment=EXPERIMENT)


def test_deploy_acts_as_the_caller(world: World) -> None:
    platform = world.platform
    with world.people["stranger"].client(platform) as stranger:
        stranger.create_endpoint_standalone("strangers-server")
        with pytest.raises(PermissionDeniedError) as denied:
            stranger.create_deployment_standalone(
                "strangers-server", "m", world.model_uri
            )
        assert world.model_uri in denied.value.message
        stranger.delete_endpoint("strangers-server")

    with world.people["reader"].client(platform) as reader:
        reader.create_endpoint_standalone("readers-server")
        deployment = reader.create_deployment_standalone(
            "readers-server", "m", world.model_uri
        )
        assert deployment["owner"] == "reader"

    with world.people["stranger"].client(platform) as stranger:
        with pytest.raises(NotFoundError):
            stranger.get_deployment("readers-server", "m")
        with pytest.raises(NotFoundError):
            stranger.delete_endpoint("readers-server", force=True)
        assert "readers-server" not in [s["name"] for s in stranger.list_endpoints()]

    with admin_client(platform) as admin:
        assert admin.get_deployment("readers-server", "m")["owner"] == "reader"
    with world.people["reader"].client(platform) as reader:
        reader.delete_endpoint("readers-server", force=True)


def test_deleted_users_tokens_stop_at_once(world: World) -> None:
    with admin_client(world.platform) as admin:
        admin.create_user("leaver", "Leaver-pass-1234")
        token = admin.create_token("leaver", "t")["token"]
        with MLPlatform(token, url=world.platform.url) as leaver:
            assert leaver.who_am_i()["username"] == "leaver"
            admin.delete_user("leaver")
            with pytest.raises(AuthenticationError):
                leaver.who_am_i()


# -- the security matrix -------------------------------------------------------


@dataclass(frozen=True)
class Matrix:
    world: World
    artifact_path: str
    victims: dict[str, str]  # user -> a run of owner's that user will try to delete
    deployment: tuple[str, str]  # reader's deploy server and deployment


@pytest.fixture(scope="module")
def matrix(world: World) -> Iterator[Matrix]:
    owner = world.people["owner"]
    code = f"""
import mlflow
mlflow.set_experiment({EXPERIMENT!r})
with mlflow.start_run(run_id={world.run_id!r}):
    mlflow.log_text("hello", "note.txt")
ids = []
for _ in range(4):
    with mlflow.start_run() as run:
        ids.append(run.info.run_id)
print(" ".join(ids))
"""
    output = as_user(world.platform, owner.name, owner.password, code)
    victims = output.splitlines()[-1].split()
    artifact = f"{world.experiment_id}/{world.run_id}/artifacts/note.txt"
    with world.people["reader"].client(world.platform) as reader:
        reader.create_endpoint_standalone("matrix-server")
        reader.create_deployment_standalone("matrix-server", "d", world.model_uri)
    yield Matrix(
        world,
        artifact,
        dict(zip(["admin", *PASSWORDS], victims, strict=True)),
        ("matrix-server", "d"),
    )
    with world.people["reader"].client(world.platform) as reader:
        reader.delete_endpoint("matrix-server", force=True)


def credentials(world: World, user: str) -> tuple[str, str]:
    if user == "admin":
        env = world.platform.env
        return env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    # Half the users authenticate with their token as password: both must work.
    person = world.people[user]
    return person.name, person.token if user == "reader" else person.password


def act(m: Matrix, user: str, action: str) -> int | bool:
    """Do ``action`` as ``user``; the HTTP status, or for searches: is it visible?"""
    world = m.world
    api = f"{world.platform.url}/api/2.0"
    auth = credentials(world, user)
    model = MODEL
    calls = {
        "experiment.read": ("GET", "/mlflow/experiments/get",
                            {"params": {"experiment_id": world.experiment_id}}),
        "run.read": ("GET", "/mlflow/runs/get", {"params": {"run_id": world.run_id}}),
        "run.log": ("POST", "/mlflow/runs/log-metric", {"json": {
            "run_id": world.run_id, "key": f"by_{user}", "value": 1.0,
            "timestamp": 0, "step": 0}}),
        "run.delete": ("POST", "/mlflow/runs/delete",
                       {"json": {"run_id": m.victims[user]}}),
        "artifact.download": ("GET", f"/mlflow-artifacts/artifacts/{m.artifact_path}",
                              {}),
        "model.read": ("GET", "/mlflow/registered-models/get",
                       {"params": {"name": model}}),
        "model_version.download": ("GET", "/mlflow/model-versions/get-download-uri",
                                   {"params": {"name": model, "version": "1"}}),
    }  # fmt: skip
    if action in calls:
        method, path, kwargs = calls[action]
        return httpx.request(method, api + path, auth=auth, **kwargs).status_code
    if action == "experiment.search":
        found = httpx.post(
            f"{api}/mlflow/experiments/search", json={"max_results": 1000}, auth=auth
        ).json()
        return EXPERIMENT in {e["name"] for e in found.get("experiments", [])}
    if action == "model.search":
        found = httpx.get(f"{api}/mlflow/registered-models/search", auth=auth).json()
        return MODEL in {r["name"] for r in found.get("registered_models", [])}
    return platform_act(m, user, action)


def platform_act(m: Matrix, user: str, action: str) -> int:
    world = m.world
    client = (
        admin_client(world.platform)
        if user == "admin"
        else world.people[user].client(world.platform)
    )
    server, name = m.deployment
    try:
        if action == "deployment.read":
            client.get_deployment(server, name)
            return 200
        if action == "model.deploy":
            target = f"matrix-{user}"
            client.create_endpoint_standalone(target)
            try:
                client.create_deployment_standalone(target, "m", world.model_uri)
                return 201
            finally:
                client.delete_endpoint(target, force=True)
        raise AssertionError(f"unknown action {action}")
    except MLPlatformError as exc:
        assert exc.status is not None
        return exc.status
    finally:
        client.close()


#       action                     admin  owner  reader stranger
MATRIX = [
    ("experiment.read",            200,   200,   200,   403),
    ("experiment.search",          True,  True,  True,  False),
    ("run.read",                   200,   200,   200,   403),
    ("run.log",                    200,   200,   403,   403),
    ("run.delete",                 200,   200,   403,   403),
    ("artifact.download",          200,   200,   200,   403),
    ("model.read",                 200,   200,   200,   403),
    ("model.search",               True,  True,  True,  False),
    ("model_version.download",     200,   200,   200,   403),
    ("model.deploy",               201,   201,   201,   403),
    ("deployment.read",            200,   404,   200,   404),
]  # fmt: skip
USERS = ("admin", "owner", "reader", "stranger")


@pytest.mark.parametrize(
    ("action", "user", "expected"),
    [
        pytest.param(row[0], user, row[1 + i], id=f"{row[0]}-{user}")
        for row in MATRIX
        for i, user in enumerate(USERS)
    ],
)
def test_security_matrix(
    matrix: Matrix, action: str, user: str, expected: int | bool
) -> None:
    assert act(matrix, user, action) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("valid", 200), ("malformed", 401), ("revoked", 401), ("expired", 401)],
)
def test_tracking_server_tokens(world: World, header: str, expected: int) -> None:
    reader = world.people["reader"]
    with admin_client(world.platform) as admin:
        tokens = {
            "valid": reader.token,
            "malformed": "mlp_" + "x" * 10,
            "revoked": admin.create_token("reader", "to-revoke"),
            "expired": admin.create_token("reader", "short", ttl="1s"),
        }
        if header == "revoked":
            admin.delete_token(tokens["revoked"]["id"])

    secret = tokens[header]
    token = secret["token"] if isinstance(secret, dict) else secret
    url = f"{world.platform.url}/api/2.0/mlflow/experiments/get"
    params = {"experiment_id": world.experiment_id}

    def status() -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(url, params=params, headers=headers).status_code

    from mlplatform.proxy import poll_with_backoff

    # An expired token needs its second to pass; the others answer at once.
    assert poll_with_backoff(lambda: status() == expected, timeout=10)


def test_no_token_or_password_in_any_log(world: World, matrix: Matrix) -> None:
    secrets_used = [p.token for p in world.people.values()]
    secrets_used += [p.password for p in world.people.values()]
    secrets_used += [
        world.platform.env["REFRESH_TOKEN"],
        world.platform.env["MLFLOW_TRACKING_PASSWORD"],
    ]
    logs = [
        path
        for path in world.platform.home.rglob("*")
        if path.is_file() and (path.suffix in (".log", ".out") or "log" in path.name)
    ]
    assert logs, "no log files found"
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets_used:
            assert secret not in text, f"a secret appears in {path}"


def test_a_token_alone_is_enough_to_deploy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    reader = world.people["reader"]
    with MLPlatform(reader.token, url=world.platform.url) as client:
        client.create_endpoint_standalone("token-only")
        try:
            deployment = client.create_deployment_standalone(
                "token-only", "m", world.model_uri
            )
            assert deployment["status"] == "running"
        finally:
            client.delete_endpoint("token-only", force=True)
