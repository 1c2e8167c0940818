"""Deploy servers and their deployments.

A deployment goes through: name reserved (row ``fetching``) -> model fetched with the
caller's MLflow credentials -> requirements checked -> runtime started -> ``/ping``
answers -> route published (``running``). Any failure before the runtime starts
removes the row and the files: nothing half-created is left. A model that starts but
never answers ends ``failed`` with its log tail and gets no route.
"""

import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlplatform.domain.names import BasicCredentials, check_name, parse_auth
from mlplatform.domain.principals import Caller, Principal
from mlplatform.domain.route_auth import RouteAuthCache, hash_password
from mlplatform.domain.views import DeploymentView, DeployServerView
from mlplatform.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from mlplatform.proxy import DeploymentRoute
from mlplatform.runtimes import Endpoint, Runtime, RuntimeError_, ServingSpec
from mlplatform.store import Database, Deployment, DeployServer
from mlplatform.tracking import fetch_model, verify_credentials

logger = logging.getLogger(__name__)

SERVING_STATUSES = ("running", "restarting")
SIZES = ("low", "mid", "high")
DEFAULT_INSTANCE = "default"


@dataclass(frozen=True)
class RouteSecret:
    user: str
    password_hash: str


class DeployService:
    def __init__(
        self,
        db: Database,
        runtimes: dict[str, Runtime],
        *,
        home: Path,
        public_url: str,
        tracking_url: Callable[[str], str],
        auth_url: Callable[[str], str],
        publish: Callable[[Sequence[DeploymentRoute]], None],
        wait_routed: Callable[[str, bool], bool],
        deploy_timeout: float,
        auth_cache: RouteAuthCache,
    ) -> None:
        self.db = db
        self.runtimes = runtimes
        self.home = home
        self.public_url = public_url
        self.tracking_url = tracking_url
        self.auth_url = auth_url
        self._publish = publish
        self._wait_routed = wait_routed
        self.deploy_timeout = deploy_timeout
        self.auth_cache = auth_cache
        self._route_secrets: dict[str, RouteSecret] = {}
        self._publish_lock = threading.Lock()

    # -- deploy servers -------------------------------------------------------

    def create_deploy_server(
        self,
        principal: Principal,
        name: str,
        runtime: str | None,
        default_runtime: str,
        size: str | None = None,
        instance: str | None = None,
    ) -> DeployServerView:
        check_name("deploy server", name)
        runtime = runtime or default_runtime
        if runtime not in self.runtimes:
            known = ", ".join(sorted(self.runtimes))
            raise InvalidInput(f"unknown runtime {runtime!r}; available: {known}")
        size = size or "mid"
        if size not in SIZES:
            raise InvalidInput(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
        self.runtimes[runtime].check_available()
        instance = instance or DEFAULT_INSTANCE
        self.tracking_url(instance)  # the MLflow instance must exist and run
        try:
            with self.db.session() as session:
                server = DeployServer(
                    name=name,
                    owner=principal.username,
                    runtime=runtime,
                    size=size,
                    instance=instance,
                )
                session.add(server)
                session.flush()
                view = self._server_view(server, 0)
        except IntegrityError:
            raise Conflict(f"deploy server {name!r} already exists") from None
        logger.info("deploy server %s created by %s", name, principal.username)
        return view

    def list_deploy_servers(self, principal: Principal) -> list[DeployServerView]:
        with self.db.session() as session:
            query = select(DeployServer).order_by(DeployServer.name)
            if not principal.is_admin:
                query = query.where(DeployServer.owner == principal.username)
            servers = session.scalars(query).all()
            return [self._server_view(s, len(s.deployments)) for s in servers]

    def get_deploy_server(self, principal: Principal, name: str) -> DeployServerView:
        with self.db.session() as session:
            server = self._visible_server(session, principal, name)
            return self._server_view(server, len(server.deployments))

    def delete_deploy_server(
        self, principal: Principal, name: str, force: bool
    ) -> None:
        with self.db.session() as session:
            server = self._visible_server(session, principal, name)
            names = sorted(d.name for d in server.deployments)
        if names and not force:
            raise Conflict(
                f"deploy server {name!r} still has deployments: {', '.join(names)}; "
                "delete them first or force it (--force, force=True)"
            )
        for deployment_name in names:
            self.delete_deployment(principal, name, deployment_name)
        with self.db.session() as session:
            server = self._visible_server(session, principal, name)
            session.delete(server)
        logger.info("deploy server %s deleted by %s", name, principal.username)

    # -- deployments ----------------------------------------------------------

    def create_deployment(
        self,
        caller: Caller,
        server_name: str,
        name: str,
        model_uri: str,
        auth: str | None,
    ) -> DeploymentView:
        check_name("deployment", name)
        route_credentials = parse_auth(auth) if auth is not None else None
        if not isinstance(model_uri, str) or not model_uri.strip():
            raise InvalidInput("model_uri is empty")
        mlflow_credentials = self._require_mlflow_credentials(caller)
        # Hashed first: a slow step that can fail belongs before the name is reserved.
        auth_hash = (
            hash_password(route_credentials.password) if route_credentials else None
        )
        deployment_id, runtime_name, instance = self._reserve(
            caller.principal, server_name, name
        )
        workdir = self.home / "deployments" / deployment_id
        try:
            self.runtimes[runtime_name].check_available()
            tracking_url = self.tracking_url(instance)
            verify_credentials(
                tracking_url, mlflow_credentials.username, mlflow_credentials.password
            )
            result = fetch_model(
                tracking_url,
                model_uri,
                mlflow_credentials.username,
                mlflow_credentials.password,
                workdir / "model",
                timeout=self.deploy_timeout,
            )
            self.runtimes[runtime_name].check_model(result.model_dir)
        except BaseException:
            self._discard(deployment_id, workdir)
            raise

        self._record_fetched(
            deployment_id,
            model_uri,
            route_credentials.username if route_credentials else None,
            auth_hash,
        )
        spec = self._spec(deployment_id, result.model_dir)
        self._start(runtime_name, spec)
        return self._deployment_view_by_id(deployment_id)

    def list_deployments(
        self, principal: Principal, server_name: str
    ) -> list[DeploymentView]:
        with self.db.session() as session:
            server = self._visible_server(session, principal, server_name)
            deployments = sorted(server.deployments, key=lambda d: d.name)
            return [
                self._deployment_view(d)
                for d in deployments
                if principal.is_admin or d.owner == principal.username
            ]

    def get_deployment(
        self, principal: Principal, server_name: str, name: str
    ) -> DeploymentView:
        with self.db.session() as session:
            return self._deployment_view(
                self._visible_deployment(session, principal, server_name, name)
            )

    def delete_deployment(
        self, principal: Principal, server_name: str, name: str
    ) -> None:
        with self.db.session() as session:
            deployment = self._visible_deployment(session, principal, server_name, name)
            deployment_id = deployment.id
            runtime = self.runtimes.get(deployment.deploy_server.runtime)
            was_routed = deployment.status in SERVING_STATUSES
            session.delete(deployment)
        self.publish_routes()
        # The route goes first, so no request reaches a server that is stopping.
        if was_routed:
            self._wait_routed(f"/deploy/{server_name}/{name}/ping", False)
        if runtime is not None:
            runtime.stop(deployment_id)
        self.auth_cache.forget(deployment_id)
        shutil.rmtree(self.home / "deployments" / deployment_id, ignore_errors=True)
        logger.info(
            "deployment %s/%s deleted by %s", server_name, name, principal.username
        )

    def deployment_logs(
        self, principal: Principal, server_name: str, name: str, tail: int | None
    ) -> str:
        with self.db.session() as session:
            deployment = self._visible_deployment(session, principal, server_name, name)
            deployment_id = deployment.id
            runtime = self.runtimes[deployment.deploy_server.runtime]
        return runtime.logs(deployment_id, tail)

    # -- routes and route auth ------------------------------------------------

    def publish_routes(self) -> None:
        """Rewrite Traefik's routes from the database: one per serving deployment."""
        with self._publish_lock:
            routes: list[DeploymentRoute] = []
            secrets: dict[str, RouteSecret] = {}
            with self.db.session() as session:
                query = select(Deployment).where(
                    Deployment.status.in_(SERVING_STATUSES)
                )
                for deployment in session.scalars(query):
                    if not deployment.upstream_url:
                        continue
                    auth_url = None
                    if deployment.auth_user and deployment.auth_hash:
                        auth_url = self.auth_url(deployment.id)
                        secrets[deployment.id] = RouteSecret(
                            deployment.auth_user, deployment.auth_hash
                        )
                    routes.append(
                        DeploymentRoute(
                            deploy_server=deployment.deploy_server.name,
                            deployment=deployment.name,
                            upstream_url=deployment.upstream_url,
                            auth_url=auth_url,
                        )
                    )
            self._route_secrets = secrets
            self._publish(routes)

    def route_auth_cached(self, deployment_id: str, header: str | None) -> bool:
        """The cheap half of ``check_route_auth``: a header verified recently."""
        return deployment_id in self._route_secrets and self.auth_cache.cached(
            deployment_id, header
        )

    def check_route_auth(self, deployment_id: str, header: str | None) -> bool:
        secret = self._route_secrets.get(deployment_id)
        if secret is None:
            return False
        return self.auth_cache.check(
            deployment_id, header, secret.user, secret.password_hash
        )

    # -- reconciliation -------------------------------------------------------

    def reconcile(self) -> None:
        """Bring every stored deployment back: adopt live servers, restart the rest."""
        with self.db.session() as session:
            rows = [
                (
                    d.id,
                    d.deploy_server.name,
                    d.name,
                    d.deploy_server.runtime,
                    d.status,
                    d.upstream_url,
                    d.pid,
                    d.runtime_ref,
                )
                for d in session.scalars(select(Deployment))
            ]
        for deployment_id, server, name, runtime_name, status, url, pid, ref in rows:
            label = f"{server}/{name}"
            if status == "fetching":
                logger.warning("deployment %s: unfinished create -> removed", label)
                self._discard(deployment_id, self.home / "deployments" / deployment_id)
                continue
            if status == "failed":
                continue
            runtime = self.runtimes.get(runtime_name)
            model_dir = self.home / "deployments" / deployment_id / "model"
            if runtime is None or not model_dir.exists():
                reason = (
                    "runtime unavailable" if runtime is None else "model files missing"
                )
                logger.warning("deployment %s: %s -> %s failed", label, status, reason)
                self._set_status(deployment_id, "failed", error=reason)
                continue
            spec = self._spec(deployment_id, model_dir)
            previous = Endpoint(url=url or "", pid=pid, ref=ref)
            adopted = runtime.adopt(spec, previous) if url else None
            if adopted is not None:
                logger.info(
                    "deployment %s: adopted running server %s", label, adopted.url
                )
                self._set_endpoint(deployment_id, adopted, "running")
                continue
            logger.warning("deployment %s: server gone -> restarting", label)
            self._start(runtime_name, spec, publish=False)
        self._remove_orphans([row[0] for row in rows])
        self.publish_routes()

    def _remove_orphans(self, known: list[str]) -> None:
        for name, runtime in self.runtimes.items():
            try:
                removed = runtime.remove_orphans(known)
            except RuntimeError_ as exc:
                logger.warning("runtime %s: cannot look for orphans: %s", name, exc)
                continue
            for deployment_id in removed:
                logger.warning("runtime %s: orphan %s -> removed", name, deployment_id)

    def on_runtime_status(self, deployment_id: str, status: str) -> None:
        """Called by a runtime's supervisor when a server changes state."""
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is None or deployment.status == status:
                return
            previous, deployment.status = deployment.status, status
            runtime = self.runtimes.get(deployment.deploy_server.runtime)
        endpoint = runtime.endpoint(deployment_id) if runtime else None
        if endpoint is not None:
            self._set_endpoint(deployment_id, endpoint, status)
        if (previous in SERVING_STATUSES) != (status in SERVING_STATUSES):
            self.publish_routes()

    # -- steps ----------------------------------------------------------------

    @staticmethod
    def _require_mlflow_credentials(caller: Caller) -> BasicCredentials:
        if caller.mlflow is None:
            raise Unauthenticated(
                "missing MLflow credentials: send Authorization: Basic built from "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            )
        return caller.mlflow

    def _reserve(
        self, principal: Principal, server_name: str, name: str
    ) -> tuple[str, str, str]:
        """Reserve the name; returns the deployment id, its runtime and instance."""
        try:
            with self.db.session() as session:
                server = self._visible_server(session, principal, server_name)
                deployment = Deployment(
                    deploy_server=server,
                    name=name,
                    owner=principal.username,
                    model_uri="",
                    status="fetching",
                )
                session.add(deployment)
                session.flush()
                return deployment.id, server.runtime, server.instance
        except IntegrityError:
            raise Conflict(
                f"deployment {name!r} already exists on deploy server {server_name!r}"
            ) from None

    def _record_fetched(
        self,
        deployment_id: str,
        model_uri: str,
        auth_user: str | None,
        auth_hash: str | None,
    ) -> None:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            deployment.model_uri = model_uri
            deployment.status = "starting"
            deployment.auth_user = auth_user
            deployment.auth_hash = auth_hash

    def _spec(self, deployment_id: str, model_dir: Path) -> ServingSpec:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            labels = {
                "mlplatform.deploy-server": deployment.deploy_server.name,
                "mlplatform.deployment": deployment.name,
                "mlplatform.model-uri": deployment.model_uri,
            }
            size = deployment.deploy_server.size
            return ServingSpec(deployment_id, model_dir, labels=labels, size=size)

    def _start(
        self, runtime_name: str, spec: ServingSpec, publish: bool = True
    ) -> None:
        runtime = self.runtimes[runtime_name]
        try:
            endpoint = runtime.start(spec)
            self._set_endpoint(spec.deployment_id, endpoint, "starting")
            endpoint = runtime.wait_ready(spec.deployment_id, self.deploy_timeout)
        except RuntimeError_ as exc:
            logger.warning("deployment %s: starting -> failed", spec.deployment_id)
            self._set_status(spec.deployment_id, "failed", error=exc.message)
            return
        self._set_endpoint(spec.deployment_id, endpoint, "running")
        if publish:
            self.publish_routes()
            self._wait_for_route(spec.deployment_id)

    def _wait_for_route(self, deployment_id: str) -> None:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            path = f"/deploy/{deployment.deploy_server.name}/{deployment.name}/ping"
        # Traefik loads the rewritten file a moment later; callers are told the URL
        # works only once it does.
        if not self._wait_routed(path, True):
            logger.warning("route %s not served by traefik yet", path)

    def _discard(self, deployment_id: str, workdir: Path) -> None:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None:
                session.delete(deployment)
        shutil.rmtree(workdir, ignore_errors=True)

    def _set_status(self, deployment_id: str, status: str, error: str | None) -> None:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None:
                deployment.status = status
                deployment.error = error

    def _set_endpoint(
        self, deployment_id: str, endpoint: Endpoint, status: str
    ) -> None:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            if deployment is not None:
                deployment.upstream_url = endpoint.url
                deployment.pid = endpoint.pid
                deployment.runtime_ref = endpoint.ref
                deployment.status = status
                if status == "running":
                    deployment.error = None

    # -- lookups and views ----------------------------------------------------

    @staticmethod
    def _visible_server(
        session: Session, principal: Principal, name: str
    ) -> DeployServer:
        server = session.scalar(select(DeployServer).where(DeployServer.name == name))
        # Another user's deploy server is reported missing, not forbidden: no leak.
        if server is None or not (
            principal.is_admin or server.owner == principal.username
        ):
            raise NotFound(f"deploy server {name!r} not found")
        return server

    def _visible_deployment(
        self, session: Session, principal: Principal, server_name: str, name: str
    ) -> Deployment:
        server = self._visible_server(session, principal, server_name)
        for deployment in server.deployments:
            if deployment.name == name and (
                principal.is_admin or deployment.owner == principal.username
            ):
                return deployment
        raise NotFound(
            f"deployment {name!r} not found on deploy server {server_name!r}"
        )

    def _deployment_view_by_id(self, deployment_id: str) -> DeploymentView:
        with self.db.session() as session:
            deployment = session.get(Deployment, deployment_id)
            assert deployment is not None
            return self._deployment_view(deployment)

    def _server_view(self, server: DeployServer, deployments: int) -> DeployServerView:
        return DeployServerView(
            name=server.name,
            owner=server.owner,
            runtime=server.runtime,
            created_at=server.created_at,
            deployments=deployments,
            url=f"{self.public_url}/deploy/{server.name}",
            size=server.size,
            instance=server.instance,
        )

    def _deployment_view(self, deployment: Deployment) -> DeploymentView:
        server = deployment.deploy_server.name
        url = f"{self.public_url}/deploy/{server}/{deployment.name}"
        return DeploymentView(
            deploy_server=deployment.deploy_server.name,
            name=deployment.name,
            owner=deployment.owner,
            model_uri=deployment.model_uri,
            status=deployment.status,
            model_ref=f"{url}/invocations",
            url=url,
            auth=deployment.auth_hash is not None,
            auth_user=deployment.auth_user,
            error=deployment.error,
            created_at=deployment.created_at,
            updated_at=deployment.updated_at,
        )
