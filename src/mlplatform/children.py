"""Child processes of the platform: ports, health waits, log tails, group stops.

Every server the platform runs (tracking servers, the platform API, JupyterHubs) is
a child in a session of its own, so that it and what it forks form one process group.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx

from mlplatform.errors import StartupError

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path | None, lines: int = 15, hidden: Iterable[str] = ()) -> str:
    """The last ``lines`` of a log, each of ``hidden`` masked."""
    if path is None or not path.exists():
        return "(no log)"
    tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    for secret in hidden:
        if secret:
            tail = tail.replace(secret, "***")
    return tail


def wait_http_ok(
    url: str,
    timeout: float,
    *,
    what: str,
    process: "subprocess.Popen[bytes] | None",
    tail: Callable[[], str],
) -> float:
    """Poll ``url`` with backoff until it answers 200; return the seconds it took.

    Raises ``StartupError`` with the log tail if ``process`` exits first or the time
    runs out.
    """
    started = time.monotonic()
    delay = 0.1
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            if process is not None and process.poll() is not None:
                raise StartupError(
                    f"{what} exited with code {process.returncode}; "
                    f"last log lines:\n{tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise StartupError(
                    f"{what} did not answer {url} within {timeout:.0f}s; "
                    f"last log lines:\n{tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_group(
    process: "subprocess.Popen[bytes] | None", what: str, grace: float = 10.0
) -> bool:
    """Terminate ``process``'s group, kill it after ``grace``; False if not running."""
    if process is None or process.poll() is not None:
        return False
    signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop in %ss; killing it", what, grace)
        signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
    # Children (uvicorn workers, proxies) may outlive the process that had to
    # forward the signal to them.
    signal_group(process.pid, signal.SIGKILL)
    return True
