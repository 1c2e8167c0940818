"""``mlplatform up``: start tracking server, platform API and Traefik; watch them.

Named steps, in order: check the machine -> bootstrap credentials -> write Traefik's
config -> start tracking server -> start platform API -> start Traefik -> watch.
``stop`` undoes them in reverse. A child that dies is restarted with backoff.
"""

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from mlplatform import __version__, credentials
from mlplatform.children import free_port, log_tail, wait_http_ok
from mlplatform.errors import StartupError
from mlplatform.platform import ROUTES_FILE
from mlplatform.proxy import (
    TraefikProcess,
    Upstream,
    build_dynamic_config,
    build_static_config,
    find_traefik_binary,
    write_config,
)
from mlplatform.settings import Settings
from mlplatform.store import Database
from mlplatform.tracking import TrackingServer

logger = logging.getLogger(__name__)

API_HEALTH_PATH = "/platform/api/v1/health"
START_TIMEOUT = 120.0
MAX_BACKOFF = 60.0
# The Standalone preset: an experiment or model nobody was granted is closed to all but
# admins and its creator (MLflow gives the creator MANAGE).


@dataclass
class RunState:
    """What ``status``, ``env`` and ``down`` need to know of a running platform."""

    pid: int
    public_url: str
    tracking_url: str
    api_url: str
    traefik_ping_url: str
    started_at: float


def address_path(home: Path) -> Path:
    return home / "address.json"


def stored_address(home: Path) -> dict[str, Any] | None:
    """Host and port this home last ran on: deployment URLs depend on them."""
    path = address_path(home)
    if not path.exists():
        return None
    address: dict[str, Any] = json.loads(path.read_text())
    return address


def state_path(home: Path) -> Path:
    return home / "run" / "state.json"


