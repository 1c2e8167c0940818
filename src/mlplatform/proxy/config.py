"""Traefik configuration as data: pure functions, no I/O.

Every builder returns plain dicts shaped exactly like Traefik v3's own YAML, so the
result can be dumped as is and compared with the reference documentation:
https://doc.traefik.io/traefik/reference/

Routing of the single entrance (entrypoint ``web``):

    /deploy/<deploy server>/<deployment>[/...]  -> that deployment's scoring server
    /deploy/... of no known deployment          -> the platform API (answers 404)
    /platform/... except /platform/internal...  -> the platform API
    /instances/<instance>/...                   -> that MLflow or JupyterHub instance
    everything else                             -> the MLflow tracking server

Unknown deployments go to the platform API rather than to MLflow, whose auth would
answer 401 and ask for MLflow credentials; a 404 there also tells ``route_ready``
reliably that Traefik has not loaded a deployment's router yet.

Explicit priorities decide overlaps, so the order of rules never depends on Traefik's
default (rule length).
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlplatform.errors import InvalidInput

Config = dict[str, Any]

WEB_ENTRYPOINT = "web"
PING_ENTRYPOINT = "traefik"

TRACKING_PRIORITY = 1
PLATFORM_API_PRIORITY = 100
UNKNOWN_DEPLOYMENT_PRIORITY = 150
DEPLOYMENT_PRIORITY = 200
INSTANCE_PRIORITY = 120
INSTANCES_PREFIX = "/instances"

PLATFORM_PREFIX = "/platform/"
INTERNAL_PREFIX = "/platform/internal"
DEPLOY_PREFIX = "/deploy"

# The auth server answers with a short JSON error at most; bounds what Traefik buffers.
AUTH_MAX_RESPONSE_BYTES = 64 * 1024

# Names end up inside backtick-quoted rule literals and Traefik object names, so only
# characters harmless in both are allowed.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_URL = re.compile(r"https?://[^\s`]+")


def _check_name(kind: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{kind} name {value!r} is invalid; use lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit"
        )


def _check_url(kind: str, value: str) -> None:
    if not _URL.fullmatch(value):
        raise InvalidInput(f"{kind} URL {value!r} is invalid; use http(s)://host:port")


@dataclass(frozen=True)
class Upstream:
    """A fixed component behind the proxy (tracking server, platform API)."""

    name: str
    url: str

    def __post_init__(self) -> None:
        _check_name("upstream", self.name)
        _check_url("upstream", self.url)


@dataclass(frozen=True)
class DeploymentRoute:
    """One deployment reachable at ``/deploy/<deploy_server>/<deployment>``.

    With ``auth_url`` set, every request is first sent to that address (Traefik
    forwardAuth, original headers included) and only reaches the model on a 2xx.
    """

    deploy_server: str
    deployment: str
    upstream_url: str
    auth_url: str | None = None

    def __post_init__(self) -> None:
        _check_name("deploy server", self.deploy_server)
        _check_name("deployment", self.deployment)
        _check_url("deployment upstream", self.upstream_url)
        if self.auth_url is not None:
            _check_url("forward auth", self.auth_url)

    @property
    def prefix(self) -> str:
        return f"{DEPLOY_PREFIX}/{self.deploy_server}/{self.deployment}"

    @property
    def object_name(self) -> str:
        """Traefik name of this route's router and service, unique per route.

        Underscores become hyphens for readability, so the hash of the exact pair
        keeps ``a_b/c`` and ``a/b_c`` (or ``a-b/c``) apart.
        """
        pair = f"{self.deploy_server}/{self.deployment}"
        digest = hashlib.sha256(pair.encode()).hexdigest()[:8]
        readable = pair.replace("_", "-").replace("/", "-")
        return f"deploy-{readable}-{digest}"


def _service(url: str) -> Config:
    return {"loadBalancer": {"servers": [{"url": url}], "passHostHeader": True}}


def _router(rule: str, service: str, priority: int) -> Config:
    return {
        "rule": rule,
        "service": service,
        "priority": priority,
        "entryPoints": [WEB_ENTRYPOINT],
    }


def tracking_routes(tracking: Upstream) -> Config:
    """Catch-all route to the MLflow tracking server, lowest priority."""
    router = _router("PathPrefix(`/`)", tracking.name, TRACKING_PRIORITY)
    return {
        "routers": {tracking.name: router},
        "services": {tracking.name: _service(tracking.url)},
    }


def platform_api_routes(platform_api: Upstream) -> Config:
    """Public part of the platform API; ``/platform/internal`` is never exposed."""
    rule = (
        f"PathPrefix(`{PLATFORM_PREFIX}`)"
        f" && !PathPrefix(`{INTERNAL_PREFIX}/`) && !Path(`{INTERNAL_PREFIX}`)"
    )
    router = _router(rule, platform_api.name, PLATFORM_API_PRIORITY)
    unknown = _router(
        f"PathPrefix(`{DEPLOY_PREFIX}/`)",
        platform_api.name,
        UNKNOWN_DEPLOYMENT_PRIORITY,
    )
    return {
        "routers": {
            platform_api.name: router,
            f"{platform_api.name}-unknown-deployment": unknown,
        },
        "services": {platform_api.name: _service(platform_api.url)},
    }


def instance_routes(instance: Upstream) -> Config:
    """An instance served under ``/instances/<name>/``, prefix kept.

    The instance itself knows its prefix (MLflow's ``--static-prefix``, JupyterHub's
    ``base_url``), so links it renders stay right.
    """
    _check_name("instance", instance.name)
    prefix = f"{INSTANCES_PREFIX}/{instance.name}"
    name = f"instance-{instance.name.replace('_', '-')}"
    rule = f"PathPrefix(`{prefix}/`) || Path(`{prefix}`)"
    return {
        "routers": {name: _router(rule, name, INSTANCE_PRIORITY)},
        "services": {name: _service(instance.url)},
    }


def _forward_auth(address: str) -> Config:
    return {
        "address": address,
        # Explicitly false: client-sent X-Forwarded-* headers are all dropped before
        # the auth server sees the request (Traefik warns when this is left unset).
        "trustForwardHeader": False,
        "maxResponseBodySize": AUTH_MAX_RESPONSE_BYTES,
    }


def deployment_routes(route: DeploymentRoute) -> Config:
    """Router, service and middlewares of one deployment."""
    name = route.object_name
    rule = f"PathPrefix(`{route.prefix}/`) || Path(`{route.prefix}`)"
    middlewares: Config = {
        f"{name}-strip": {"stripPrefix": {"prefixes": [route.prefix]}}
    }
    chain = [f"{name}-strip"]
    if route.auth_url is not None:
        # Authentication first: the auth server must see the public path, and a
        # rejected request must never reach the model.
        middlewares[f"{name}-auth"] = {"forwardAuth": _forward_auth(route.auth_url)}
        chain.insert(0, f"{name}-auth")

    router = _router(rule, name, DEPLOYMENT_PRIORITY)
    router["middlewares"] = chain
    return {
        "routers": {name: router},
        "services": {name: _service(route.upstream_url)},
        "middlewares": middlewares,
    }


def _merge(into: Config, part: Config) -> None:
    # Sections are only created when they get an object: Traefik rejects the whole
    # file if a section such as "middlewares" is present but empty.
    for section, objects in part.items():
        target = into.setdefault(section, {})
        for name, value in objects.items():
            if name in target:
                raise InvalidInput(f"Traefik object name {name!r} is used twice")
            target[name] = value


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return _sort_keys(value)
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _sort_keys(config: Config) -> Config:
    # PyYAML sorts on dump too; sorting here makes equal configs equal dicts.
    return {key: _sorted(config[key]) for key in sorted(config)}


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_dynamic_config(
    tracking: Upstream,
    platform_api: Upstream,
    deployments: Sequence[DeploymentRoute],
    instances: Sequence[Upstream] = (),
) -> Config:
    """The whole dynamic configuration (``http:`` section) of the entrance.

    Deterministic: the same inputs in any order give an equal, key-sorted dict.
    Raises ``InvalidInput`` if two routes would share a Traefik object name.
    """
    http: Config = {}
    _merge(http, tracking_routes(tracking))
    _merge(http, platform_api_routes(platform_api))
    for route in deployments:
        _merge(http, deployment_routes(route))
    for instance in instances:
        _merge(http, instance_routes(instance))
    return {"http": _sort_keys(http)}


def _entrypoint(address: str) -> Config:
    # MLflow and its scoring servers are WSGI/ASGI apps that read X.Foo and X_Foo as
    # X-Foo; deleting such aliases stops clients from spoofing headers Traefik sets.
    return {"address": address, "http": {"aliasHeadersStrategy": "delete"}}


def build_static_config(
    *,
    host: str,
    port: int,
    dynamic_dir: Path,
    log_file: Path,
    ping_port: int,
    access_log_file: Path | None = None,
    reload_throttle_ms: int = 200,
) -> Config:
    """Traefik's static configuration (the file passed with ``--configfile``).

    The ping endpoint listens on its own loopback-only entrypoint, so health checks
    never go through, or show up on, the public entrance. ``reload_throttle_ms`` is
    how long Traefik waits after a reload before applying the next change; its
    default of 2 s would delay every new deployment route by about that much.
    """
    config: Config = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            WEB_ENTRYPOINT: _entrypoint(_address(host, port)),
            PING_ENTRYPOINT: _entrypoint(f"127.0.0.1:{ping_port}"),
        },
        "ping": {"entryPoint": PING_ENTRYPOINT},
        "providers": {
            "file": {"directory": str(dynamic_dir), "watch": True},
            "providersThrottleDuration": f"{reload_throttle_ms}ms",
        },
        "log": {"level": "INFO", "filePath": str(log_file)},
    }
    if access_log_file is not None:
        # Request headers carry deployment credentials; keep every one of them out.
        config["accessLog"] = {
            "filePath": str(access_log_file),
            "fields": {"headers": {"defaultMode": "drop"}},
        }
    return _sort_keys(config)
