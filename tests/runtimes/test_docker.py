"""The docker runtime against a real engine and real MLflow scoring servers.

Needs a running engine (scripts/ensure-docker.sh) and a Python base image: present
already, or built offline once per machine by the session fixture (about a minute).
"""

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import httpx
import mlflow.sklearn
import pandas as pd
import pytest
from docker.models.containers import Container
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlplatform.runtimes import images
from mlplatform.runtimes.base import Endpoint, RuntimeError_, ServingSpec
from mlplatform.runtimes.docker import (
    LABEL_DEPLOY_SERVER,
    LABEL_DEPLOYMENT,
    LABEL_DEPLOYMENT_ID,
    LABEL_MANAGED,
    LABEL_MODEL_URI,
    SIZES,
    DockerRuntime,
    DockerUnavailable,
    connect,
)

READY_TIMEOUT = 120.0
# Building the runtime image downloads MLflow's wheels on a cold cache.
START_TIMEOUT = 900.0


@dataclass
class IrisModel:
    path: Path
    model: LogisticRegression
    features: pd.DataFrame


@dataclass
class StatusLog:
    events: list[tuple[str, str]]
    lock: threading.Lock

    def __call__(self, deployment_id: str, status: str) -> None:
        with self.lock:
            self.events.append((deployment_id, status))

    def of(self, deployment_id: str) -> list[str]:
        with self.lock:
            return [status for id_, status in self.events if id_ == deployment_id]


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        client = connect()
    except DockerUnavailable as exc:
        pytest.skip(f"{exc.message}")
    base = images.OFFLINE_BASE_IMAGE
    present = {images.PUBLIC_BASE_IMAGE, base} & {
        tag for image in client.images.list() for tag in image.tags
    }
    if not present:
        images.build_base_image(client, base)
    return client


@pytest.fixture(scope="session")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> IrisModel:
    iris = load_iris(as_frame=True)
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    path = tmp_path_factory.mktemp("models") / "iris"
    mlflow.sklearn.save_model(model, path)
    return IrisModel(path, model, iris.data.iloc[::15])


@pytest.fixture(scope="session")
def runtime_image(engine: docker.DockerClient, iris_model: IrisModel) -> str:
    """Builds the iris model's runtime image once, before any timed deploy."""
    runtime = DockerRuntime(iris_model.path.parent / "image-state")
    try:
        return runtime.image_for(iris_model.path).tag
    finally:
        runtime.close(stop_servers=True)


@pytest.fixture
def status_log() -> StatusLog:
    return StatusLog([], threading.Lock())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def runtime(
    engine: docker.DockerClient,
    runtime_image: str,
    state_dir: Path,
    status_log: StatusLog,
) -> Iterator[DockerRuntime]:
    runtime = DockerRuntime(state_dir, on_status=status_log)
    yield runtime
    runtime.close(stop_servers=True)
    # Whatever a test left behind (adopted elsewhere, orphaned on purpose).
    sweeper = DockerRuntime(state_dir)
    sweeper.remove_orphans(())
    sweeper.close(stop_servers=False)


