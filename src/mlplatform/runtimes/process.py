"""The process runtime: each deployment is MLflow's scoring server as a local process.

The server is started the way ``mlflow models serve --env-manager local`` starts it
(``mlflow.pyfunc.backend.PyFuncBackend.serve``): uvicorn running
``mlflow.pyfunc.scoring_server.app:app`` with the platform's own Python, the model
folder passed in an environment variable. Differences from upstream, on purpose:

- the child gets a minimal environment, never the platform's credentials;
- it runs in its own session, so it outlives a crash of the platform process, and
  carries ``MLPLATFORM_DEPLOYMENT_ID`` so the next platform process can prove a pid
  still belongs to the deployment before adopting or killing it;
- one supervisor thread restarts servers that exit, with backoff, on the same port.
"""

import contextlib
import itertools
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

from mlplatform.errors import InvalidInput
from mlplatform.runtimes.base import (
    Endpoint,
    Runtime,
    RuntimeError_,
    ServingSpec,
    StatusListener,
)
from mlplatform.tracking.requirements import ensure_satisfied

logger = logging.getLogger(__name__)

APP = "mlflow.pyfunc.scoring_server.app:app"
# mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH: private upstream, so named here
# and checked against upstream by the tests.
MODEL_PATH_VAR = "__pyfunc_model_path__"
MARKER_VAR = "MLPLATFORM_DEPLOYMENT_ID"
LOG_NAME = "server.log"

_POLL_INTERVAL = 1.0
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0
_STABLE_AFTER = 60.0  # seconds up after which a crash counts as the first again
_STOP_GRACE = 10.0
_LOG_TAIL = 20
_PING_TIMEOUT = 2.0


