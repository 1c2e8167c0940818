"""The generated configuration against the real Traefik binary.

Upstreams are tiny stdlib HTTP servers in threads that echo which upstream answered
and the path it received. Traefik runs once for the module on free ports.
"""

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from mlplatform.proxy import (
    DeploymentRoute,
    TraefikProcess,
    Upstream,
    build_dynamic_config,
    build_static_config,
    route_ready,
    write_config,
)

pytestmark = pytest.mark.integration

GOOD_AUTH = "Basic " + base64.b64encode(b"alice:secret").decode()
BAD_AUTH = "Basic " + base64.b64encode(b"alice:wrong").decode()


@dataclass
class Echo:
    """An upstream: answers JSON naming itself; records forwardAuth calls."""

    name: str
    expected_auth: str | None = None
    seen_uris: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"


def _handler(echo: Echo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if echo.expected_auth is not None:
                self._authenticate()
                return
            # Like the platform API: it serves no path under /deploy/ itself.
            if echo.name == "platform-api" and self.path.startswith("/deploy/"):
                self._reply(404, {"upstream": echo.name})
                return
            self._reply(200, {"upstream": echo.name, "path": self.path})

        def _authenticate(self) -> None:
            echo.seen_uris.append(self.headers.get("X-Forwarded-Uri", ""))
            if self.headers.get("Authorization") == echo.expected_auth:
                self._reply(200, {})
            else:
                self._reply(401, {"detail": "bad credentials"})

        def _reply(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Echo]]:
    echoes = {
        name: Echo(name) for name in ("tracking", "platform-api", "model", "model2")
    }
    echoes["auth"] = Echo("auth", expected_auth=GOOD_AUTH)
    threads = []
    for echo in echoes.values():
        echo.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(echo))
        thread = threading.Thread(target=echo.server.serve_forever, daemon=True)
        thread.start()
        threads.append(thread)
    yield echoes
    for echo in echoes.values():
        assert echo.server is not None
        echo.server.shutdown()
        echo.server.server_close()
    for thread in threads:
        thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proxy:
    base_url: str
    dynamic_file: Path
    process: TraefikProcess
    upstreams: dict[str, Echo]

    def routes(self, extra: bool = False) -> list[DeploymentRoute]:
        up = self.upstreams
        auth_url = up["auth"].url + "/platform/internal/auth"
        routes = [
            DeploymentRoute("srv_1", "iris", up["model"].url),
            DeploymentRoute("srv_1", "secure", up["model"].url, auth_url),
        ]
        if extra:
            routes.append(DeploymentRoute("srv_2", "late", up["model2"].url))
        return routes

    def write_routes(self, extra: bool = False) -> bool:
        tracking = Upstream("tracking", self.upstreams["tracking"].url)
        api = Upstream("platform-api", self.upstreams["platform-api"].url)
        config = build_dynamic_config(tracking, api, self.routes(extra))
        return write_config(self.dynamic_file, config)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return httpx.get(self.base_url + path, headers=headers, trust_env=False)


