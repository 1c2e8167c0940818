"""The contract between the deploy server and whatever runs a model.

A runtime takes a model folder already fetched to local disk and runs MLflow's own
scoring server for it (never a scoring server of ours). The deploy server owns the
database rows; a runtime only owns what runs. It is told everything it needs in a
``ServingSpec`` and answers with an ``Endpoint`` the proxy can route to.
"""

import abc
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlplatform.errors import PlatformError

logger = logging.getLogger(__name__)


class RuntimeError_(PlatformError):
    """A runtime could not start, find or stop what it runs."""


# Called as ``listener(deployment_id, status)`` on every status change, from whichever
# thread made it (an API call or the runtime's supervisor); it must not block.
StatusListener = Callable[[str, str], None]


@dataclass(frozen=True)
class ServingSpec:
    deployment_id: str  # stable id, used to name logs and to find the server again
    model_dir: Path  # local folder holding the MLmodel file
    workers: int = 1
    # Extra metadata a runtime may attach to what it runs (the docker runtime turns it
    # into container labels: deploy server, deployment name, model URI). Left out of
    # the hash so that a spec stays hashable.
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    size: str = (
        "mid"  # resource tier: low / mid / high; ignored by runtimes without limits
    )


@dataclass(frozen=True)
class Endpoint:
    url: str  # e.g. http://127.0.0.1:41234, what Traefik forwards to
    pid: int | None = None  # process runtime: the scoring server's pid
    ref: str | None = None  # runtime-specific handle (container id, ...)


class Runtime(abc.ABC):
    name: str

    _on_status: StatusListener | None = None

    def _emit(self, deployment_id: str, status: str) -> None:
        """Tell the listener a server changed state; its failures are only logged."""
        if self._on_status is None:
            return
        try:
            self._on_status(deployment_id, status)
        except Exception:
            # A broken listener must not take supervision or an API call down with it.
            logger.exception("status listener failed for deployment %s", deployment_id)

    @abc.abstractmethod
    def start(self, spec: ServingSpec) -> Endpoint:
        """Start serving ``spec`` and return at once, before the model has loaded.

        Supervision begins here: if the server dies later the runtime restarts it with
        backoff. Raises ``RuntimeError_`` if nothing could be started at all.
        """

    @abc.abstractmethod
    def wait_ready(self, deployment_id: str, timeout: float) -> Endpoint:
        """Block until ``/ping`` answers 200 and return the endpoint.

        Raises ``RuntimeError_`` carrying the last lines of the log if the server exits
        or does not answer within ``timeout``; the runtime then stops supervising it.
        """

    @abc.abstractmethod
    def adopt(self, spec: ServingSpec, previous: Endpoint) -> Endpoint | None:
        """Take over a server started by an earlier platform process.

        Returns the endpoint if ``previous`` still runs this deployment and answers
        ``/ping``; supervision then resumes. Returns ``None`` if it is gone.
        """

    @abc.abstractmethod
    def stop(self, deployment_id: str) -> None:
        """Stop the server and its supervision; a no-op if nothing runs."""

    @abc.abstractmethod
    def status(self, deployment_id: str) -> str:
        """One of ``starting``, ``running``, ``restarting``, ``failed``, ``stopped``."""

    @abc.abstractmethod
    def logs(self, deployment_id: str, tail: int | None = None) -> str:
        """The server's output, the last ``tail`` lines if given."""

    @abc.abstractmethod
    def endpoint(self, deployment_id: str) -> Endpoint | None:
        """Where the server listens now (it may change after a restart)."""

    def check_available(self) -> None:
        """Raise ``RuntimeError_`` saying how to fix it if nothing can run now."""
        return None

    def check_model(self, model_dir: Path) -> None:
        """Raise ``InvalidInput`` before anything starts if the model cannot run here.

        Called after the fetch, before ``start``; the default accepts every model.
        """
        return None

    def remove_orphans(self, deployment_ids: Collection[str]) -> list[str]:
        """Remove servers of deployments not in ``deployment_ids``; return their ids."""
        return []

    @abc.abstractmethod
    def close(self, stop_servers: bool) -> None:
        """Stop supervising; stop every server too when ``stop_servers``."""
