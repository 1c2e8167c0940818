"""Helpers to run the real platform from tests (see conftest.py for the fixtures)."""

import os
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplatform_client import MLPlatform

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningPlatform:
    home: Path
    env: dict[str, str]  # what `mlplatform env` printed

    @property
    def url(self) -> str:
        return self.env["MLPLATFORM_URL"]

    def admin_client(self, timeout: float = 600.0) -> "MLPlatform":
        """A client with the admin's token and MLflow credentials."""
        from mlplatform_client import MLPlatform

        return MLPlatform(
            self.env["REFRESH_TOKEN"],
            url=self.url,
            tracking_username=self.env["MLFLOW_TRACKING_USERNAME"],
            tracking_password=self.env["MLFLOW_TRACKING_PASSWORD"],
            timeout=timeout,
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(self.home, *args, check=check, extra_env=self.env)


def base_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING_", "MLPLATFORM_", "REFRESH_TOKEN"))
    }
    env["MLPLATFORM_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_cli(
    home: Path,
    *args: str,
    check: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    env = {**base_env(home), **(extra_env or {})}
    result = subprocess.run(
        [str(BIN / "mlplatform"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mlplatform {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def parse_env(output: str) -> dict[str, str]:
    values = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values
