import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.errors import InvalidInput
from mlplatform.proxy import (
    DEPLOYMENT_PRIORITY,
    PLATFORM_API_PRIORITY,
    TRACKING_PRIORITY,
    UNKNOWN_DEPLOYMENT_PRIORITY,
    DeploymentRoute,
    Upstream,
    build_dynamic_config,
    build_static_config,
    render_yaml,
    write_config,
)

TRACKING = Upstream("tracking", "http://127.0.0.1:5000")
API = Upstream("platform-api", "http://127.0.0.1:8001")
AUTH = "http://127.0.0.1:8001/platform/internal/auth/x"


def route(server: str, deployment: str, auth: str | None = None) -> DeploymentRoute:
    return DeploymentRoute(server, deployment, "http://127.0.0.1:9000", auth)


def http(*deployments: DeploymentRoute) -> dict[str, Any]:
    config = build_dynamic_config(TRACKING, API, deployments)
    assert list(config) == ["http"]
    return config["http"]  # type: ignore[no-any-return]


def test_deployment_route_with_underscores() -> None:
    deployment = route("my_server", "iris_v2")
    routers = http(deployment)["routers"]

    router = routers[deployment.object_name]
    assert deployment.object_name.startswith("deploy-my-server-iris-v2-")
    assert router["rule"] == (
        "PathPrefix(`/deploy/my_server/iris_v2/`) || Path(`/deploy/my_server/iris_v2`)"
    )
    assert router["entryPoints"] == ["web"]
    assert router["priority"] == DEPLOYMENT_PRIORITY


def test_deployment_service_passes_host_header() -> None:
    deployment = route("s", "d")
    service = http(deployment)["services"][deployment.object_name]
    assert service == {
        "loadBalancer": {
            "passHostHeader": True,
            "servers": [{"url": "http://127.0.0.1:9000"}],
        }
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [(("a_b", "c"), ("a", "b_c")), (("a-b", "c"), ("a_b", "c"))],
)
def test_object_names_do_not_collide(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    one, two = route(*first), route(*second)
    assert one.object_name != two.object_name
    assert len(http(one, two)["routers"]) == 5


def test_object_name_is_deterministic() -> None:
    assert route("s", "d").object_name == route("s", "d").object_name


def test_duplicate_deployment_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="used twice"):
        http(route("s", "d"), route("s", "d"))


@pytest.mark.parametrize("name", ["", "Upper", "a/b", "a b", "a`b", "-a", "é"])
def test_unsafe_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidInput):
        route(name, "d")
    with pytest.raises(InvalidInput):
        route("s", name)


@pytest.mark.parametrize("url", ["127.0.0.1:9000", "ftp://x", "http://a`b", ""])
def test_bad_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidInput):
        DeploymentRoute("s", "d", url, None)
    with pytest.raises(InvalidInput):
        DeploymentRoute("s", "d", "http://127.0.0.1:1", url)


def test_without_auth_only_strip_prefix() -> None:
    deployment = route("s", "d")
    config = http(deployment)
    name = deployment.object_name

    assert config["routers"][name]["middlewares"] == [f"{name}-strip"]
    assert config["middlewares"] == {
        f"{name}-strip": {"stripPrefix": {"prefixes": ["/deploy/s/d"]}}
    }


def test_auth_runs_before_strip_prefix() -> None:
    deployment = route("s", "d", AUTH)
    config = http(deployment)
    name = deployment.object_name

    assert config["routers"][name]["middlewares"] == [f"{name}-auth", f"{name}-strip"]
    forward_auth = config["middlewares"][f"{name}-auth"]["forwardAuth"]
    assert forward_auth["address"] == AUTH
    assert forward_auth["trustForwardHeader"] is False
    assert forward_auth["maxResponseBodySize"] > 0
    assert "basicAuth" not in str(config)


def test_priorities_let_deployments_and_api_win() -> None:
    routers = http(route("s", "d"))["routers"]
    assert routers["tracking"]["priority"] == TRACKING_PRIORITY
    assert routers["platform-api"]["priority"] == PLATFORM_API_PRIORITY
    assert routers["platform-api-unknown-deployment"]["priority"] == (
        UNKNOWN_DEPLOYMENT_PRIORITY
    )
    assert (
        TRACKING_PRIORITY
        < PLATFORM_API_PRIORITY
        < UNKNOWN_DEPLOYMENT_PRIORITY
        < DEPLOYMENT_PRIORITY
    )


