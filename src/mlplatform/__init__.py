"""mlplatform: self-hosted MLflow, deploy servers and protected model endpoints."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["MLPlatform", "__version__"]

if TYPE_CHECKING:
    from mlplatform.client import MLPlatform


def __getattr__(name: str) -> Any:
    # The client is imported lazily so the server side never pays for it and vice versa.
    if name == "MLPlatform":
        from mlplatform.client import MLPlatform

        return MLPlatform
    raise AttributeError(name)
