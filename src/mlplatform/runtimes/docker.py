"""The docker runtime: each deployment is MLflow's scoring server in its own container.

The container runs the command the process runtime runs (uvicorn on
``mlflow.pyfunc.scoring_server.app:app``), from a runtime image holding the model's
dependencies (see ``images``), with the fetched model folder mounted read-only at
``/model``. What the container gets, on purpose:

- an environment built from nothing: the caller's MLflow credentials are in neither
  the environment nor any image layer (the model files are fetched by the platform);
- a non-root user, CPU and memory limits from a size tier, no capabilities, a
  read-only root filesystem with a small ``/tmp``, and a health check on ``/ping``;
- Docker's ``unless-stopped`` restart policy, so a crashed server comes back with no
  platform process running, and again after the engine restarts; a poller thread
  reports status changes and restarts what Docker does not (a container stopped from
  outside, or one whose health check fails);
- its port published on ``127.0.0.1`` at a host port chosen here. Traefik runs as a
  host process, so a loopback port is how it reaches a container, with the same URL
  shape as the process runtime; a shared Docker network would need Traefik in a
  container too. The port is fixed at creation so that it survives restarts, which an
  ephemeral published port does not;
- labels naming the platform's state folder, deploy server, deployment and model URI,
  so that the next platform process finds its containers again (adopt, or remove as
  orphans) and never touches those of another platform on the same engine.

The engine must run on the platform's host: the model folder is a bind mount and the
port is on loopback.
"""

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import requests
from docker.models.containers import Container
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

from mlplatform.errors import InvalidInput
from mlplatform.runtimes import images
from mlplatform.runtimes.base import (
    Endpoint,
    Runtime,
    RuntimeError_,
    ServingSpec,
    StatusListener,
)
from mlplatform.runtimes.process import APP, LOG_NAME, MARKER_VAR, MODEL_PATH_VAR

logger = logging.getLogger(__name__)

LABEL_MANAGED = "mlplatform.managed"
LABEL_STATE_DIR = "mlplatform.state-dir"
LABEL_DEPLOYMENT_ID = "mlplatform.deployment-id"
LABEL_DEPLOY_SERVER = "mlplatform.deploy-server"
LABEL_DEPLOYMENT = "mlplatform.deployment"
LABEL_MODEL_URI = "mlplatform.model-uri"

CONTAINER_PORT = 8080
MODEL_MOUNT = "/model"
DEFAULT_SIZE = "mid"


class DockerUnavailable(RuntimeError_):
    """No Docker engine answers; the message says how to start one."""

    status_code = 503


@dataclass(frozen=True)
class SizeLimits:
    cpus: float
    memory_mb: int


# Roughly the small / medium / large tiers of hosted endpoints. An idle iris model
# takes about 200 MB in its container, so low still leaves room for real models.
SIZES: Mapping[str, SizeLimits] = {
    "low": SizeLimits(cpus=0.5, memory_mb=1024),
    "mid": SizeLimits(cpus=1.0, memory_mb=2048),
    "high": SizeLimits(cpus=2.0, memory_mb=4096),
}


@dataclass(frozen=True)
class ManagedContainer:
    """A container of this platform, as the engine reports it."""

    container_id: str
    name: str
    deployment_id: str
    state: str  # Docker's: running, restarting, exited, ...
    image: str
    labels: Mapping[str, str]


_POLL_INTERVAL = 2.0
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0
_STOP_GRACE = 10
_LOG_TAIL = 20
_PING_TIMEOUT = 2.0
_ADOPT_WAIT = 30.0  # a container just restarted by the engine may still be loading
_PORT_ATTEMPTS = 5
_HEALTH_SECONDS = {"interval": 10, "timeout": 5, "start_period": 60}
_HEALTH_RETRIES = 3
_NANO = 10**9
_HEALTH_PROBE = (
    "import sys, urllib.request; "
    f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/ping', "
    "timeout=4).status != 200)"
)


