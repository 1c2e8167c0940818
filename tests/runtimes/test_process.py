"""The process runtime against real MLflow scoring servers (no mocks)."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow.sklearn
import pandas as pd
import pytest
from mlflow.pyfunc import scoring_server
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from mlplatform.runtimes.base import Endpoint, RuntimeError_, ServingSpec
from mlplatform.runtimes.process import MARKER_VAR, MODEL_PATH_VAR, ProcessRuntime

READY_TIMEOUT = 120.0


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
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> IrisModel:
    iris = load_iris(as_frame=True)
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    path = tmp_path_factory.mktemp("models") / "iris"
    mlflow.sklearn.save_model(model, path)
    return IrisModel(path, model, iris.data.iloc[::15])


@pytest.fixture
def status_log() -> StatusLog:
    return StatusLog([], threading.Lock())


@pytest.fixture
def runtime(tmp_path: Path, status_log: StatusLog) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime(tmp_path / "state", on_status=status_log)
    yield runtime
    runtime.close(stop_servers=True)


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


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if item)


def test_model_path_var_matches_upstream() -> None:
    assert scoring_server._SERVER_MODEL_PATH == MODEL_PATH_VAR


def test_serves_predictions_of_the_model(
    runtime: ProcessRuntime, iris_model: IrisModel, status_log: StatusLog
) -> None:
    started = runtime.start(ServingSpec("iris-serve", iris_model.path))
    ready = runtime.wait_ready("iris-serve", READY_TIMEOUT)

    assert ready == started
    assert runtime.status("iris-serve") == "running"
    assert status_log.of("iris-serve") == ["starting", "running"]
    expected = iris_model.model.predict(iris_model.features).tolist()
    assert predict(ready.url, iris_model) == expected


def test_logs_hold_the_command_and_the_startup(
    runtime: ProcessRuntime, iris_model: IrisModel
) -> None:
    runtime.start(ServingSpec("iris-logs", iris_model.path))
    runtime.wait_ready("iris-logs", READY_TIMEOUT)

    logs = runtime.logs("iris-logs")
    assert "mlplatform: " in logs.splitlines()[0]
    assert "mlflow.pyfunc.scoring_server.app:app" in logs.splitlines()[0]
    assert "Application startup complete" in logs
    assert runtime.logs("iris-logs", tail=1).count("\n") <= 1
    assert runtime.logs("never-started") == ""


def test_child_env_holds_no_secrets(
    runtime: ProcessRuntime, iris_model: IrisModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t0ken")
    monkeypatch.setenv("MLPLATFORM_ADMIN_PASSWORD", "s3cret")
    endpoint = runtime.start(ServingSpec("iris-env", iris_model.path))
    assert endpoint.pid is not None

    environ = environ_of(endpoint.pid)
    assert "MLFLOW_TRACKING_PASSWORD" not in environ
    assert "MLFLOW_TRACKING_TOKEN" not in environ
    assert [name for name in environ if name.startswith("MLPLATFORM_")] == [MARKER_VAR]
    assert environ[MARKER_VAR] == "iris-env"
    assert environ[MODEL_PATH_VAR] == iris_model.path.resolve().as_uri()
    assert "hunter2" not in Path(f"/proc/{endpoint.pid}/environ").read_text()


def test_killed_server_comes_back_on_the_same_port(
    runtime: ProcessRuntime, iris_model: IrisModel, status_log: StatusLog
) -> None:
    runtime.start(ServingSpec("iris-kill", iris_model.path))
    first = runtime.wait_ready("iris-kill", READY_TIMEOUT)
    assert first.pid is not None

    os.kill(first.pid, signal.SIGKILL)

    def back() -> bool:
        now = runtime.endpoint("iris-kill")
        return now is not None and now.pid not in {None, first.pid} and pings(now.url)

    wait_until(back)
    second = runtime.endpoint("iris-kill")
    assert second is not None
    assert second.url == first.url
    expected = iris_model.model.predict(iris_model.features).tolist()
    assert predict(second.url, iris_model) == expected
    wait_until(lambda: runtime.status("iris-kill") == "running")
    assert status_log.of("iris-kill")[-3:] == ["restarting", "starting", "running"]
    assert runtime.logs("iris-kill").count("mlplatform: ") == 2


def test_restart_is_logged_as_a_warning(
    runtime: ProcessRuntime, iris_model: IrisModel, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = runtime.start(ServingSpec("iris-warn", iris_model.path))
    assert endpoint.pid is not None
    os.kill(endpoint.pid, signal.SIGKILL)

    wait_until(lambda: runtime.status("iris-warn") != "starting")
    assert "deployment iris-warn: exited with code -9 -> restarting in 1 s" in (
        caplog.text
    )


def test_broken_model_fails_with_the_log_tail(
    runtime: ProcessRuntime, iris_model: IrisModel, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(iris_model.path, broken)
    # MLflow 3 saves scikit-learn models as model.skops, older ones as model.pkl.
    serialized = [path for path in broken.glob("model.*") if path.is_file()]
    assert serialized
    for path in serialized:
        path.unlink()
    endpoint = runtime.start(ServingSpec("iris-broken", broken))
    assert endpoint.pid is not None

    with pytest.raises(RuntimeError_) as raised:
        runtime.wait_ready("iris-broken", READY_TIMEOUT)

    message = raised.value.message
    first_line, _, tail = message.partition("\n")
    assert first_line.startswith(
        "model server for deployment iris-broken failed to start: "
    )
    assert serialized[0].name in tail
    assert len(tail.splitlines()) <= 20
    assert not pid_exists(endpoint.pid)
    assert runtime.status("iris-broken") == "failed"
    assert runtime.endpoint("iris-broken") is None


def test_wait_ready_gives_up_after_the_timeout(
    runtime: ProcessRuntime, iris_model: IrisModel
) -> None:
    endpoint = runtime.start(ServingSpec("iris-slow", iris_model.path))
    assert endpoint.pid is not None

    with pytest.raises(RuntimeError_, match=r"did not answer 200 within 0\.2 s"):
        runtime.wait_ready("iris-slow", 0.2)

    assert not pid_exists(endpoint.pid)
    assert runtime.status("iris-slow") == "failed"


def test_second_runtime_adopts_the_running_server(
    tmp_path: Path, iris_model: IrisModel
) -> None:
    spec = ServingSpec("iris-adopt", iris_model.path)
    first = ProcessRuntime(tmp_path / "state")
    second = ProcessRuntime(tmp_path / "state")
    try:
        first.start(spec)
        previous = first.wait_ready("iris-adopt", READY_TIMEOUT)
        first.close(stop_servers=False)

        adopted = second.adopt(spec, previous)

        assert adopted == previous
        assert second.status("iris-adopt") == "running"
        expected = iris_model.model.predict(iris_model.features).tolist()
        assert predict(previous.url, iris_model) == expected

        # Supervision resumed: the adopted server is restarted on its port when it dies.
        assert previous.pid is not None
        os.kill(previous.pid, signal.SIGKILL)
        wait_until(lambda: _restarted(second, "iris-adopt", previous))
    finally:
        first.close(stop_servers=True)
        second.close(stop_servers=True)


def _restarted(runtime: ProcessRuntime, deployment_id: str, previous: Endpoint) -> bool:
    now = runtime.endpoint(deployment_id)
    return (
        now is not None
        and now.url == previous.url
        and now.pid not in {None, previous.pid}
        and pings(now.url)
    )


def test_adopt_returns_none_for_a_dead_pid(
    runtime: ProcessRuntime, iris_model: IrisModel
) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(finished.stdout)
    previous = Endpoint(url="http://127.0.0.1:1", pid=dead_pid)

    assert runtime.adopt(ServingSpec("iris-dead", iris_model.path), previous) is None
    assert runtime.status("iris-dead") == "stopped"


def test_adopt_leaves_a_reused_pid_alone(
    runtime: ProcessRuntime, iris_model: IrisModel
) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        previous = Endpoint(url="http://127.0.0.1:1", pid=stranger.pid)

        spec = ServingSpec("iris-reused", iris_model.path)
        assert runtime.adopt(spec, previous) is None
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_ends_the_server(
    runtime: ProcessRuntime, iris_model: IrisModel, status_log: StatusLog
) -> None:
    endpoint = runtime.start(ServingSpec("iris-stop", iris_model.path))
    assert endpoint.pid is not None

    runtime.stop("iris-stop")
    runtime.stop("iris-stop")

    assert not pid_exists(endpoint.pid)
    assert runtime.status("iris-stop") == "stopped"
    assert runtime.endpoint("iris-stop") is None
    assert status_log.of("iris-stop") == ["starting", "stopped"]
