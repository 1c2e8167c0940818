"""Platform tokens on the tracking server: the ``authorization_function`` hook.

The in-process tests call the hook inside a bare Flask request context; the integration
tests start a real tracking server with a platform database of its own and talk to it
over HTTP, both through MLflow's client and with raw headers.
"""

import base64
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from flask import Flask, Response
from sqlalchemy import update
from tracking_support import free_port

from mlplatform.domain.principals import Principal
from mlplatform.domain.tokens import TokenService
from mlplatform.store import Database, Token
from mlplatform.tracking import auth_hook
from mlplatform.tracking.server import TrackingServer

logger = logging.getLogger(__name__)

ADMIN = Principal("admin", "admin")
CURRENT_USER = "/api/2.0/mlflow/users/current"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def basic(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


# -- in process ---------------------------------------------------------------------


@pytest.fixture
def flask_app() -> Flask:
    return Flask(__name__)


@pytest.fixture
def platform_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    monkeypatch.setenv(auth_hook.DATABASE_URL_ENV, url)
    db = Database(url)
    db.migrate()
    yield db
    db.close()
    auth_hook._databases.pop(url).close()


def test_database_failure_is_503_without_the_token(
    flask_app: Flask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    monkeypatch.setenv(auth_hook.DATABASE_URL_ENV, url)
    secret = "mlp_" + secrets.token_urlsafe(32)

    with flask_app.test_request_context(headers=bearer(secret)):
        result = auth_hook.authenticate()
    auth_hook._databases.pop(url).close()

    assert isinstance(result, Response)
    assert result.status_code == 503
    assert secret not in result.get_data(as_text=True)
    assert "no such table" in caplog.text
    assert secret not in caplog.text


@pytest.mark.parametrize("header", ["Bearer garbage", "Bearer", "Basic !!!"])
def test_malformed_header_is_401_without_a_lookup(
    flask_app: Flask, monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    def no_lookup() -> Database:
        raise AssertionError("the platform database was read")

    monkeypatch.setattr(auth_hook, "_database", no_lookup)

    with flask_app.test_request_context(headers={"Authorization": header}):
        result = auth_hook.authenticate()

    assert isinstance(result, Response)
    assert result.status_code == 401


def test_one_lookup_per_request(
    flask_app: Flask, platform_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = TokenService(platform_db).create("alice", "laptop", "user").secret
    lookups: list[str] = []

    def user_exists(username: str) -> bool:
        lookups.append(username)
        return True

    monkeypatch.setattr(auth_hook, "_mlflow_user_exists", user_exists)

    for _request in range(2):
        with flask_app.test_request_context(headers=bearer(secret)):
            answers = [auth_hook.authenticate() for _call in range(3)]
        assert {getattr(a, "username", None) for a in answers} == {"alice"}

    # Twice, not six times: kept within a request, never across requests.
    assert lookups == ["alice", "alice"]


def test_server_uses_the_hook_only_with_a_platform_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLPLATFORM_ADMIN_PASSWORD", "platform-admin-secret")
    monkeypatch.setenv("MLFLOW_BASIC_AUTH_FAIL_CLOSED", "false")
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    for name in ("plain", "hooked"):
        (tmp_path / name).mkdir()
    plain = TrackingServer(tmp_path / "plain", 5999, "Adm1n-unit-test-password")
    hooked = TrackingServer(
        tmp_path / "hooked", 5998, "Adm1n-unit-test-password", platform_database_url=url
    )

    plain_ini = plain.write_auth_config().read_text()
    hooked_ini = hooked.write_auth_config().read_text()
    env = hooked.env()

    assert "mlflow.server.auth:authenticate_request_basic_auth" in plain_ini
    assert auth_hook.DATABASE_URL_ENV not in plain.env()
    assert f"authorization_function = {auth_hook.HOOK}" in hooked_ini
    assert env[auth_hook.DATABASE_URL_ENV] == url
    assert env["MLFLOW_BASIC_AUTH_FAIL_CLOSED"] == "true"
    assert "MLPLATFORM_ADMIN_PASSWORD" not in env


# -- against a real tracking server --------------------------------------------------


@dataclass
class TokenServer:
    server: TrackingServer
    db: Database
    admin_password: str
    alice_password: str
    alice_token: str
    log_file: Path
    # Every secret handed out during the tests, for the log check at the end.
    secrets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> tuple[str, str]:
        return ("admin", self.admin_password)

    def create_user(self, username: str) -> str:
        password = f"{username}-pass-" + secrets.token_urlsafe(12)
        answer = httpx.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=self.admin,
        )
        assert answer.status_code == 200, answer.text
        self.secrets.append(password)
        return password

    def create_token(self, owner: str, ttl: timedelta | None = None) -> tuple[str, str]:
        issued = TokenService(self.db).create(owner, "test", "user", ttl)
        self.secrets.append(issued.secret)
        return issued.id, issued.secret

    def whoami(self, headers: dict[str, str]) -> httpx.Response:
        return httpx.get(self.url + CURRENT_USER, headers=headers)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    data_dir = tmp_path_factory.mktemp("token-tracking")
    db_url = f"sqlite:///{data_dir / 'platform.db'}"
    db = Database(db_url)
    db.migrate()
    admin_password = "Adm1n-" + secrets.token_urlsafe(24)
    server = TrackingServer(
        data_dir / "mlflow",
        free_port(),
        admin_password,
        default_permission="NO_PERMISSIONS",
        platform_database_url=db_url,
    )
    log_file = data_dir / "server.log"
    server.start(log_file)
    try:
        server.wait_healthy(timeout=120)
        fixture = TokenServer(server, db, admin_password, "", "", log_file)
        fixture.secrets.append(admin_password)
        fixture.alice_password = fixture.create_user("alice")
        fixture.create_user("bob")
        fixture.alice_token = fixture.create_token("alice")[1]
        yield fixture
    finally:
        server.stop()
        db.close()


@pytest.fixture
def as_alice_by_token(
    token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """MLflow's client in this process speaks as alice with MLFLOW_TRACKING_TOKEN."""
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token_server.alice_token)
    yield


@pytest.mark.integration
def test_auth_config_names_the_hook(token_server: TokenServer) -> None:
    text = token_server.server.auth_config_path.read_text()

    assert f"authorization_function = {auth_hook.HOOK}" in text


@pytest.mark.integration
def test_bearer_token_is_its_owner(token_server: TokenServer) -> None:
    answer = token_server.whoami(bearer(token_server.alice_token))

    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["username"] == "alice"


@pytest.mark.integration
def test_client_with_tracking_token_logs_a_run(
    token_server: TokenServer, as_alice_by_token: None, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=token_server.url)
    experiment_id = client.create_experiment("alice-by-bearer")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "accuracy", 0.9)
    # Artifact upload and download are native FastAPI routes, not Flask ones.
    client.log_text(run.info.run_id, "hello", "note.txt")
    downloaded = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path))
    client.set_terminated(run.info.run_id)

    assert Path(downloaded).read_text() == "hello"
    assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.9}


