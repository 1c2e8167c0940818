"""Runtimes run a fetched model behind MLflow's own scoring server."""

from collections.abc import Callable
from pathlib import Path

from mlplatform.errors import InvalidInput
from mlplatform.runtimes.base import Endpoint, Runtime, RuntimeError_, ServingSpec

__all__ = ["Endpoint", "Runtime", "RuntimeError_", "ServingSpec", "get_runtime"]


def get_runtime(
    name: str,
    state_dir: Path,
    on_status: Callable[[str, str], None] | None = None,
    *,
    docker_base_image: str | None = None,
) -> Runtime:
    """Return the runtime called ``name``; ``docker`` plugs in beside ``process``."""
    if name == "process":
        from mlplatform.runtimes.process import ProcessRuntime

        return ProcessRuntime(state_dir, on_status=on_status)
    if name == "docker":
        from mlplatform.runtimes.docker import DockerRuntime

        return DockerRuntime(
            state_dir, on_status=on_status, base_image=docker_base_image
        )
    raise InvalidInput(f"unknown runtime {name!r}; known runtimes: process, docker")
