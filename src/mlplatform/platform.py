"""Composition root of the platform API process: wires store, runtimes, routes."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlplatform import credentials
from mlplatform.domain.access import AccessService
from mlplatform.domain.deployments import DEFAULT_INSTANCE, DeployService
from mlplatform.domain.instances import InstanceService
from mlplatform.domain.names import BasicCredentials
from mlplatform.domain.route_auth import RouteAuthCache
from mlplatform.domain.tokens import IssuedToken, TokenService
from mlplatform.errors import NotFound, Unauthenticated, Unavailable
from mlplatform.proxy import (
    DeploymentRoute,
    Upstream,
    build_dynamic_config,
    poll_with_backoff,
    route_ready,
    write_config,
)
from mlplatform.runtimes import Runtime, get_runtime
from mlplatform.settings import Settings
from mlplatform.store import Database
from mlplatform.tracking import verify_credentials

logger = logging.getLogger(__name__)

ROUTES_FILE = "routes.yml"
RUNTIMES = ("process", "docker")


@dataclass(frozen=True)
class Wiring:
    """Where the other components of this platform listen (chosen by ``up``)."""

    tracking_url: str  # the tracking server, reached directly, not through Traefik
    api_url: str  # this API, as Traefik reaches it
    dynamic_dir: Path  # Traefik's file-provider folder
    entrance_url: str  # Traefik's public entrypoint, as reached from this machine


class Platform:
    def __init__(self, settings: Settings, wiring: Wiring) -> None:
        self.settings = settings
        self.wiring = wiring
        self.home = settings.resolved_home()
        self.db = Database(settings.resolved_database_url())
        self.tokens = TokenService(self.db)
        self.instances = InstanceService(
            self.db,
            self.home,
            settings.resolved_public_url(),
            settings.resolved_database_url(),
            publish=lambda: self.deploys.publish_routes(),
            wait_served=self._wait_ok,
        )
        self.access = AccessService(
            wiring.tracking_url, self.tokens, self._admin_credentials
        )
        self.runtimes: dict[str, Runtime] = {}
        self.deploys = DeployService(
            self.db,
            self.runtimes,
            home=self.home,
            public_url=settings.resolved_public_url(),
            tracking_url=self._tracking_url,
            auth_url=lambda deployment_id: (
                f"{wiring.api_url}/platform/internal/auth/{deployment_id}"
            ),
            publish=self._write_routes,
            wait_routed=self._wait_routed,
            deploy_timeout=settings.deploy_timeout,
            auth_cache=RouteAuthCache(settings.auth_cache_ttl),
        )

    def start(self) -> None:
        """Migrate the schema, start the runtimes, reconcile deployments and routes."""
        self.db.migrate()
        for name in RUNTIMES:
            self.runtimes[name] = get_runtime(
                name,
                self.home / "deployments",
                self.deploys.on_runtime_status,
                docker_base_image=self.settings.docker_base_image,
            )
        self.instances.start_all()
        self.deploys.reconcile()
        logger.info("platform API ready; routes in %s", self.wiring.dynamic_dir)

    def stop(self, stop_servers: bool = True) -> None:
        for runtime in self.runtimes.values():
            runtime.close(stop_servers=stop_servers)
        self.instances.stop_all()
        self.db.close()

    def exchange_register_token(
        self, register_token: str, basic: tuple[str, str] | None, name: str
    ) -> IssuedToken:
        """A user proves who they are to MLflow, then spends a register token."""
        if basic is None:
            raise Unauthenticated(
                "exchanging a register token needs your MLflow credentials "
                "(Authorization: Basic)"
            )
        verify_credentials(self.wiring.tracking_url, *basic)
        return self.tokens.exchange(register_token, basic[0], name)

    def require_user(self, username: str) -> None:
        """Raise ``NotFound`` unless some MLflow instance of the platform knows it."""
        try:
            self.access.require_user(username)
        except NotFound:
            if not self.instances.has_user(username):
                raise NotFound(
                    f"user {username!r} not found in any MLflow instance"
                ) from None

    def _admin_credentials(self) -> BasicCredentials:
        admin = credentials.load(self.home)
        if admin is None:
            raise Unavailable(f"no admin credentials in {self.home}")
        return BasicCredentials(admin.admin_user, admin.admin_password)

    def _wait_routed(self, path: str, present: bool) -> bool:
        """Wait until Traefik serves ``path`` (or, with ``present`` false, stops)."""
        if present:
            return route_ready(self.wiring.entrance_url, path)
        return self._wait_status(path, 404, timeout=10)

    def _wait_ok(self, path: str) -> bool:
        """Wait until ``path`` answers 200 through Traefik."""
        return self._wait_status(path, 200, timeout=15)

    def _wait_status(self, path: str, status: int, timeout: float) -> bool:
        url = self.wiring.entrance_url + path

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2, trust_env=False).status_code == status
            except httpx.HTTPError:
                return False

        return poll_with_backoff(answers, timeout)

    def _tracking_url(self, instance: str) -> str:
        if instance == DEFAULT_INSTANCE:
            return self.wiring.tracking_url
        return self.instances.tracking_url(instance)

    def _write_routes(self, routes: Sequence[DeploymentRoute]) -> None:
        config = build_dynamic_config(
            tracking=Upstream("tracking", self.wiring.tracking_url),
            platform_api=Upstream("platform-api", self.wiring.api_url),
            deployments=routes,
            instances=[Upstream(n, url) for n, url in self.instances.routes()],
        )
        if write_config(self.wiring.dynamic_dir / ROUTES_FILE, config):
            logger.info("routes rewritten: %d deployment route(s)", len(routes))