@dataclass(eq=False)
class _Deployment:
    """What the runtime knows about one deployment's container; guarded by the lock."""

    spec: ServingSpec
    container_id: str = ""  # empty while start() is still creating it
    port: int = 0
    status: str = "starting"
    awaiting_ready: bool = False
    backoff: float = _FIRST_BACKOFF
    retry_at: float = 0.0  # earliest time.monotonic() of our next restart attempt

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self) -> Endpoint:
        return Endpoint(url=self.url, ref=self.container_id or None)


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect() -> docker.DockerClient:
    """A client of the engine, or ``DockerUnavailable`` saying how to start one."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DockerUnavailable(
            f"Docker engine not reachable at {engine_url()}; start it "
            "(scripts/ensure-docker.sh or `dockerd`)"
        ) from exc
    return client


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(
        self,
        state_dir: Path,
        on_status: StatusListener | None = None,
        *,
        base_image: str | None = None,
        sizes: Mapping[str, SizeLimits] | None = None,
    ) -> None:
        """``base_image`` None picks one present locally or pulls the public one.

        The engine may be down now: every call that needs it then raises
        ``DockerUnavailable``, and the runtime connects once it answers.
        """
        self._state_dir = state_dir
        self._on_status = on_status
        self._configured_base = base_image
        self._base_image: str | None = None
        self._sizes = dict(sizes or SIZES)
        # Containers are scoped to one platform home, not to the engine as a whole.
        self._scope = str(state_dir.resolve())
        self._lock = threading.Lock()
        self._client: docker.DockerClient | None = None
        self._deployments: dict[str, _Deployment] = {}
        self._final: dict[str, str] = {}
        self._closing = threading.Event()
        with contextlib.suppress(DockerUnavailable):
            self._docker()
        self._thread = threading.Thread(
            target=self._poll, name="docker-runtime-poller", daemon=True
        )
        self._thread.start()

    # -- the Runtime contract ---------------------------------------------------------

    def start(self, spec: ServingSpec) -> Endpoint:
        """Start the container; first builds the runtime image if it is missing.

        That build (tens of seconds with a cold cache) happens here, before the
        deploy timeout of ``wait_ready`` starts to count.
        """
        if self._closing.is_set():
            raise RuntimeError_("the docker runtime is closed; it starts nothing")
        self._check_spec(spec)
        client = self._docker()
        with self._lock:
            if spec.deployment_id in self._deployments:
                raise RuntimeError_(
                    f"deployment {spec.deployment_id} is already running; stop it first"
                )
            record = _Deployment(spec=spec)
            self._deployments[spec.deployment_id] = record
        try:
            container, port = self._create(client, spec)
        except Exception:
            with self._lock:
                del self._deployments[spec.deployment_id]
                self._final[spec.deployment_id] = "failed"
            raise
        with self._lock:
            record.container_id, record.port = container.id or "", port
        logger.info(
            "deployment %s: container %s on %s",
            spec.deployment_id,
            container.short_id,
            record.url,
        )
        self._emit(spec.deployment_id, "starting")
        return record.endpoint()

    def wait_ready(self, deployment_id: str, timeout: float) -> Endpoint:
        record = self._claim_readiness(deployment_id)
        deadline = time.monotonic() + timeout
        delay = 0.1
        try:
            while True:
                reason = self._startup_failure(record)
                if reason is None and _ping(record.url):
                    break
                if reason is None and time.monotonic() >= deadline:
                    reason = f"/ping did not answer 200 within {timeout:g} s"
                if reason is not None:
                    self._fail(record, reason)
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)
        finally:
            with self._lock:
                record.awaiting_ready = False
        self._set_status(record, "running")
        return record.endpoint()

    def adopt(self, spec: ServingSpec, previous: Endpoint) -> Endpoint | None:
        with self._lock:
            current = self._deployments.get(spec.deployment_id)
        if current is not None:
            return current.endpoint()
        client = self._docker()
        container = self._find(client, spec.deployment_id, previous.ref)
        if container is None:
            logger.info("deployment %s: no container to adopt", spec.deployment_id)
            return None
        reason = _unadoptable(container, spec)
        port = _host_port(container)
        record = _Deployment(spec=spec, container_id=container.id or "", port=port)
        if reason is None and not _wait_ping(record.url, _ADOPT_WAIT):
            reason = f"{record.url}/ping does not answer"
        if reason is not None:
            logger.warning(
                "deployment %s: container %s %s -> removing it",
                spec.deployment_id,
                container.short_id,
                reason,
            )
            self._remove(container, spec.deployment_id)
            return None
        record.status = "running"
        with self._lock:
            self._deployments[spec.deployment_id] = record
            self._final.pop(spec.deployment_id, None)
        logger.info(
            "deployment %s: adopted container %s at %s",
            spec.deployment_id,
            container.short_id,
            record.url,
        )
        self._emit(spec.deployment_id, "running")
        return record.endpoint()

    def stop(self, deployment_id: str) -> None:
        self._stop(deployment_id, "stopped")

    def status(self, deployment_id: str) -> str:
        with self._lock:
            record = self._deployments.get(deployment_id)
            if record is not None:
                return record.status
            return self._final.get(deployment_id, "stopped")

    def logs(self, deployment_id: str, tail: int | None = None) -> str:
        container = None
        with contextlib.suppress(DockerUnavailable):
            container = self._find(self._docker(), deployment_id)
        if container is not None:
            return _container_logs(container, tail)
        # Removed containers leave what they printed in the deployment's folder.
        path = self._deployment_dir(deployment_id) / LOG_NAME
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(True)
        except FileNotFoundError:
            return ""
        return "".join(lines[-tail:] if tail is not None else lines)

    def endpoint(self, deployment_id: str) -> Endpoint | None:
        with self._lock:
            record = self._deployments.get(deployment_id)
            if record is None or not record.container_id:
                return None
            return record.endpoint()

    def close(self, stop_servers: bool) -> None:
        self._closing.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if stop_servers:
            with self._lock:
                deployment_ids = list(self._deployments)
            for deployment_id in deployment_ids:
                self.stop(deployment_id)

    # -- beyond the contract: reconcile and images ------------------------------------

    def check_engine(self) -> None:
        """Raise ``DockerUnavailable`` unless the engine answers."""
        self._docker()

    def check_available(self) -> None:
        self.check_engine()

    def find_managed(self) -> list[ManagedContainer]:
        """Every container of this platform home, running or not."""
        client = self._docker()
        return [
            ManagedContainer(
                container_id=c.id or "",
                name=c.name or "",
                deployment_id=c.labels.get(LABEL_DEPLOYMENT_ID, ""),
                state=str(c.attrs.get("State", {}).get("Status", "unknown")),
                image=str(c.attrs.get("Config", {}).get("Image", "")),
                labels=dict(c.labels),
            )
            for c in self._managed(client)
        ]

    def remove_orphans(self, deployment_ids: Collection[str]) -> list[str]:
        """Remove containers of deployments not in ``deployment_ids``; return ids."""
        client = self._docker()
        removed = []
        for container in self._managed(client):
            deployment_id = container.labels.get(LABEL_DEPLOYMENT_ID, "")
            if deployment_id in deployment_ids:
                continue
            logger.warning(
                "container %s of unknown deployment %s: %s -> removed",
                container.short_id,
                deployment_id or "(none)",
                container.status,
            )
            self._remove(container, deployment_id)
            removed.append(deployment_id)
        return removed

    def prune_images(self) -> list[str]:
        """Remove runtime images no container uses; return their tags."""
        return images.prune_runtime_images(self._docker())

    def image_for(self, model_dir: Path) -> images.BuiltImage:
        """The runtime image for a model, built now if it is missing."""
        client = self._docker()
        return images.runtime_image(client, model_dir, self._resolve_base(client))

    # -- the engine and containers ----------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is not None:
                return self._client
        client = connect()
        with self._lock:
            if self._client is None:
                self._client = client
                logger.info("docker engine at %s: connected", engine_url())
            return self._client

    def _resolve_base(self, client: docker.DockerClient) -> str:
        if self._base_image is None:
            self._base_image = images.resolve_base_image(client, self._configured_base)
            logger.info("docker runtime: base image %s", self._base_image)
        return self._base_image

    def _check_spec(self, spec: ServingSpec) -> None:
        self._deployment_dir(spec.deployment_id)
        if not (spec.model_dir / "MLmodel").is_file():
            raise RuntimeError_(
                f"no MLmodel file in {spec.model_dir}; fetch the model before serving"
            )
        if spec.size not in self._sizes:
            known = ", ".join(self._sizes)
            raise InvalidInput(f"unknown size {spec.size!r}; known sizes: {known}")
        unreadable = _unreadable_by_others(spec.model_dir)
        if unreadable is not None:
            raise RuntimeError_(
                f"{unreadable} is not readable by the container's user (uid "
                f"{images.USER_ID}); make the model folder world-readable "
                f"(chmod -R o+rX {spec.model_dir}) or run the platform with umask 022"
            )

    def _create(
        self, client: docker.DockerClient, spec: ServingSpec
    ) -> tuple[Container, int]:
        image = images.runtime_image(
            client, spec.model_dir, self._resolve_base(client)
        ).tag
        stale = self._find(client, spec.deployment_id)
        if stale is not None:
            logger.warning(
                "deployment %s: stale container %s -> removing it",
                spec.deployment_id,
                stale.short_id,
            )
            self._remove(stale, spec.deployment_id)
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            container = client.containers.create(
                image, **self._container_options(spec, port)
            )
            try:
                container.start()
            except docker.errors.APIError as exc:
                container.remove(force=True)
                # Another process took the port between our probe and Docker's bind.
                taken = "allocated" in str(exc) or "in use" in str(exc)
                if taken and attempt + 1 < _PORT_ATTEMPTS:
                    continue
                raise RuntimeError_(
                    f"could not start the container of deployment "
                    f"{spec.deployment_id}: {exc.explanation or exc}"
                ) from exc
            return container, port
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _container_options(self, spec: ServingSpec, port: int) -> dict[str, Any]:
        limits = self._sizes[spec.size]
        return {
            "command": [
                f"{images.VENV}/bin/python",
                "-m",
                "uvicorn",
                "--host",
                "0.0.0.0",
                "--port",
                str(CONTAINER_PORT),
                "--workers",
                str(spec.workers),
                APP,
            ],
            "name": self._container_name(spec.deployment_id),
            "environment": _container_env(spec),
            "user": f"{images.USER_ID}:{images.USER_ID}",
            "labels": self._labels(spec),
            "volumes": {
                str(spec.model_dir.resolve()): {"bind": MODEL_MOUNT, "mode": "ro"}
            },
            "ports": {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
            "nano_cpus": int(limits.cpus * _NANO),
            "mem_limit": f"{limits.memory_mb}m",
            "memswap_limit": f"{limits.memory_mb}m",  # the same: no swap on top
            "pids_limit": 512,
            "restart_policy": {"Name": "unless-stopped"},
            "healthcheck": {
                "test": ["CMD", f"{images.VENV}/bin/python", "-c", _HEALTH_PROBE],
                **{key: value * _NANO for key, value in _HEALTH_SECONDS.items()},
                "retries": _HEALTH_RETRIES,
            },
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=256m"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "log_config": {
                "type": "json-file",
                "config": {"max-size": "10m", "max-file": "3"},
            },
        }

    def _labels(self, spec: ServingSpec) -> dict[str, str]:
        return {
            **spec.labels,
            LABEL_MANAGED: "true",
            LABEL_STATE_DIR: self._scope,
            LABEL_DEPLOYMENT_ID: spec.deployment_id,
        }

    def _container_name(self, deployment_id: str) -> str:
        scope = hashlib.sha256(self._scope.encode()).hexdigest()[:8]
        safe = "".join(c if c.isalnum() or c in "_.-" else "-" for c in deployment_id)
        return f"mlplatform-{scope}-{safe}"

    def _managed(
        self, client: docker.DockerClient, deployment_id: str | None = None
    ) -> list[Container]:
        labels = [f"{LABEL_MANAGED}=true", f"{LABEL_STATE_DIR}={self._scope}"]
        if deployment_id is not None:
            labels.append(f"{LABEL_DEPLOYMENT_ID}={deployment_id}")
        found: list[Container] = client.containers.list(
            all=True, filters={"label": labels}
        )
        return found

    def _find(
        self,
        client: docker.DockerClient,
        deployment_id: str,
        container_id: str | None = None,
    ) -> Container | None:
        if container_id:
            with contextlib.suppress(docker.errors.NotFound):
                container: Container = client.containers.get(container_id)
                if (
                    container.labels.get(LABEL_DEPLOYMENT_ID) == deployment_id
                    and container.labels.get(LABEL_STATE_DIR) == self._scope
                ):
                    return container
        found = self._managed(client, deployment_id)
        return found[0] if found else None

    def _remove(self, container: Container, deployment_id: str) -> None:
        """Keep what the container printed, then stop and remove it."""
        if deployment_id:
            with contextlib.suppress(docker.errors.APIError, InvalidInput):
                self._save_logs(container, deployment_id)
        with contextlib.suppress(docker.errors.NotFound):
            container.stop(timeout=_STOP_GRACE)
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def _save_logs(self, container: Container, deployment_id: str) -> None:
        directory = self._deployment_dir(deployment_id)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with (directory / LOG_NAME).open("a", encoding="utf-8") as log:
            log.write(f"=== {stamp} mlplatform: container {container.short_id}\n")
            log.write(_container_logs(container, None))

    def _deployment_dir(self, deployment_id: str) -> Path:
        # The id names a folder: refuse anything that could step outside state_dir.
        if not deployment_id or deployment_id in {".", ".."} or "/" in deployment_id:
            raise InvalidInput(f"deployment id {deployment_id!r} is not a valid name")
        return self._state_dir / deployment_id

    # -- readiness and stopping -------------------------------------------------------

    def _claim_readiness(self, deployment_id: str) -> _Deployment:
        with self._lock:
            record = self._deployments.get(deployment_id)
            if record is None or not record.container_id:
                raise RuntimeError_(
                    f"no container for deployment {deployment_id}; start it first"
                )
            record.awaiting_ready = True
            return record

    def _startup_failure(self, record: _Deployment) -> str | None:
        try:
            container = self._docker().containers.get(record.container_id)
        except docker.errors.NotFound:
            return "the container is gone"
        state = container.attrs.get("State", {})
        if state.get("Status") in {"exited", "dead", "restarting"} or (
            container.attrs.get("RestartCount", 0) > 0
        ):
            return f"the server exited with code {state.get('ExitCode', 'unknown')}"
        return None

    def _fail(self, record: _Deployment, reason: str) -> None:
        deployment_id = record.spec.deployment_id
        tail = ""
        with contextlib.suppress(docker.errors.APIError, DockerUnavailable):
            container = self._docker().containers.get(record.container_id)
            tail = _container_logs(container, _LOG_TAIL).rstrip("\n")
        self._stop(deployment_id, "failed")
        raise RuntimeError_(
            f"model server for deployment {deployment_id} failed to start: "
            f"{reason}\n{tail}"
        )

    def _stop(self, deployment_id: str, final_status: str) -> None:
        with self._lock:
            record = self._deployments.pop(deployment_id, None)
            if record is not None:
                self._final[deployment_id] = final_status
        try:
            client = self._docker()
        except DockerUnavailable:
            if record is None:
                return  # nothing of ours is known to run: nothing to stop
            raise
        container_id = record.container_id if record is not None else None
        # A container restarted from outside could have a twin: remove every one.
        while container := self._find(client, deployment_id, container_id):
            self._remove(container, deployment_id)
            container_id = None
        if record is not None:
            logger.info("deployment %s: %s", deployment_id, final_status)
            self._emit(deployment_id, final_status)

    # -- status -----------------------------------------------------------------------

    def _set_status(self, record: _Deployment, status: str) -> None:
        with self._lock:
            if self._deployments.get(record.spec.deployment_id) is not record:
                return
            changed = record.status != status
            record.status = status
            if status == "running":
                record.backoff = _FIRST_BACKOFF
        if changed:
            logger.info(
                "deployment %s: %s at %s", record.spec.deployment_id, status, record.url
            )
            self._emit(record.spec.deployment_id, status)

    def _poll(self) -> None:
        while not self._closing.wait(_POLL_INTERVAL):
            with self._lock:
                records = [
                    r
                    for r in self._deployments.values()
                    if r.container_id and not r.awaiting_ready
                ]
            for record in records:
                try:
                    self._check(record)
                except (docker.errors.DockerException, requests.RequestException):
                    logger.warning(
                        "deployment %s: the engine does not answer",
                        record.spec.deployment_id,
                        exc_info=True,
                    )
                except Exception:
                    # The one poller thread must outlive any single bad container.
                    logger.exception(
                        "polling deployment %s failed", record.spec.deployment_id
                    )

    def _check(self, record: _Deployment) -> None:
        client = self._docker()
        try:
            container: Container = client.containers.get(record.container_id)
        except docker.errors.NotFound:
            self._recreate(record, client)
            return
        state = container.attrs.get("State", {})
        status = state.get("Status")
        health = state.get("Health", {}).get("Status")
        if status == "running" and health == "unhealthy":
            # Docker only reports a failing health check; restarting is ours to do.
            self._restart(record, container, "its health check fails")
        elif status == "running":
            self._set_status(record, "running" if _ping(record.url) else "starting")
        elif status == "restarting":
            self._set_status(record, "restarting")
        elif status == "paused":
            container.unpause()
        else:
            # Docker restarts crashes itself; it leaves alone a container stopped or
            # killed through its API, which nobody but this runtime should do.
            code = state.get("ExitCode", "unknown")
            self._restart(record, container, f"exited with code {code}")

    def _restart(self, record: _Deployment, container: Container, reason: str) -> None:
        if time.monotonic() < record.retry_at:
            return
        logger.warning(
            "deployment %s: container %s %s -> restarting it",
            record.spec.deployment_id,
            container.short_id,
            reason,
        )
        self._set_status(record, "restarting")
        self._back_off(record)
        container.restart(timeout=_STOP_GRACE)

    def _recreate(self, record: _Deployment, client: docker.DockerClient) -> None:
        if time.monotonic() < record.retry_at:
            return
        logger.warning(
            "deployment %s: container %s is gone -> creating a new one",
            record.spec.deployment_id,
            record.container_id[:12],
        )
        self._set_status(record, "restarting")
        self._back_off(record)
        container, port = self._create(client, record.spec)
        with self._lock:
            current = self._deployments.get(record.spec.deployment_id) is record
            if current:
                record.container_id, record.port = container.id or "", port
                record.status = "starting"
        if not current:
            # stop() ran while we were creating it: the new container has no owner.
            self._remove(container, record.spec.deployment_id)
            return
        self._emit(record.spec.deployment_id, "starting")

    def _back_off(self, record: _Deployment) -> None:
        with self._lock:
            record.retry_at = time.monotonic() + record.backoff
            record.backoff = min(record.backoff * 2, _MAX_BACKOFF)


# -- helpers ---------------------------------------------------------------------------


def _container_env(spec: ServingSpec) -> dict[str, str]:
    # Built from nothing: the platform's environment holds tracking credentials and
    # platform secrets that a model's code must never see.
    setting = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    seconds: int = setting.get()  # type: ignore[no-untyped-call]
    return {
        MODEL_PATH_VAR: MODEL_MOUNT,
        setting.name: str(seconds),
        MARKER_VAR: spec.deployment_id,
    }


def _unreadable_by_others(model_dir: Path) -> Path | None:
    """The first file or folder of the model the container's user cannot read."""
    for path in [model_dir, *model_dir.rglob("*")]:
        mode = path.stat().st_mode
        needed = 0o005 if path.is_dir() else 0o004
        if mode & needed != needed:
            return path
    return None


def _unadoptable(container: Container, spec: ServingSpec) -> str | None:
    status = container.attrs.get("State", {}).get("Status")
    if status != "running":
        return f"is {status}"
    mounts = container.attrs.get("Mounts", [])
    sources = {m.get("Source") for m in mounts if m.get("Destination") == MODEL_MOUNT}
    if str(spec.model_dir.resolve()) not in sources:
        return "serves another model folder"
    return None


def _host_port(container: Container) -> int:
    bindings = container.attrs.get("HostConfig", {}).get("PortBindings") or {}
    for binding in bindings.get(f"{CONTAINER_PORT}/tcp") or []:
        with contextlib.suppress(TypeError, ValueError):
            return int(binding.get("HostPort", ""))
    return 0


def _container_logs(container: Container, tail: int | None) -> str:
    raw: bytes = container.logs(
        stdout=True, stderr=True, tail="all" if tail is None else tail
    )
    return raw.decode("utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(url: str) -> bool:
    try:
        # trust_env=False: an HTTP(S)_PROXY of the platform must not catch loopback.
        response = httpx.get(f"{url}/ping", timeout=_PING_TIMEOUT, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _wait_ping(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while not _ping(url):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    return True