def read_state(home: Path) -> RunState | None:
    path = state_path(home)
    if not path.exists():
        return None
    state = RunState(**json.loads(path.read_text()))
    return state if pid_alive(state.pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StartupError(
                f"port {port} on {host} is taken; stop what uses it or pass --port"
            ) from None


class ApiProcess:
    """The platform API as a child process (so a crash of it leaves the rest up)."""

    def __init__(self, home: Path, port: int, tracking_url: str, dynamic_dir: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = home / "logs" / "api.log"
        self.command = [
            sys.executable, "-m", "mlplatform.api",
            "--port", str(port),
            "--tracking-url", tracking_url,
            "--dynamic-dir", str(dynamic_dir),
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLPLATFORM_ADMIN_PASSWORD"}
        logger.debug("starting platform API: %s", " ".join(self.command))
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float) -> None:
        wait_http_ok(
            self.url + API_HEALTH_PATH,
            timeout,
            what="the platform API",
            process=self.process,
            tail=lambda: log_tail(self.log_file),
        )

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            # The API stops every model server on its way out; give it time for that.
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class _Child:
    name: str
    process: Callable[[], "subprocess.Popen[bytes] | None"]
    restart: Callable[[], None]
    failures: int = 0
    next_try: float = 0.0


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.resolved_home()
        self.public_url = settings.resolved_public_url()
        self.dynamic_dir = self.home / "traefik" / "dynamic"
        self._stopping = threading.Event()
        self.tracking: TrackingServer | None = None
        self.api: ApiProcess | None = None
        self.traefik: TraefikProcess | None = None
        self._lock_file: TextIO | None = None

    # -- steps ----------------------------------------------------------------

    def check_machine(self) -> None:
        # The home holds password hashes, tokens' digests and the admin's credentials:
        # readable by its owner only, whatever the umask.
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        for folder in ("logs", "run", "tracking", "deployments", "traefik/dynamic"):
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        self._lock_home()
        running = read_state(self.home)
        if running is not None:
            raise StartupError(
                f"the platform is already running (pid {running.pid}) at "
                f"{running.public_url}; run `mlplatform down` first"
            )
        find_traefik_binary()
        check_port_free(self.settings.host, self.settings.port)

    def _lock_home(self) -> None:
        # Held for the supervisor's life: two `up` on one home would share its stores.
        self._lock_file = (self.home / "run" / "up.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise StartupError(
                f"another `mlplatform up` is starting or running on {self.home}; "
                "wait for it or run `mlplatform down`"
            ) from None

    def release_home(self) -> None:
        """Let a detached supervisor take the home over."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def bootstrap(self) -> tuple[credentials.AdminCredentials, bool]:
        """The admin's credentials, and whether the password was generated now."""
        db = Database(self.settings.resolved_database_url())
        try:
            db.migrate()
            return credentials.bootstrap(self.settings, db)
        finally:
            db.close()

    def start_tracking(self, admin: credentials.AdminCredentials) -> None:
        self.tracking = TrackingServer(
            self.home / "tracking",
            free_port(),
            admin.admin_password,
            admin_username=admin.admin_user,
            default_permission=self.settings.default_permission,
            public_url=self.public_url,
            platform_database_url=self.settings.resolved_database_url(),
        )
        self.tracking.start(self.home / "logs" / "tracking.log")
        self.tracking.wait_healthy(START_TIMEOUT)
        logger.info("tracking server running at %s", self.tracking.url)

    def write_proxy_config(self, ping_port: int) -> None:
        assert self.tracking is not None and self.api is not None
        routes_file = self.dynamic_dir / ROUTES_FILE
        # The API rewrites this file with every deployment once it has reconciled;
        # until then Traefik already routes to the tracking server and the API.
        if not routes_file.exists():
            write_config(
                routes_file,
                build_dynamic_config(
                    Upstream("tracking", self.tracking.url),
                    Upstream("platform-api", self.api.url),
                    [],
                ),
            )
        static = build_static_config(
            host=self.settings.host,
            port=self.settings.port,
            dynamic_dir=self.dynamic_dir,
            log_file=self.home / "logs" / "traefik.log",
            ping_port=ping_port,
        )
        self.traefik = TraefikProcess(
            static_config_path=self.home / "traefik" / "traefik.yml",
            output_file=self.home / "logs" / "traefik.out",
            ping_port=ping_port,
        )
        self.traefik.write_static_config(static)

    def start_api(self) -> None:
        assert self.tracking is not None
        self.api = ApiProcess(
            self.home, free_port(), self.tracking.url, self.dynamic_dir
        )
        self.api.start()
        self.api.wait_healthy(START_TIMEOUT)
        logger.info("platform API running at %s", self.api.url)

    def start_traefik(self) -> None:
        assert self.traefik is not None
        self.traefik.start()
        self.traefik.wait_healthy(START_TIMEOUT)
        self._wait_public()
        logger.info("traefik running; the platform is at %s", self.public_url)

    def _wait_public(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.1
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(self.public_url + API_HEALTH_PATH, timeout=2)
                if answer.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise StartupError(f"{self.public_url} did not answer through traefik")

    def write_state(self) -> None:
        assert self.tracking and self.api and self.traefik
        state = RunState(
            pid=os.getpid(),
            public_url=self.public_url,
            tracking_url=self.tracking.url,
            api_url=self.api.url,
            traefik_ping_url=self.traefik.ping_url,
            started_at=time.time(),
        )
        state_path(self.home).write_text(json.dumps(asdict(state), indent=2))
        address = {"host": self.settings.host, "port": self.settings.port}
        previous = stored_address(self.home)
        if previous is not None and previous != address:
            logger.warning(
                "address changed from %s:%s to %s:%s: deployment URLs change with it",
                previous["host"], previous["port"], address["host"], address["port"],
            )  # fmt: skip
        address_path(self.home).write_text(json.dumps(address))

    # -- the whole ------------------------------------------------------------

    def start(self) -> tuple[credentials.AdminCredentials, bool]:
        logger.info("mlplatform %s starting; home %s", __version__, self.home)
        self.check_machine()
        admin, generated = self.bootstrap()
        try:
            self.start_tracking(admin)
            self.start_api()
            self.write_proxy_config(free_port())
            self.start_traefik()
        except BaseException:
            self.stop()
            raise
        self.write_state()
        logger.info("mlplatform running at %s", self.public_url)
        return admin, generated

    def watch(self) -> None:
        """Block until SIGTERM/SIGINT, restarting children that die."""
        assert self.tracking and self.api and self.traefik
        tracking, api, traefik = self.tracking, self.api, self.traefik
        children = [
            _Child("tracking server", lambda: tracking.process,
                   lambda: self._restart_tracking()),
            _Child("platform API", lambda: api.process, self._restart_api),
            _Child("traefik", lambda: traefik.process, self._restart_traefik),
        ]  # fmt: skip
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stopping.set())
        while not self._stopping.wait(1.0):
            for child in children:
                self._check(child)

    def _check(self, child: _Child) -> None:
        process = child.process()
        if process is None or process.poll() is None:
            return
        now = time.monotonic()
        if now < child.next_try:
            return
        delay = min(2.0**child.failures, MAX_BACKOFF)
        logger.warning(
            "%s exited with code %s -> restarting (next backoff %.0f s)",
            child.name,
            process.returncode,
            delay,
        )
        child.failures += 1
        child.next_try = now + delay
        try:
            child.restart()
        except StartupError as exc:
            logger.error("%s failed to restart: %s", child.name, exc.message)

    def _restart_tracking(self) -> None:
        assert self.tracking is not None
        self.tracking.start(self.home / "logs" / "tracking.log")

    def _restart_api(self) -> None:
        assert self.api is not None
        self.api.start()

    def _restart_traefik(self) -> None:
        assert self.traefik is not None
        self.traefik.start()

    def stop(self) -> None:
        logger.info("stopping mlplatform")
        for part in (self.traefik, self.api, self.tracking):
            if part is not None:
                part.stop()
        state_path(self.home).unlink(missing_ok=True)
        logger.info("mlplatform stopped")


def stop_running(home: Path, timeout: float = 90.0) -> bool:
    """Ask a running ``mlplatform up`` to stop; False if none was running."""
    state = read_state(home)
    if state is None:
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.1
    while pid_alive(state.pid):
        if time.monotonic() > deadline:
            os.kill(state.pid, signal.SIGKILL)
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    return True
