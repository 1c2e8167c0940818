from pathlib import Path

import pytest
from tracking_support import MODEL_NAME, READER, READER2, TrackingFixture, free_port

from mlplatform.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PlatformError,
    Unauthenticated,
    Unavailable,
)
from mlplatform.tracking.fetch import (
    _error_for,
    child_env,
    fetch_model,
    scrub,
    validate_model_uri,
)

UNKNOWN_RUN = "0" * 32


def uri_forms(fx: TrackingFixture) -> dict[str, str]:
    return {
        "version": f"models:/{MODEL_NAME}/1",
        "alias": f"models:/{MODEL_NAME}@champion",
        "logged-model": f"models:/{fx.model_id}",
        "run": f"runs:/{fx.run_id}/model",
        "artifacts": (
            f"mlflow-artifacts:/{fx.experiment_id}/models/{fx.model_id}/artifacts"
        ),
        "version-source": fx.version_source,
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "form", ["version", "alias", "logged-model", "run", "artifacts", "version-source"]
)
def test_every_uri_form_downloads_a_model(
    tracking: TrackingFixture, tmp_path: Path, form: str
) -> None:
    dest = tmp_path / "model"

    result = fetch_model(tracking.url, uri_forms(tracking)[form], *READER, dest)

    assert result.model_dir == dest
    assert (dest / "MLmodel").is_file()
    assert not (dest / ".download").exists()
    assert any(line.startswith("scikit-learn==") for line in result.requirements)


@pytest.mark.integration
def test_version_source_is_a_logged_model_uri(tracking: TrackingFixture) -> None:
    # MLflow 3 records the logged model, not the run, as a version's source.
    assert tracking.version_source == f"models:/{tracking.model_id}"


@pytest.mark.integration
@pytest.mark.parametrize(
    "uri",
    [
        f"models:/{MODEL_NAME}/7",
        f"models:/{MODEL_NAME}@nope",
        "models:/no-such-model/1",
        "models:/m-00000000000000000000000000000000",
        f"runs:/{UNKNOWN_RUN}/model",
    ],
)
def test_unknown_model_is_not_found(
    tracking: TrackingFixture, tmp_path: Path, uri: str
) -> None:
    dest = tmp_path / "model"

    with pytest.raises(NotFound) as info:
        fetch_model(tracking.url, uri, "admin", tracking.admin_password, dest)

    assert str(info.value).startswith(f"model '{uri}' not found: ")
    assert tracking.admin_password not in str(info.value)
    assert not dest.exists()


@pytest.mark.integration
@pytest.mark.parametrize("path", ["nothing-here", "../model"])
def test_unknown_artifact_path(
    tracking: TrackingFixture, tmp_path: Path, path: str
) -> None:
    uri = f"runs:/{tracking.run_id}/{path}"
    expected = NotFound if ".." not in path else InvalidInput

    with pytest.raises(expected, match=uri.replace(".", r"\.")):
        fetch_model(tracking.url, uri, *READER, tmp_path / "model")

    assert not (tmp_path / "model").exists()


@pytest.mark.integration
def test_wrong_password_is_unauthenticated(
    tracking: TrackingFixture, tmp_path: Path
) -> None:
    wrong = "Wrong-" + READER[1]

    with pytest.raises(Unauthenticated) as info:
        fetch_model(tracking.url, f"models:/{MODEL_NAME}/1", READER[0], wrong, tmp_path)

    assert str(info.value) == f"MLflow rejected the credentials of user '{READER[0]}'"
    assert wrong not in str(info.value)
    assert not tmp_path.exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    "form", ["version", "alias", "logged-model", "run", "artifacts"]
)
def test_user_without_permission_is_denied(
    tracking: TrackingFixture, tmp_path: Path, form: str
) -> None:
    uri = uri_forms(tracking)[form]

    with pytest.raises(PermissionDenied) as info:
        fetch_model(tracking.url, uri, *READER2, tmp_path / "model")

    assert f"model '{uri}'" in str(info.value)
    assert READER2[1] not in str(info.value)
    assert not (tmp_path / "model").exists()


@pytest.mark.integration
def test_a_single_file_is_not_a_model(
    tracking: TrackingFixture, tmp_path: Path
) -> None:
    uri = f"runs:/{tracking.run_id}/model/MLmodel"

    with pytest.raises(InvalidInput, match="is not an MLflow model"):
        fetch_model(tracking.url, uri, *READER, tmp_path / "model")

    assert not (tmp_path / "model").exists()


def test_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(Unavailable, match="does not answer"):
        fetch_model(
            url, f"models:/{MODEL_NAME}/1", *READER, tmp_path / "m", timeout=120
        )

    assert not (tmp_path / "m").exists()


def test_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")

    with pytest.raises(Conflict):
        fetch_model("http://127.0.0.1:1", "models:/iris/1", *READER, tmp_path)

    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "uri",
    [
        "/etc",
        "file:///etc/passwd",
        "s3://bucket/model",
        "models:/iris",
        "models://other-host/iris/1",
        "mlflow-artifacts://evil.example/0/model",
        "runs:/abc",
        "models:/",
        "mlflow-artifacts:/0/../../etc",
    ],
)
def test_invalid_uri_is_refused_before_any_download(tmp_path: Path, uri: str) -> None:
    dest = tmp_path / "model"

    with pytest.raises(InvalidInput):
        fetch_model("http://127.0.0.1:1", uri, *READER, dest)

    assert not dest.exists()


@pytest.mark.parametrize(
    "uri",
    ["models:/iris/1", "models:/iris@champion", "models:/m-1234", "runs:/abc/model"],
)
def test_valid_uris(uri: str) -> None:
    validate_model_uri(uri)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"error_code": "UNAUTHENTICATED", "http_status": 401}, Unauthenticated),
        ({"error_code": "HTTP_403", "http_status": 403}, PermissionDenied),
        ({"error_code": "RESOURCE_DOES_NOT_EXIST", "http_status": 404}, NotFound),
        (
            {
                "error_code": "INVALID_PARAMETER_VALUE",
                "http_status": 400,
                "message": "INVALID_PARAMETER_VALUE: Registered model alias x "
                "not found.",
            },
            NotFound,
        ),
        ({"error_code": "INVALID_PARAMETER_VALUE", "http_status": 400}, InvalidInput),
        ({"error_code": "NO_MLMODEL"}, InvalidInput),
        ({"error_code": "UNREACHABLE"}, Unavailable),
        ({"error_code": "INTERNAL", "message": "boom"}, PlatformError),
    ],
)
def test_error_mapping(payload: dict[str, object], expected: type[Exception]) -> None:
    error = _error_for(payload, "http://t", "models:/iris/1", "alice")

    assert type(error) is expected


def test_child_env_holds_only_the_callers_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "platform-token")
    monkeypatch.setenv("MLPLATFORM_ADMIN_PASSWORD", "platform-admin")

    env = child_env("http://t", "alice", "alice-pw")

    assert env["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert env["MLFLOW_TRACKING_PASSWORD"] == "alice-pw"
    assert "MLFLOW_TRACKING_TOKEN" not in env
    assert "MLPLATFORM_ADMIN_PASSWORD" not in env


def test_scrub_removes_password_and_basic_token() -> None:
    text = "pw=s3cret-pass header=Basic YWxpY2U6czNjcmV0LXBhc3M="

    assert scrub(text, "alice", "s3cret-pass") == "pw=*** header=Basic ***"