@dataclass(eq=False)
class _Server:
    """What the runtime knows about one deployment's server; guarded by the lock."""

    spec: ServingSpec
    port: int
    process: subprocess.Popen[bytes] | None = None  # None when adopted or between runs
    pid: int | None = None
    status: str = "starting"
    started_at: float = 0.0  # time.monotonic() of the last (re)start or adoption
    backoff: float = _FIRST_BACKOFF
    restart_at: float | None = None  # set while a restart is pending
    awaiting_ready: bool = False  # wait_ready, not the supervisor, owns its exit

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self) -> Endpoint:
        return Endpoint(url=self.url, pid=self.pid)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(
        self, state_dir: Path, on_status: StatusListener | None = None
    ) -> None:
        self._state_dir = state_dir
        self._on_status = on_status
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}
        self._final: dict[str, str] = {}  # status of deployments no longer supervised
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._supervise, name="process-runtime-supervisor", daemon=True
        )
        self._thread.start()

    # -- the Runtime contract ---------------------------------------------------------

    def check_model(self, model_dir: Path) -> None:
        # Models run in the platform's own environment: what it lacks, they lack.
        ensure_satisfied(model_dir)

    def start(self, spec: ServingSpec) -> Endpoint:
        if self._closing.is_set():
            raise RuntimeError_("the process runtime is closed; it starts nothing")
        if not (spec.model_dir / "MLmodel").is_file():
            raise RuntimeError_(
                f"no MLmodel file in {spec.model_dir}; fetch the model before serving"
            )
        self._deployment_dir(spec.deployment_id)
        with self._lock:
            if spec.deployment_id in self._servers:
                raise RuntimeError_(
                    f"deployment {spec.deployment_id} is already running; stop it first"
                )
            server = _Server(spec=spec, port=_free_port())
            self._servers[spec.deployment_id] = server
        try:
            process = self._spawn(spec, server.port)
        except OSError as exc:
            with self._lock:
                del self._servers[spec.deployment_id]
                self._final[spec.deployment_id] = "failed"
            raise RuntimeError_(
                f"could not start the model server for deployment "
                f"{spec.deployment_id}: {exc}"
            ) from exc
        with self._lock:
            server.process, server.pid = process, process.pid
            server.started_at = time.monotonic()
        self._emit(spec.deployment_id, "starting")
        return server.endpoint()

    def wait_ready(self, deployment_id: str, timeout: float) -> Endpoint:
        server = self._claim_readiness(deployment_id)
        deadline = time.monotonic() + timeout
        delay = 0.05
        try:
            while True:
                reason = _startup_failure(server)
                if reason is None and _ping(server.url):
                    break
                if reason is None and time.monotonic() >= deadline:
                    reason = f"/ping did not answer 200 within {timeout:g} s"
                if reason is not None:
                    self._fail(server, reason)
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 2, 1.0)
        finally:
            with self._lock:
                server.awaiting_ready = False
        self._mark_running(server)
        return server.endpoint()

    def adopt(self, spec: ServingSpec, previous: Endpoint) -> Endpoint | None:
        with self._lock:
            current = self._servers.get(spec.deployment_id)
        if current is not None:
            return current.endpoint()
        port = urlsplit(previous.url).port
        pid = previous.pid
        if pid is None or port is None or not _runs_deployment(pid, spec, port):
            logger.info("deployment %s: pid %s is gone", spec.deployment_id, pid)
            _kill_marked(spec.deployment_id)
            return None
        server = _Server(spec=spec, port=port, pid=pid, status="running")
        if not _ping(server.url):
            logger.warning(
                "deployment %s: pid %s runs but %s/ping does not answer -> killing it",
                spec.deployment_id,
                pid,
                server.url,
            )
            _kill_marked(spec.deployment_id)
            return None
        return self._register_adopted(server)

    def stop(self, deployment_id: str) -> None:
        self._stop(deployment_id, "stopped")

    def status(self, deployment_id: str) -> str:
        with self._lock:
            server = self._servers.get(deployment_id)
            if server is not None:
                return server.status
            return self._final.get(deployment_id, "stopped")

    def logs(self, deployment_id: str, tail: int | None = None) -> str:
        path = self._deployment_dir(deployment_id) / LOG_NAME
        try:
            with path.open(encoding="utf-8", errors="replace") as log:
                lines = deque(log, maxlen=tail) if tail is not None else log.readlines()
        except FileNotFoundError:
            return ""
        return "".join(lines)

    def endpoint(self, deployment_id: str) -> Endpoint | None:
        with self._lock:
            server = self._servers.get(deployment_id)
            return None if server is None else server.endpoint()

    def close(self, stop_servers: bool) -> None:
        self._closing.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        if stop_servers:
            with self._lock:
                deployment_ids = list(self._servers)
            for deployment_id in deployment_ids:
                self.stop(deployment_id)

    # -- starting and stopping --------------------------------------------------------

    def _deployment_dir(self, deployment_id: str) -> Path:
        # The id names a folder: refuse anything that could step outside state_dir.
        if not deployment_id or deployment_id in {".", ".."} or "/" in deployment_id:
            raise InvalidInput(f"deployment id {deployment_id!r} is not a valid name")
        return self._state_dir / deployment_id

    def _spawn(self, spec: ServingSpec, port: int) -> subprocess.Popen[bytes]:
        directory = self._deployment_dir(spec.deployment_id)
        directory.mkdir(parents=True, exist_ok=True)
        command = _command(port, spec.workers)
        logger.debug(
            "deployment %s: running %s", spec.deployment_id, shlex.join(command)
        )
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with (directory / LOG_NAME).open("ab") as log:
            log.write(f"=== {stamp} mlplatform: {shlex.join(command)}\n".encode())
            log.flush()
            # cwd is the deployment folder because `python -m` puts cwd first on
            # sys.path, and the platform's cwd could shadow a module of the server.
            return subprocess.Popen(
                command,
                env=_child_env(spec),
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _stop(self, deployment_id: str, final_status: str) -> None:
        with self._lock:
            server = self._servers.pop(deployment_id, None)
            if server is None:
                return
            self._final[deployment_id] = final_status
        if server.process is not None:
            _stop_child(server.process)
        elif server.pid is not None and _runs_deployment(
            server.pid, server.spec, server.port
        ):
            _stop_adopted(server.pid, server.spec, server.port)
        logger.info("deployment %s: %s", deployment_id, final_status)
        self._emit(deployment_id, final_status)

    def _claim_readiness(self, deployment_id: str) -> _Server:
        with self._lock:
            server = self._servers.get(deployment_id)
            if server is None:
                raise RuntimeError_(
                    f"no model server for deployment {deployment_id}; start it first"
                )
            server.awaiting_ready = True
            return server

    def _fail(self, server: _Server, reason: str) -> None:
        deployment_id = server.spec.deployment_id
        self._stop(deployment_id, "failed")
        tail = self.logs(deployment_id, _LOG_TAIL).rstrip("\n")
        raise RuntimeError_(
            f"model server for deployment {deployment_id} failed to start: "
            f"{reason}\n{tail}"
        )

    def _mark_running(self, server: _Server) -> None:
        with self._lock:
            if self._servers.get(server.spec.deployment_id) is not server:
                return
            changed = server.status != "running"
            server.status = "running"
        if changed:
            logger.info(
                "deployment %s: running at %s", server.spec.deployment_id, server.url
            )
            self._emit(server.spec.deployment_id, "running")

    def _register_adopted(self, server: _Server) -> Endpoint:
        deployment_id = server.spec.deployment_id
        server.started_at = time.monotonic()
        with self._lock:
            self._servers[deployment_id] = server
            self._final.pop(deployment_id, None)
        logger.info(
            "deployment %s: adopted pid %s at %s", deployment_id, server.pid, server.url
        )
        self._emit(deployment_id, "running")
        return server.endpoint()

    def _supervise(self) -> None:
        while not self._closing.wait(_POLL_INTERVAL):
            with self._lock:
                servers = list(self._servers.values())
            for server in servers:
                try:
                    self._check(server)
                except Exception:
                    # The one supervisor thread must outlive any single bad server.
                    logger.exception(
                        "supervising deployment %s failed", server.spec.deployment_id
                    )

    def _check(self, server: _Server) -> None:
        if server.restart_at is not None:
            if time.monotonic() >= server.restart_at:
                self._restart(server)
            return
        if server.awaiting_ready:
            return
        exit_code = _exit_code(server)
        if exit_code is not None:
            self._schedule_restart(server, exit_code)
        elif server.status == "starting" and _ping(server.url):
            self._mark_running(server)

    def _schedule_restart(self, server: _Server, exit_code: str) -> None:
        now = time.monotonic()
        with self._lock:
            if self._servers.get(server.spec.deployment_id) is not server:
                return
            if server.awaiting_ready:
                return
            if now - server.started_at >= _STABLE_AFTER:
                server.backoff = _FIRST_BACKOFF
            delay = server.backoff
            server.backoff = min(delay * 2, _MAX_BACKOFF)
            server.restart_at = now + delay
            server.status = "restarting"
            old_pid, server.process, server.pid = server.pid, None, None
        logger.warning(
            "deployment %s: exited with code %s -> restarting in %g s",
            server.spec.deployment_id,
            exit_code,
            delay,
        )
        if old_pid is not None:
            _kill_orphaned_group(old_pid)
        self._emit(server.spec.deployment_id, "restarting")

    def _restart(self, server: _Server) -> None:
        deployment_id = server.spec.deployment_id
        port = server.port
        if not _port_is_free(port):
            port = _free_port()
            logger.warning(
                "deployment %s: port %s is taken -> moving to port %s",
                deployment_id,
                server.port,
                port,
            )
        try:
            process = self._spawn(server.spec, port)
        except OSError as exc:
            logger.error("deployment %s: could not restart: %s", deployment_id, exc)
            with self._lock:
                server.restart_at = time.monotonic() + server.backoff
                server.backoff = min(server.backoff * 2, _MAX_BACKOFF)
            return
        with self._lock:
            current = self._servers.get(deployment_id) is server
            if current:
                server.process, server.pid, server.port = process, process.pid, port
                server.restart_at = None
                server.started_at = time.monotonic()
                server.status = "starting"
        if not current:
            # stop() ran while we were spawning: the new server has no owner.
            _stop_child(process)
            return
        self._emit(deployment_id, "starting")


# -- the child process ----------------------------------------------------------------


def _command(port: int, workers: int) -> list[str]:
    # The command of mlflow.pyfunc.scoring_server.get_cmd, run by our own Python.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        APP,
    ]