def test_unknown_deployments_go_to_platform_api() -> None:
    router = http()["routers"]["platform-api-unknown-deployment"]
    assert router == {
        "entryPoints": ["web"],
        "priority": UNKNOWN_DEPLOYMENT_PRIORITY,
        "rule": "PathPrefix(`/deploy/`)",
        "service": "platform-api",
    }


def test_tracking_is_catch_all_without_middlewares() -> None:
    config = http()
    assert config["routers"]["tracking"] == {
        "entryPoints": ["web"],
        "priority": TRACKING_PRIORITY,
        "rule": "PathPrefix(`/`)",
        "service": "tracking",
    }
    assert config["services"]["tracking"]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:5000"}
    ]


def test_no_empty_sections() -> None:
    # Traefik refuses a file holding e.g. "middlewares: {}".
    config = http()
    assert sorted(config) == ["routers", "services"]
    assert all(config.values())


def test_platform_api_excludes_internal_paths() -> None:
    router = http()["routers"]["platform-api"]
    assert router["rule"] == (
        "PathPrefix(`/platform/`) && !PathPrefix(`/platform/internal/`)"
        " && !Path(`/platform/internal`)"
    )
    assert "middlewares" not in router


def test_dynamic_config_is_deterministic() -> None:
    routes = [route("b", "x", AUTH), route("a", "y"), route("a_1", "z")]
    forward = render_yaml(build_dynamic_config(TRACKING, API, routes))
    backward = render_yaml(build_dynamic_config(TRACKING, API, routes[::-1]))
    assert forward == backward
    assert yaml.safe_load(forward) == build_dynamic_config(TRACKING, API, routes)


def test_upstreams_must_have_distinct_names() -> None:
    with pytest.raises(InvalidInput):
        build_dynamic_config(TRACKING, Upstream("tracking", "http://x:1"), [])


def test_static_config(tmp_path: Path) -> None:
    config = build_static_config(
        host="0.0.0.0",
        port=8080,
        dynamic_dir=tmp_path / "dynamic",
        log_file=tmp_path / "traefik.log",
        ping_port=8082,
    )
    assert config == {
        "entryPoints": {
            "traefik": {
                "address": "127.0.0.1:8082",
                "http": {"aliasHeadersStrategy": "delete"},
            },
            "web": {
                "address": "0.0.0.0:8080",
                "http": {"aliasHeadersStrategy": "delete"},
            },
        },
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"filePath": str(tmp_path / "traefik.log"), "level": "INFO"},
        "ping": {"entryPoint": "traefik"},
        "providers": {
            "file": {"directory": str(tmp_path / "dynamic"), "watch": True},
            "providersThrottleDuration": "200ms",
        },
    }


def test_static_config_ipv6_host(tmp_path: Path) -> None:
    config = build_static_config(
        host="::", port=80, dynamic_dir=tmp_path, log_file=tmp_path, ping_port=1
    )
    assert config["entryPoints"]["web"]["address"] == "[::]:80"


def test_access_log_drops_headers(tmp_path: Path) -> None:
    config = build_static_config(
        host="127.0.0.1",
        port=8080,
        dynamic_dir=tmp_path,
        log_file=tmp_path / "traefik.log",
        ping_port=8082,
        access_log_file=tmp_path / "access.log",
    )
    assert config["accessLog"] == {
        "fields": {"headers": {"defaultMode": "drop"}},
        "filePath": str(tmp_path / "access.log"),
    }
    assert "api" not in config


def test_write_config_creates_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    config = build_dynamic_config(TRACKING, API, [route("s", "d")])

    assert write_config(path, config) is True
    assert yaml.safe_load(path.read_text()) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yml"]


def test_write_config_skips_unchanged_content(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    config = build_dynamic_config(TRACKING, API, [])
    write_config(path, config)
    inode = path.stat().st_ino

    assert write_config(path, build_dynamic_config(TRACKING, API, [])) is False
    assert path.stat().st_ino == inode


def test_write_config_replaces_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "routes.yml"
    write_config(path, build_dynamic_config(TRACKING, API, []))
    before = path.stat().st_ino

    assert write_config(path, build_dynamic_config(TRACKING, API, [route("s", "d")]))
    # A new inode means the file was renamed into place, never rewritten in place.
    assert path.stat().st_ino != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["routes.yml"]


def test_write_config_leaves_no_temp_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(source: str, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("mlplatform.proxy.writer.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_config(tmp_path / "routes.yml", build_dynamic_config(TRACKING, API, []))
    assert list(tmp_path.iterdir()) == []
