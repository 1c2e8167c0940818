"""Session fixtures: one real platform (MLflow + platform API + Traefik) on free ports.

The platform is started the way users start it, with ``mlplatform up --detach``, in a
temporary MLPLATFORM_HOME, and stopped with ``mlplatform down``.
"""

import os
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    home = tmp_path_factory.mktemp("mlplatform-home")
    port = free_port()
    admin_password = "Adm1n-" + secrets.token_urlsafe(12)
    run_cli(
        home,
        "up",
        "--detach",
        "--port",
        str(port),
        "--admin-password",
        admin_password,
    )
    try:
        env = parse_env(run_cli(home, "env").stdout)
        assert env["MLFLOW_TRACKING_PASSWORD"] == admin_password
        yield RunningPlatform(home, env)
    finally:
        run_cli(home, "down", check=False)


@pytest.fixture(scope="session")
def tracking_env(platform: RunningPlatform) -> Iterator[None]:
    """Point this process's MLflow client at the platform, as the admin."""
    keys = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    )
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: platform.env[k] for k in keys})
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """A reachable engine with a base image (built offline once per machine)."""
    from mlplatform.runtimes import images
    from mlplatform.runtimes.docker import DockerUnavailable, connect

    try:
        client = connect()
    except DockerUnavailable as exc:
        pytest.skip(exc.message)
    tags = {tag for image in client.images.list() for tag in image.tags}
    if not {images.PUBLIC_BASE_IMAGE, images.OFFLINE_BASE_IMAGE} & tags:
        images.build_base_image(client)


@pytest.fixture(params=["process", pytest.param("docker", marks=pytest.mark.docker)])
def runtime(request: pytest.FixtureRequest) -> str:
    """Runs a deployment test once per runtime: clients cannot tell them apart."""
    if request.param == "docker":
        request.getfixturevalue("docker_ready")
    name: str = request.param
    return name
