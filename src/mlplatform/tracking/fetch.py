"""Fetch a model from the tracking server to a local folder, as the caller.

The download runs with the caller's MLflow credentials so MLflow's own permission
checks decide what a user may deploy; the platform's admin credentials are never used.
MLflow takes credentials from process environment variables, which a threaded API
process cannot set per request, so each fetch runs ``_fetch_child`` in a subprocess
whose environment alone holds them (never argv, which ``ps`` shows).

Accepted model URIs, the forms MLflow 3 hands out:

    models:/<name>/<version>      models:/<name>@<alias>      models:/m-<id>
    runs:/<run_id>/<path>         mlflow-artifacts:/<path>

A registered model version's ``source`` is one of these (``models:/m-<id>`` in MLflow
3). Local paths and cloud URIs are refused: they would read the platform's own disk or
cloud credentials instead of the caller's.
"""

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlplatform.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PlatformError,
    Unauthenticated,
    Unavailable,
)
from mlplatform.tracking.requirements import read_requirements

logger = logging.getLogger(__name__)

MODEL_URI_SCHEMES = ("models", "runs", "mlflow-artifacts")
URI_FORMS = (
    "models:/<name>/<version>, models:/<name>@<alias>, models:/m-<id>, "
    "runs:/<run_id>/<path> or mlflow-artifacts:/<path>"
)
_MESSAGE_LIMIT = 300

# The platform's own settings and MLflow credentials must not leak into the child.
_SCRUBBED_PREFIXES = ("MLFLOW_TRACKING_", "MLFLOW_AUTH_", "MLPLATFORM_")


@dataclass(frozen=True)
class FetchResult:
    model_dir: Path  # holds the MLmodel file
    requirements: list[str]  # lines of the model's requirements.txt


def validate_model_uri(model_uri: str) -> None:
    """Raise ``InvalidInput`` unless ``model_uri`` has one of the accepted forms."""
    parts = urlsplit(model_uri)
    path = parts.path.strip("/")
    segments = path.split("/") if path else []
    if parts.scheme not in MODEL_URI_SCHEMES or parts.netloc or not segments:
        raise InvalidInput(f"'{model_uri}' is not a model URI; use {URI_FORMS}")
    if ".." in segments or parts.query or parts.fragment:
        raise InvalidInput(f"'{model_uri}' may not hold '..', a query or a fragment")
    if parts.scheme == "runs" and len(segments) < 2:
        raise InvalidInput(f"'{model_uri}' names no path; use runs:/<run_id>/<path>")
    single = len(segments) == 1 and "@" not in segments[0]
    if parts.scheme == "models" and single and not segments[0].startswith("m-"):
        raise InvalidInput(
            f"'{model_uri}' names no version; use models:/<name>/<version>, "
            "models:/<name>@<alias> or models:/m-<id>"
        )


def fetch_model(
    tracking_uri: str,
    model_uri: str,
    username: str,
    password: str,
    dest: Path,
    timeout: float = 300.0,
) -> FetchResult:
    """Download ``model_uri`` into ``dest`` as ``username`` and return where it is.

    ``dest`` must not exist or be empty. On any failure it is removed entirely.
    """
    validate_model_uri(model_uri)
    if dest.exists() and any(dest.iterdir()):
        raise Conflict(f"{dest} already holds files; fetch into a new folder")
    started = time.monotonic()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        payload = _run_child(tracking_uri, model_uri, username, password, dest, timeout)
        if not payload.get("ok"):
            raise _error_for(payload, tracking_uri, model_uri, username)
        result = FetchResult(model_dir=dest, requirements=read_requirements(dest))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    elapsed = time.monotonic() - started
    logger.info("fetched %s as %s in %.1fs", model_uri, username, elapsed)
    return result


def child_env(tracking_uri: str, username: str, password: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_TRACKING_USERNAME=username,
        MLFLOW_TRACKING_PASSWORD=password,
        # MLflow's default retries a dead server for about two minutes; the caller
        # waits on this fetch, so fail sooner and let them retry.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def _run_child(
    tracking_uri: str,
    model_uri: str,
    username: str,
    password: str,
    dest: Path,
    timeout: float,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "mlplatform.tracking._fetch_child",
        model_uri,
        str(dest),
    ]
    logger.debug("fetching %s as %s: %s", model_uri, username, " ".join(cmd))
    try:
        done = subprocess.run(
            cmd,
            env=child_env(tracking_uri, username, password),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise Unavailable(
            f"fetching model '{model_uri}' from {tracking_uri} took longer than "
            f"{timeout:.0f}s; retry, or check the tracking server's load"
        ) from None
    return _parse_child_output(done, model_uri, username, password)


def _parse_child_output(
    done: subprocess.CompletedProcess[str],
    model_uri: str,
    username: str,
    password: str,
) -> dict[str, Any]:
    for line in reversed(done.stdout.splitlines()):
        payload = _json_object(line)
        if payload is not None:
            message = payload.get("message")
            if isinstance(message, str):
                payload["message"] = scrub(message, username, password)
            return payload
    stderr = done.stderr.strip().splitlines()
    last = scrub(stderr[-1], username, password) if stderr else "no output"
    raise PlatformError(
        f"fetching model '{model_uri}' failed: the fetch process exited with code "
        f"{done.returncode} ({last})"
    )


def _json_object(line: str) -> dict[str, Any] | None:
    # MLflow or a model flavor may print to stdout too; the report is the last object.
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and "ok" in value else None


def _error_for(
    payload: dict[str, Any], tracking_uri: str, model_uri: str, username: str
) -> PlatformError:
    """Map the child's report of an MLflow failure onto the platform's error tree."""
    code = str(payload.get("error_code") or "")
    status = payload.get("http_status")
    detail = _short(str(payload.get("message") or ""), code)
    if status == 401 or code == "UNAUTHENTICATED":
        return Unauthenticated(f"MLflow rejected the credentials of user '{username}'")
    if status == 403 or code == "PERMISSION_DENIED":
        return PermissionDenied(
            f"user '{username}' may not read model '{model_uri}'; an MLflow admin can "
            "grant READ on the registered model and on the experiment holding it"
        )
    if status == 404 or code == "RESOURCE_DOES_NOT_EXIST" or _is_missing_alias(detail):
        return NotFound(f"model '{model_uri}' not found: {detail}")
    if code == "NO_MLMODEL":
        return InvalidInput(f"'{model_uri}' is not an MLflow model: {detail}")
    if code == "UNREACHABLE":
        return Unavailable(f"the tracking server at {tracking_uri} does not answer")
    if status == 400 or detail.startswith("Not a proper"):
        return InvalidInput(f"MLflow refused the model URI '{model_uri}': {detail}")
    return PlatformError(f"fetching model '{model_uri}' failed: {detail}")


def _is_missing_alias(detail: str) -> bool:
    # MLflow answers an unknown alias with 400 INVALID_PARAMETER_VALUE, not 404.
    return detail.startswith("Registered model alias") and "not found" in detail


def _short(message: str, code: str) -> str:
    lines = message.strip().splitlines() or ["no detail"]
    # Artifact download failures put the server's answer on a later line.
    first = next((line for line in lines if "Client Error" in line), lines[0])
    first = first.split(" Response text:")[0]
    if code and first.startswith(f"{code}: "):
        first = first[len(code) + 2 :]
    return first[:_MESSAGE_LIMIT]


def scrub(text: str, username: str, password: str) -> str:
    """Remove ``password`` and its Basic-auth encoding from ``text``."""
    if not password:
        return text
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return text.replace(token, "***").replace(password, "***")
