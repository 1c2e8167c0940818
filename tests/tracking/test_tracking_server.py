import os
from pathlib import Path

import httpx
import pytest
from tracking_support import READER, TrackingFixture, free_port

from mlplatform.errors import StartupError, Unauthenticated, Unavailable
from mlplatform.tracking.server import TrackingServer, verify_credentials

PASSWORD = "Adm1n-unit-test-password"


def make_server(tmp_path: Path, **kwargs: object) -> TrackingServer:
    return TrackingServer(tmp_path, 5999, PASSWORD, **kwargs)  # type: ignore[arg-type]


def test_command_serves_artifacts_with_basic_auth(tmp_path: Path) -> None:
    cmd = make_server(tmp_path, workers=2).command()

    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert (
        cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow.db"
    )
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path / "artifacts")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--workers") + 1] == "2"
    assert PASSWORD not in " ".join(cmd)


def test_public_url_host_is_allowed(tmp_path: Path) -> None:
    server = make_server(tmp_path, public_url="https://ml.example.org")
    cmd = server.command()

    hosts = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert {"ml.example.org", "127.0.0.1:5999", "localhost:*"} <= set(hosts)
    assert cmd[cmd.index("--cors-allowed-origins") + 1] == "https://ml.example.org"


def test_auth_config_holds_no_password(tmp_path: Path) -> None:
    server = make_server(tmp_path, default_permission="NO_PERMISSIONS")

    text = server.write_auth_config().read_text()

    assert "default_permission = NO_PERMISSIONS" in text
    assert f"database_uri = sqlite:///{tmp_path}/auth.db" in text
    assert "admin_username = admin" in text
    assert PASSWORD not in text


def test_env_passes_password_and_drops_client_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "leaked-from-parent")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "someone-else")

    env = make_server(tmp_path).env()

    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "basic_auth.ini")
    assert "MLFLOW_TRACKING_PASSWORD" not in env
    assert "MLFLOW_AUTH_ADMIN_USERNAME" not in env
    assert (
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
        == make_server(tmp_path).env()["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    )


@pytest.mark.parametrize("bad", [{"workers": 3}, {"default_permission": "ALL"}])
def test_rejects_bad_settings(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_server(tmp_path, **bad)


@pytest.mark.integration
def test_no_command_line_holds_the_password(tracking: TrackingFixture) -> None:
    process = tracking.server.process
    assert process is not None
    assert tracking.admin_password not in " ".join(map(str, process.args))  # type: ignore[arg-type]

    group = os.getpgid(process.pid)
    for cmdline in _cmdlines_of_group(group):
        assert tracking.admin_password not in cmdline
    assert tracking.admin_password not in tracking.server.auth_config_path.read_text()


def _cmdlines_of_group(group: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == group:
                found.append((entry / "cmdline").read_bytes().decode(errors="replace"))
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            continue
    assert len(found) >= 2, "expected the mlflow CLI and its uvicorn worker"
    return found


@pytest.mark.integration
@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost:8080", 200), ("127.0.0.1", 200), ("evil.example:8080", 403)],
)
def test_host_headers(tracking: TrackingFixture, host: str, status: int) -> None:
    response = httpx.get(
        f"{tracking.url}/api/2.0/mlflow/users/current",
        headers={"Host": host},
        auth=("admin", tracking.admin_password),
    )

    assert response.status_code == status


@pytest.mark.integration
def test_verify_credentials(tracking: TrackingFixture) -> None:
    verify_credentials(tracking.url, "admin", tracking.admin_password)
    verify_credentials(tracking.url, *READER)


@pytest.mark.integration
def test_verify_credentials_rejects_wrong_password(tracking: TrackingFixture) -> None:
    wrong = "wrong-" + tracking.admin_password

    with pytest.raises(Unauthenticated) as info:
        verify_credentials(tracking.url, "admin", wrong)

    assert str(info.value) == "MLflow rejected the credentials of user 'admin'"
    assert wrong not in str(info.value)


def test_verify_credentials_unreachable() -> None:
    with pytest.raises(Unavailable, match="does not answer"):
        verify_credentials(f"http://127.0.0.1:{free_port()}", "admin", "x" * 12)


@pytest.mark.integration
def test_startup_error_carries_the_log(tmp_path: Path) -> None:
    # MLflow refuses admin passwords shorter than 12 characters and exits.
    server = TrackingServer(tmp_path, free_port(), "short-pw")
    server.start(tmp_path / "server.log")
    try:
        with pytest.raises(StartupError) as info:
            server.wait_healthy(timeout=120)
    finally:
        server.stop()

    assert "exited with code" in str(info.value)
    assert "at least 12 characters" in str(info.value)
    assert "short-pw" not in str(info.value)
