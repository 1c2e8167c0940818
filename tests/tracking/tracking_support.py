"""Names and helpers shared by the tracking tests and their conftest."""

import secrets
import socket
from dataclasses import dataclass

from mlplatform.tracking.server import TrackingServer

MODEL_NAME = "iris"
READER = ("reader", "reader-pass-" + secrets.token_urlsafe(12))
READER2 = ("reader2", "reader2-pass-" + secrets.token_urlsafe(12))


@dataclass(frozen=True)
class TrackingFixture:
    server: TrackingServer
    admin_password: str
    run_id: str
    model_id: str
    experiment_id: str
    version_source: str
    startup_seconds: float

    @property
    def url(self) -> str:
        return self.server.url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
