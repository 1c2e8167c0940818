"""Session fixtures: one real platform (MLflow + platform API + Traefik) on free ports.

The platform is started the way users start it, with ``mlplatform up --detach``, in a
temporary MLPLATFORM_HOME, and stopped with ``mlplatform down``.
"""

import os
import secrets
from collections.abc import Iterator

import pytest

from platform_support import RunningPlatform, free_port, parse_env, run_cli


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