@pytest.fixture(scope="module")
def proxy(
    upstreams: dict[str, Echo], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    root = tmp_path_factory.mktemp("traefik")
    dynamic_dir = root / "dynamic"
    dynamic_dir.mkdir()
    port, ping_port = _free_port(), _free_port()
    process = TraefikProcess(
        static_config_path=root / "traefik.yml",
        output_file=root / "traefik.out",
        ping_port=ping_port,
    )
    process.write_static_config(
        build_static_config(
            host="127.0.0.1",
            port=port,
            dynamic_dir=dynamic_dir,
            log_file=root / "traefik.log",
            ping_port=ping_port,
            access_log_file=root / "access.log",
        )
    )
    proxy = Proxy(
        f"http://127.0.0.1:{port}", dynamic_dir / "routes.yml", process, upstreams
    )
    proxy.write_routes()
    process.start()
    try:
        process.wait_healthy(timeout=20)
        assert route_ready(proxy.base_url, "/deploy/srv_1/iris/", timeout=20)
        yield proxy
    finally:
        process.stop()


def test_ping_is_healthy(proxy: Proxy) -> None:
    assert proxy.process.is_healthy()


def test_deployment_route_strips_prefix(proxy: Proxy) -> None:
    response = proxy.get("/deploy/srv_1/iris/invocations?x=1")
    assert response.status_code == 200
    assert response.json() == {"upstream": "model", "path": "/invocations?x=1"}

    assert proxy.get("/deploy/srv_1/iris").json() == {"upstream": "model", "path": "/"}


@pytest.mark.parametrize(
    "path", ["/deploy/srv_1/iris2/invocations", "/deploy/srv_1/irises", "/deploy/x"]
)
def test_unknown_deployment_goes_to_platform_api(proxy: Proxy, path: str) -> None:
    # /deploy/srv_1/iris must not capture /deploy/srv_1/iris2, and MLflow never
    # sees /deploy/ paths.
    response = proxy.get(path)
    assert response.status_code == 404
    assert response.json() == {"upstream": "platform-api"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": BAD_AUTH}])
def test_forward_auth_rejects(proxy: Proxy, headers: dict[str, str]) -> None:
    response = proxy.get("/deploy/srv_1/secure/invocations", **headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "bad credentials"}


def test_forward_auth_accepts_right_credentials(proxy: Proxy) -> None:
    auth = proxy.upstreams["auth"]
    auth.seen_uris.clear()

    response = proxy.get(
        "/deploy/srv_1/secure/invocations",
        Authorization=GOOD_AUTH,
        **{"X-Forwarded-Uri": "/forged"},
    )

    assert response.status_code == 200
    assert response.json() == {"upstream": "model", "path": "/invocations"}
    # forwardAuth ran before stripPrefix, so the auth server saw the public path,
    # and the client's own X-Forwarded-Uri was not trusted.
    assert auth.seen_uris == ["/deploy/srv_1/secure/invocations"]


def test_catch_all_reaches_tracking(proxy: Proxy) -> None:
    response = proxy.get("/api/2.0/mlflow/experiments/search")
    assert response.json() == {
        "upstream": "tracking",
        "path": "/api/2.0/mlflow/experiments/search",
    }


def test_platform_api_is_routed_without_strip(proxy: Proxy) -> None:
    response = proxy.get("/platform/api/v1/deploy-servers")
    assert response.json() == {
        "upstream": "platform-api",
        "path": "/platform/api/v1/deploy-servers",
    }


@pytest.mark.parametrize(
    "path", ["/platform/internal", "/platform/internal/", "/platform/internal/auth/x"]
)
def test_internal_paths_fall_through_to_tracking(proxy: Proxy, path: str) -> None:
    assert proxy.get(path).json() == {"upstream": "tracking", "path": path}


def test_rewrite_adds_route_without_restart(proxy: Proxy) -> None:
    running = proxy.process.process
    assert running is not None
    assert proxy.get("/deploy/srv_2/late/ping").status_code == 404
    assert proxy.write_routes() is False

    written = time.monotonic()
    assert proxy.write_routes(extra=True) is True
    assert route_ready(proxy.base_url, "/deploy/srv_2/late/ping", timeout=20)
    print(f"traefik picked up the new route in {time.monotonic() - written:.2f} s")

    response = proxy.get("/deploy/srv_2/late/ping")
    assert response.json() == {"upstream": "model2", "path": "/ping"}
    assert proxy.process.process is running
    assert running.poll() is None
    assert proxy.get("/deploy/srv_1/iris/x").json()["upstream"] == "model"


def test_access_log_has_no_authorization(proxy: Proxy) -> None:
    proxy.get("/deploy/srv_1/secure/x", Authorization=GOOD_AUTH)
    access_log = proxy.dynamic_file.parent.parent / "access.log"
    assert access_log.exists()
    assert GOOD_AUTH.split()[1] not in access_log.read_text()


def test_traefik_accepted_the_whole_config(proxy: Proxy) -> None:
    log = (proxy.dynamic_file.parent.parent / "traefik.log").read_text()
    assert " ERR " not in log
    assert "is not configured" not in log
