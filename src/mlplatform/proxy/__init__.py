"""Traefik as the single entrance of the platform.

``config`` builds Traefik's static and dynamic configuration as plain data, ``writer``
puts it on disk atomically, ``traefik`` runs the process and waits for routes.
"""

from mlplatform.proxy.config import (
    DEPLOYMENT_PRIORITY,
    PLATFORM_API_PRIORITY,
    TRACKING_PRIORITY,
    UNKNOWN_DEPLOYMENT_PRIORITY,
    DeploymentRoute,
    Upstream,
    build_dynamic_config,
    build_static_config,
)
from mlplatform.proxy.traefik import (
    TraefikProcess,
    find_traefik_binary,
    poll_with_backoff,
    route_ready,
)
from mlplatform.proxy.writer import render_yaml, write_config

__all__ = [
    "DEPLOYMENT_PRIORITY",
    "PLATFORM_API_PRIORITY",
    "TRACKING_PRIORITY",
    "UNKNOWN_DEPLOYMENT_PRIORITY",
    "DeploymentRoute",
    "TraefikProcess",
    "Upstream",
    "build_dynamic_config",
    "build_static_config",
    "find_traefik_binary",
    "poll_with_backoff",
    "render_yaml",
    "route_ready",
    "write_config",
]
