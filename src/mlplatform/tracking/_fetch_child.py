"""Child process of ``fetch_model``: download one model with the caller's credentials.

Run as ``python -m mlplatform.tracking._fetch_child <model_uri> <dest>`` with
``MLFLOW_TRACKING_URI``/``USERNAME``/``PASSWORD`` set in its environment only. MLflow
reads credentials from the process environment, which is why this is a process and not
a thread of the platform API. Prints exactly one JSON line on stdout:

    {"ok": true, "model_dir": "...", "error_code": null, "http_status": null,
     "message": null}

On failure ``error_code`` is MLflow's error code (``RESOURCE_DOES_NOT_EXIST``, ...) or
one of ours (``NO_MLMODEL``, ``UNREACHABLE``, ``INTERNAL``), and ``http_status`` the
status MLflow's server answered, when one is known.
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

# Artifact downloads surface server answers as requests' "404 Client Error: ..." text,
# sometimes wrapped in an MlflowException that itself says INTERNAL_ERROR.
_CLIENT_ERROR = re.compile(r"\b(40[0-9]) Client Error\b")
_CONNECTION_MARKERS = (
    "NewConnectionError",
    "Connection refused",
    "ConnectTimeoutError",
)
_STAGING = ".download"


def main(argv: list[str]) -> int:
    model_uri, dest = argv[1], Path(argv[2])
    try:
        result = _result(True, model_dir=str(download(model_uri, dest)))
    except Exception as exc:
        result = _describe(exc)
    print(json.dumps(_scrubbed(result)), flush=True)
    return 0 if result["ok"] else 1


def download(model_uri: str, dest: Path) -> Path:
    """Download to ``dest/.download``, then move the MLmodel folder's files to dest."""
    import mlflow.artifacts

    staging = dest / _STAGING
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=str(staging)
        )
    )
    model_dir = _find_mlmodel_dir(local)
    for entry in model_dir.iterdir():
        entry.rename(dest / entry.name)
    shutil.rmtree(staging)
    return dest


class NoMLmodel(Exception):
    pass


def _find_mlmodel_dir(local: Path) -> Path:
    # runs:/<run>/model and mlflow-artifacts:/.../artifacts land one level down, in a
    # folder named after the last path segment.
    if (local / "MLmodel").is_file():
        return local
    if not local.is_dir():
        raise NoMLmodel("the URI names a single file, not a model folder")
    candidates = [p for p in local.iterdir() if (p / "MLmodel").is_file()]
    if len(candidates) == 1:
        return candidates[0]
    raise NoMLmodel("the downloaded folder holds no MLmodel file")


def _describe(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, NoMLmodel):
        return _result(False, error_code="NO_MLMODEL", message=str(exc))
    error_code, status = _mlflow_code(exc)
    match = _CLIENT_ERROR.search(str(exc))
    if match and (status is None or status >= 500):
        status, error_code = int(match.group(1)), f"HTTP_{match.group(1)}"
    elif (status is None or status >= 500) and _is_connection_error(exc):
        # MLflow wraps a refused connection in an INTERNAL_ERROR (500) of its own.
        status, error_code = None, "UNREACHABLE"
    return _result(
        False,
        error_code=error_code or "INTERNAL",
        http_status=status,
        message=str(exc) or type(exc).__name__,
    )


def _mlflow_code(exc: Exception) -> tuple[str | None, int | None]:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        mlflow_status: int = exc.get_http_status_code()  # type: ignore[no-untyped-call]
        return exc.error_code, mlflow_status
    # requests' HTTPError from artifact downloads carries the server's answer.
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"HTTP_{status}", status
    return None, None


def _is_connection_error(exc: BaseException) -> bool:
    import requests

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.ConnectionError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return any(marker in str(exc) for marker in _CONNECTION_MARKERS)


def _result(ok: bool, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model_dir": None, "error_code": None, "http_status": None}
    return {"ok": ok, **base, "message": None, **fields}


def _scrubbed(result: dict[str, Any]) -> dict[str, Any]:
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    message = result.get("message")
    if password and isinstance(message, str):
        result["message"] = message.replace(password, "***")
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv))