def _child_env(spec: ServingSpec) -> dict[str, str]:
    # Built from nothing rather than copied: the platform's environment holds tracking
    # credentials and platform secrets that a model's code must never see.
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        # Model code may print; without this its output reaches the log late or never.
        "PYTHONUNBUFFERED": "1",
        MODEL_PATH_VAR: spec.model_dir.resolve().as_uri(),
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name: _request_timeout(),
        MARKER_VAR: spec.deployment_id,
    }


def _request_timeout() -> str:
    # get() parses and validates the platform's setting; mlflow ships no type hints.
    setting = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    seconds: int = setting.get()  # type: ignore[no-untyped-call]
    return str(seconds)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # uvicorn binds with SO_REUSEADDR too, so connections of the dead server left
        # in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ping(url: str) -> bool:
    try:
        # trust_env=False: an HTTP(S)_PROXY of the platform must not catch loopback.
        response = httpx.get(f"{url}/ping", timeout=_PING_TIMEOUT, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _startup_failure(server: _Server) -> str | None:
    process = server.process
    if process is not None:
        code = process.poll()
        return None if code is None else f"the server exited with code {code}"
    if server.pid is not None and not _runs_deployment(
        server.pid, server.spec, server.port
    ):
        return "the server exited"
    return None  # a restart is pending: keep waiting for it


def _exit_code(server: _Server) -> str | None:
    """None while the server runs, else its exit code (``unknown`` if adopted)."""
    if server.process is not None:
        code = server.process.poll()
        return None if code is None else str(code)
    if server.pid is not None and _runs_deployment(
        server.pid, server.spec, server.port
    ):
        return None
    return "unknown"  # not our child: its exit status went to its real parent


# -- /proc and signals ----------------------------------------------------------------


def _read_proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None  # gone, or another user's process


def _runs_deployment(pid: int, spec: ServingSpec, port: int) -> bool:
    """Whether ``pid`` is the scoring server of ``spec``, safe against pid reuse."""
    cmdline = _read_proc(pid, "cmdline")
    if not cmdline:
        return False  # gone, or a zombie waiting to be reaped
    args = cmdline.split(b"\0")
    if APP.encode() not in args:
        return False
    environ = _read_proc(pid, "environ")
    if environ is not None:
        return f"{MARKER_VAR}={spec.deployment_id}".encode() in environ.split(b"\0")
    # environ is only readable by the same user or root; the port is weaker proof.
    return any(
        flag == b"--port" and value == str(port).encode()
        for flag, value in itertools.pairwise(args)
    )


def _marked_pids(deployment_id: str) -> list[int]:
    marker = f"{MARKER_VAR}={deployment_id}".encode()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        environ = _read_proc(int(entry.name), "environ")
        if environ and marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _kill_marked(deployment_id: str) -> None:
    # A stale server (and any uvicorn worker it left behind) would hold the port and
    # serve an old model; nothing it does is worth a graceful stop.
    for pid in _marked_pids(deployment_id):
        logger.warning("deployment %s: killing stale pid %s", deployment_id, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # start_new_session made the server a group leader: the group holds its workers.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    _kill_orphaned_group(process.pid)


def _stop_adopted(pid: int, spec: ServingSpec, port: int) -> None:
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE
    delay = 0.05
    while _runs_deployment(pid, spec, port):
        if time.monotonic() >= deadline:
            _signal_group(pid, signal.SIGKILL)
            return
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _kill_orphaned_group(pgid: int) -> None:
    """Kill uvicorn workers left running (and holding the port) by a dead parent."""
    try:
        os.kill(pgid, 0)
    except ProcessLookupError:
        # The leader is gone; Linux does not hand out a pid still used as a process
        # group id, so whatever remains in this group is the dead server's.
        _signal_group(pgid, signal.SIGKILL)
    except PermissionError:
        return  # the pid was reused by another user's process: not ours to touch