@pytest.mark.integration
def test_client_with_username_and_token_as_password(
    token_server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", token_server.alice_token)

    client = MlflowClient(tracking_uri=token_server.url)
    experiment_id = client.create_experiment("alice-by-basic-token")

    assert client.get_experiment(experiment_id).name == "alice-by-basic-token"
    answer = token_server.whoami(basic("alice", token_server.alice_token))
    assert answer.json()["user"]["username"] == "alice"


@pytest.mark.integration
def test_password_still_works(token_server: TokenServer) -> None:
    answer = token_server.whoami(basic("alice", token_server.alice_password))

    assert answer.status_code == 200, answer.text
    assert answer.json()["user"]["username"] == "alice"


@pytest.mark.integration
@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda s: basic("bob", s.alice_token), id="another-user"),
        pytest.param(lambda s: basic("admin", s.alice_token), id="the-admin"),
        pytest.param(lambda s: basic("alice", s.alice_token[:-2]), id="truncated"),
        pytest.param(lambda s: bearer("garbage"), id="bearer-garbage"),
        pytest.param(lambda s: bearer("mlp_" + "x" * 43), id="bearer-unknown"),
        pytest.param(lambda s: bearer(s.alice_password), id="bearer-password"),
        pytest.param(lambda s: {}, id="no-header"),
    ],
)
def test_wrong_credentials_are_401(
    token_server: TokenServer, make_headers: object
) -> None:
    headers = make_headers(token_server)  # type: ignore[operator]

    answer = token_server.whoami(headers)

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'