def wait_until(condition: Callable[[], bool], timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def predict(url: str, iris: IrisModel) -> list[int]:
    payload = {
        "dataframe_split": {
            "columns": list(iris.features.columns),
            "data": iris.features.to_numpy().tolist(),
        }
    }
    response = httpx.post(f"{url}/invocations", json=payload, trust_env=False)
    response.raise_for_status()
    predictions: list[int] = response.json()["predictions"]
    return predictions


def pings(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def container_of(engine: docker.DockerClient, endpoint: Endpoint) -> Container:
    assert endpoint.ref is not None
    container: Container = engine.containers.get(endpoint.ref)
    return container


def serve(runtime: DockerRuntime, spec: ServingSpec) -> Endpoint:
    runtime.start(spec)
    return runtime.wait_ready(spec.deployment_id, READY_TIMEOUT)


def test_engine_unreachable_says_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, iris_model: IrisModel
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    runtime = DockerRuntime(tmp_path / "state")
    try:
        with pytest.raises(DockerUnavailable) as raised:
            runtime.start(ServingSpec("nowhere", iris_model.path))
    finally:
        runtime.close(stop_servers=True)
    assert raised.value.status_code == 503
    assert raised.value.message == (
        f"Docker engine not reachable at unix://{tmp_path}/no-engine.sock; "
        "start it (scripts/ensure-docker.sh or `dockerd`)"
    )


@pytest.mark.docker
def test_serves_as_a_limited_non_root_container_without_credentials(
    runtime: DockerRuntime,
    engine: docker.DockerClient,
    iris_model: IrisModel,
    status_log: StatusLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret-password")
    labels = {
        LABEL_DEPLOY_SERVER: "iris-server",
        LABEL_DEPLOYMENT: "champion",
        LABEL_MODEL_URI: "models:/iris@champion",
    }
    spec = ServingSpec("iris-serve", iris_model.path, labels=labels, size="low")

    endpoint = serve(runtime, spec)

    assert endpoint.url.startswith("http://127.0.0.1:")
    assert predict(endpoint.url, iris_model) == list(
        iris_model.model.predict(iris_model.features)
    )
    assert status_log.of("iris-serve")[:2] == ["starting", "running"]
    container = container_of(engine, endpoint)
    attrs = container.attrs
    assert attrs["Config"]["User"] == f"{images.USER_ID}:{images.USER_ID}"
    uid = container.exec_run(["id", "-u"]).output.decode().strip()
    assert uid == str(images.USER_ID)
    host = attrs["HostConfig"]
    assert host["NanoCpus"] == int(SIZES["low"].cpus * 10**9)
    assert host["Memory"] == SIZES["low"].memory_mb * 2**20
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"
    assert "/ping" in " ".join(attrs["Config"]["Healthcheck"]["Test"])
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/model")
    assert mount["Source"] == str(iris_model.path.resolve())
    assert mount["RW"] is False
    assert {
        **labels,
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT_ID: "iris-serve",
    }.items() <= container.labels.items()
    image_env = engine.images.get(attrs["Image"]).attrs["Config"]["Env"]
    for variable in [*attrs["Config"]["Env"], *image_env]:
        assert not variable.startswith("MLFLOW_TRACKING_")
        assert "secret-password" not in variable
    platform_vars = [v for v in attrs["Config"]["Env"] if v.startswith("MLPLATFORM_")]
    assert platform_vars == ["MLPLATFORM_DEPLOYMENT_ID=iris-serve"]


@pytest.mark.docker
def test_logs_are_the_container_output_and_outlive_it(
    runtime: DockerRuntime, iris_model: IrisModel
) -> None:
    serve(runtime, ServingSpec("iris-logs", iris_model.path))
    assert "Uvicorn running on http://0.0.0.0:8080" in runtime.logs("iris-logs")
    assert len(runtime.logs("iris-logs", tail=2).splitlines()) == 2

    runtime.stop("iris-logs")

    assert runtime.status("iris-logs") == "stopped"
    assert runtime.endpoint("iris-logs") is None
    assert runtime.find_managed() == []
    assert "Uvicorn running on" in runtime.logs("iris-logs")


@pytest.mark.docker
def test_a_crashed_server_comes_back_without_any_call(
    runtime: DockerRuntime, engine: docker.DockerClient, iris_model: IrisModel
) -> None:
    endpoint = serve(runtime, ServingSpec("iris-crash", iris_model.path))
    container = container_of(engine, endpoint)

    # The server's own process dies, as under the OOM killer: Docker restarts it.
    os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
    wait_until(lambda: engine.containers.get(endpoint.ref).attrs["RestartCount"] > 0)
    wait_until(lambda: pings(endpoint.url))

    assert predict(endpoint.url, iris_model) == list(
        iris_model.model.predict(iris_model.features)
    )
    wait_until(lambda: runtime.status("iris-crash") == "running")
    assert runtime.endpoint("iris-crash") == endpoint


@pytest.mark.docker
def test_a_container_killed_through_docker_comes_back(
    runtime: DockerRuntime,
    engine: docker.DockerClient,
    iris_model: IrisModel,
    status_log: StatusLog,
) -> None:
    endpoint = serve(runtime, ServingSpec("iris-kill", iris_model.path))

    container_of(engine, endpoint).kill()
    wait_until(lambda: pings(endpoint.url))

    assert predict(endpoint.url, iris_model) == list(
        iris_model.model.predict(iris_model.features)
    )
    wait_until(lambda: runtime.status("iris-kill") == "running")


@pytest.mark.docker
def test_a_removed_container_is_created_again(
    runtime: DockerRuntime, engine: docker.DockerClient, iris_model: IrisModel
) -> None:
    endpoint = serve(runtime, ServingSpec("iris-gone", iris_model.path))

    container_of(engine, endpoint).remove(force=True)
    wait_until(lambda: runtime.endpoint("iris-gone") not in (None, endpoint))
    wait_until(lambda: runtime.status("iris-gone") == "running")

    again = runtime.endpoint("iris-gone")
    assert again is not None
    assert predict(again.url, iris_model) == list(
        iris_model.model.predict(iris_model.features)
    )


@pytest.mark.docker
def test_a_second_runtime_adopts_a_running_container(
    runtime: DockerRuntime, state_dir: Path, iris_model: IrisModel
) -> None:
    spec = ServingSpec("iris-adopt", iris_model.path)
    endpoint = serve(runtime, spec)
    runtime.close(stop_servers=False)

    successor = DockerRuntime(state_dir)
    try:
        adopted = successor.adopt(spec, endpoint)

        assert adopted == endpoint
        assert successor.status("iris-adopt") == "running"
        assert predict(endpoint.url, iris_model) == list(
            iris_model.model.predict(iris_model.features)
        )
        successor.stop("iris-adopt")
        assert successor.find_managed() == []
        assert successor.adopt(spec, endpoint) is None
    finally:
        successor.close(stop_servers=True)


@pytest.mark.docker
def test_orphans_of_this_platform_only_are_removed(
    runtime: DockerRuntime, state_dir: Path, tmp_path: Path, iris_model: IrisModel
) -> None:
    serve(runtime, ServingSpec("iris-orphan", iris_model.path))
    serve(runtime, ServingSpec("iris-kept", iris_model.path))
    runtime.close(stop_servers=False)
    other_platform = DockerRuntime(tmp_path / "other-state")

    assert other_platform.remove_orphans(()) == []
    successor = DockerRuntime(state_dir)
    removed = successor.remove_orphans({"iris-kept"})

    assert removed == ["iris-orphan"]
    assert [c.deployment_id for c in successor.find_managed()] == ["iris-kept"]
    for leftover in (other_platform, successor):
        leftover.close(stop_servers=True)


@pytest.mark.docker
def test_models_with_the_same_requirements_reuse_the_image(
    runtime: DockerRuntime, runtime_image: str, iris_model: IrisModel, tmp_path: Path
) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(iris_model.path, twin)

    image = runtime.image_for(twin)

    assert image.tag == runtime_image
    assert not image.built


@pytest.mark.docker
def test_prune_keeps_images_in_use(
    runtime: DockerRuntime,
    engine: docker.DockerClient,
    runtime_image: str,
    iris_model: IrisModel,
) -> None:
    serve(runtime, ServingSpec("iris-prune", iris_model.path))
    unused = f"{images.RUNTIME_REPOSITORY}:unused-by-tests"
    engine.images.get(images.OFFLINE_BASE_IMAGE).tag(unused)

    removed = runtime.prune_images()

    assert unused in removed
    assert runtime_image not in removed
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(unused)
    engine.images.get(runtime_image)


@pytest.mark.docker
def test_a_broken_model_fails_with_its_log_and_leaves_no_container(
    runtime: DockerRuntime, iris_model: IrisModel, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(iris_model.path, broken)
    # MLflow 3 saves scikit-learn models as model.skops, older ones as model.pkl.
    serialized = [path for path in broken.glob("model.*") if path.is_file()]
    assert serialized
    for path in serialized:
        path.unlink()
    runtime.start(ServingSpec("iris-broken", broken))

    with pytest.raises(RuntimeError_) as raised:
        runtime.wait_ready("iris-broken", READY_TIMEOUT)

    first_line, _, tail = raised.value.message.partition("\n")
    assert first_line.startswith(
        "model server for deployment iris-broken failed to start: "
    )
    assert serialized[0].name in tail
    assert len(tail.splitlines()) <= 20
    assert runtime.find_managed() == []
    assert runtime.status("iris-broken") == "failed"
    assert runtime.endpoint("iris-broken") is None
