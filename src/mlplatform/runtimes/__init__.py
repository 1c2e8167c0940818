"""Runtimes run a fetched model behind MLflow's own scoring server."""

from mlplatform.runtimes.base import Endpoint, Runtime, RuntimeError_, ServingSpec

__all__ = ["Endpoint", "Runtime", "RuntimeError_", "ServingSpec", "get_runtime"]


def get_runtime(name: str, state_dir: "object") -> Runtime:
    """Return the runtime called ``name`` (``process`` today; ``docker`` plugs in here)."""
    from pathlib import Path

    from mlplatform.errors import InvalidInput

    if name == "process":
        from mlplatform.runtimes.process import ProcessRuntime

        return ProcessRuntime(Path(str(state_dir)))
    raise InvalidInput(f"unknown runtime {name!r}; known runtimes: process")