@pytest.mark.integration
def test_revoked_token_stops_at_once(token_server: TokenServer) -> None:
    token_id, secret = token_server.create_token("alice")
    assert token_server.whoami(bearer(secret)).status_code == 200

    TokenService(token_server.db).revoke(ADMIN, token_id)

    assert token_server.whoami(bearer(secret)).status_code == 401
    assert token_server.whoami(basic("alice", secret)).status_code == 401


@pytest.mark.integration
def test_expired_token_is_401(token_server: TokenServer) -> None:
    token_id, secret = token_server.create_token("alice", ttl=timedelta(days=1))
    assert token_server.whoami(bearer(secret)).status_code == 200

    with token_server.db.session() as session:
        session.execute(
            update(Token)
            .where(Token.id == token_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    assert token_server.whoami(bearer(secret)).status_code == 401


@pytest.mark.integration
def test_register_token_is_not_an_access_token(token_server: TokenServer) -> None:
    issued = TokenService(token_server.db).create(
        "admin", "invite", "user", timedelta(hours=1), kind="register"
    )
    token_server.secrets.append(issued.secret)

    assert token_server.whoami(bearer(issued.secret)).status_code == 401


@pytest.mark.integration
def test_token_of_a_deleted_user_stops_at_once(token_server: TokenServer) -> None:
    token_server.create_user("carol")
    _token_id, secret = token_server.create_token("carol")
    assert token_server.whoami(bearer(secret)).status_code == 200

    deleted = httpx.request(
        "DELETE",
        f"{token_server.url}/api/2.0/mlflow/users/delete",
        json={"username": "carol"},
        auth=token_server.admin,
    )
    assert deleted.status_code == 200, deleted.text

    assert token_server.whoami(bearer(secret)).status_code == 401


@pytest.mark.integration
def test_use_is_recorded(token_server: TokenServer) -> None:
    token_id, secret = token_server.create_token("alice")

    token_server.whoami(bearer(secret))

    with token_server.db.session() as session:
        token = session.get(Token, token_id)
        assert token is not None and token.last_used_at is not None


@pytest.mark.integration
def test_fastapi_artifact_route_takes_tokens(token_server: TokenServer) -> None:
    alice, url = bearer(token_server.alice_token), token_server.url
    created = httpx.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": "alice-raw-http"},
        headers=alice,
    )
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = httpx.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id},
        headers=alice,
    ).json()["run"]["info"]
    artifact = (
        f"{url}/api/2.0/mlflow-artifacts/artifacts/"
        f"{experiment_id}/{run['run_id']}/artifacts/raw.txt"
    )
    _bob_token_id, bob_token = token_server.create_token("bob")

    uploaded = httpx.put(artifact, content=b"raw", headers=alice)
    downloaded = httpx.get(artifact, headers=alice)
    refused = httpx.get(artifact, headers=bearer("mlp_" + "x" * 43))
    forbidden = httpx.get(artifact, headers=bearer(bob_token))

    assert uploaded.status_code == 200, uploaded.text
    assert downloaded.content == b"raw"
    assert refused.status_code == 401
    # Authenticated as bob, who has no grant on alice's experiment.
    assert forbidden.status_code == 403


@pytest.mark.integration
def test_signup_creates_nobody(token_server: TokenServer) -> None:
    url = token_server.url
    alice_by_password = basic("alice", token_server.alice_password)
    body = {"username": "mallory", "password": "mallory-pass-123456"}

    anonymous = httpx.get(f"{url}/signup")
    page = httpx.get(f"{url}/signup", headers=alice_by_password)
    by_api = httpx.post(
        f"{url}/api/2.0/mlflow/users/create", json=body, headers=alice_by_password
    )
    by_token = httpx.post(
        f"{url}/api/2.0/mlflow/users/create",
        json=body,
        headers=bearer(token_server.alice_token),
    )
    by_form = httpx.post(
        f"{url}/api/2.0/mlflow/users/create-ui", data=body, headers=alice_by_password
    )

    assert anonymous.status_code == 401
    assert page.status_code == 403
    assert by_api.status_code == 403
    assert by_token.status_code == 403
    assert by_form.status_code == 403
    assert token_server.whoami(basic(*body.values())).status_code == 401


@pytest.mark.integration
def test_zz_no_secret_in_the_server_log(token_server: TokenServer) -> None:
    """Runs last in this module (pytest keeps file order): every secret is issued."""
    log = token_server.log_file.read_text(errors="replace")

    assert len(token_server.secrets) >= 5
    leaked = [i for i, secret in enumerate(token_server.secrets) if secret in log]
    assert leaked == []
