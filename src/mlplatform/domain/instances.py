"""MLflow and JupyterHub instances beside the default tracking server.

Each instance is served by Traefik under ``/instances/<name>/`` (path based, so one
port and one certificate serve everything) and keeps its state in
``<home>/instances/<name>/``. The platform API runs their processes: it starts them
when it starts, restarts one that dies, and stops them when it stops.

An MLflow instance is either Standalone (its admin given at creation, MLflow's own
users, platform tokens accepted) or linked to one JupyterHub instance, whose users
and tokens it accepts. A JupyterHub has at most one linked MLflow.
"""

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mlplatform.credentials import check_password_policy
from mlplatform.domain.names import BasicCredentials, check_name
from mlplatform.domain.principals import Principal
from mlplatform.domain.tokens import require_admin
from mlplatform.errors import Conflict, InvalidInput, NotFound, PlatformError
from mlplatform.store import Database, Instance

if TYPE_CHECKING:
    from mlplatform.jupyterhub import JupyterHubInstance
    from mlplatform.tracking.server import HubOAuth

logger = logging.getLogger(__name__)

START_TIMEOUT = 180.0
INSTANCES_PREFIX = "/instances"
HUB_CACHE_TTL = 30.0


class Process(Protocol):
    """What TrackingServer and JupyterHubInstance have in common."""

    @property
    def process(self) -> "subprocess.Popen[bytes] | None": ...

    @property
    def url(self) -> str: ...

    def start(self, log_file: Path) -> object: ...

    def wait_healthy(self, timeout: float) -> float: ...

    def stop(self, grace: float = ...) -> None: ...


@dataclass(frozen=True)
class InstanceView:
    id: str
    name: str
    kind: str
    mode: str  # mlflow: "standalone" or "linked"; jupyterhub: "hub"
    linked_to: str | None  # the hub of a linked MLflow, the MLflow of a hub
    status: str  # running, stopped
    url: str
    admin_user: str
    created_at: datetime


class InstanceService:
    def __init__(
        self,
        db: Database,
        home: Path,
        public_url: str,
        platform_database_url: str,
        publish: Callable[[], None],
        wait_served: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.root = home / "instances"
        self.public_url = public_url
        self.platform_database_url = platform_database_url
        self._publish = publish
        self._wait_served = wait_served
        self._running: dict[str, Process] = {}
        # A restarted instance keeps its port: a linked MLflow keeps reaching its hub.
        self._ports: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- create ---------------------------------------------------------------

    def create_jupyterhub(
        self, principal: Principal, name: str, admin_name: str, admin_password: str
    ) -> InstanceView:
        require_admin(principal, "creating instances")
        check_name("instance", name)
        check_password_policy(admin_password, what="the JupyterHub admin password")
        instance_id = self._insert(principal, name, "jupyterhub", admin_name, None)
        self._write_secrets(
            name,
            {"admin_password": admin_password, "service_token": secrets.token_hex(32)},
        )
        return self._start_new(instance_id)

    def create_mlflow(
        self,
        principal: Principal,
        name: str,
        hub: str | None,
        admin_name: str,
        admin_password: str | None,
        demo_mode: bool,
    ) -> InstanceView:
        require_admin(principal, "creating instances")
        check_name("instance", name)
        if not demo_mode:
            raise InvalidInput(
                "is_mlflow_demo_mode=False (external PostgreSQL and S3 stores) is not "
                "supported yet; instances keep SQLite and artifacts in their folder"
            )
        hub_id = self._hub_to_link(hub) if hub else None
        if hub_id is None:
            if not admin_password:
                raise InvalidInput("a Standalone MLflow instance needs admin_password")
            check_password_policy(admin_password, what="the MLflow admin password")
        # A linked instance's users come from the hub; its MLflow admin only
        # bootstraps the auth store, so nobody needs to know that password.
        password = admin_password or secrets.token_urlsafe(24)
        instance_id = self._insert(principal, name, "mlflow", admin_name, hub_id)
        self._write_secrets(name, {"admin_password": password})
        view = self._start_new(instance_id)
        if hub_id is not None:
            self._restart_hub(hub_id)  # its users' servers learn the MLflow address
        return view

    # -- read -----------------------------------------------------------------

    def list_all(self, principal: Principal) -> list[InstanceView]:
        require_admin(principal, "listing instances")
        with self.db.session() as session:
            instances = session.scalars(select(Instance).order_by(Instance.name))
            return [self._view(session, i) for i in instances]

    def get(self, principal: Principal, key: str) -> InstanceView:
        require_admin(principal, "reading instances")
        with self.db.session() as session:
            return self._view(session, self._find(session, key))

    def tracking_url(self, name: str) -> str:
        """Where the platform reaches MLflow instance ``name`` directly."""
        with self._lock:
            running = self._running.get(name)
        if running is None:
            raise NotFound(f"MLflow instance {name!r} is not running")
        return running.url + self._prefix(name)

    def principal_from_hub(self, username: str, secret: str) -> Principal | None:
        """The hub user ``username`` if ``secret`` is one of their hub tokens.

        Hub users are platform users in their own right (linked mode: users and logins
        come from the hub), never platform admins: a hub admin rules the hub only.
        """
        from mlplatform.jupyterhub import JupyterHubInstance

        with self._lock:
            hubs = [
                p for p in self._running.values() if isinstance(p, JupyterHubInstance)
            ]
        for hub in hubs:
            try:
                answer = httpx.get(
                    f"{hub.api_url}/user",
                    headers={"Authorization": f"token {secret}"},
                    timeout=5,
                    trust_env=False,
                )
            except httpx.HTTPError:
                continue
            if answer.status_code == 200 and answer.json().get("name") == username:
                return Principal(username, "user")
        return None

    def has_user(self, username: str) -> bool:
        """True if any running MLflow instance knows ``username``."""
        from mlplatform.tracking import TrackingServer
        from mlplatform.tracking.auth_api import MlflowAuthApi

        with self._lock:
            running = [
                (name, p)
                for name, p in self._running.items()
                if isinstance(p, TrackingServer)
            ]
        with self.db.session() as session:
            admins = {
                i.name: i.admin_user
                for i in session.scalars(
                    select(Instance).where(Instance.kind == "mlflow")
                )
            }
        for name, process in running:
            admin = BasicCredentials(
                admins[name], self._read_secrets(name)["admin_password"]
            )
            api = MlflowAuthApi(process.url + self._prefix(name), admin)
            with contextlib.suppress(NotFound):
                api.get_user(username)
                return True
        return False

    def routes(self) -> list[tuple[str, str]]:
        """(instance name, upstream URL) of every running instance."""
        with self._lock:
            return sorted((name, p.url) for name, p in self._running.items())

    # -- delete ---------------------------------------------------------------

    def delete(
        self, principal: Principal, key: str, force: bool, delete_data: bool
    ) -> None:
        require_admin(principal, "deleting instances")
        with self.db.session() as session:
            instance = self._find(session, key)
            linked = self._linked_mlflow(session, instance)
            if linked is not None and not force:
                raise Conflict(
                    f"JupyterHub {instance.name!r} has the linked MLflow instance "
                    f"{linked.name!r}; delete that first or pass force=True"
                )
            doomed = [instance.name] + ([linked.name] if linked is not None else [])
            for name in doomed:
                self._ports.pop(name, None)
            if linked is not None:
                session.delete(linked)
                session.flush()
            session.delete(instance)
        for name in doomed:
            self._stop(name)
            if delete_data:
                shutil.rmtree(self.root / name, ignore_errors=True)
        self._publish()
        logger.info(
            "instance(s) %s deleted by %s", ", ".join(doomed), principal.username
        )

    # -- lifecycle ------------------------------------------------------------

    def start_all(self) -> None:
        """Start every stored instance (hubs first); kill what a crash left behind."""
        with self.db.session() as session:
            rows = [
                (i.id, i.name, i.kind, i.pid) for i in session.scalars(select(Instance))
            ]
        for instance_id, name, _kind, pid in sorted(
            rows, key=lambda r: r[2] != "jupyterhub"
        ):
            if pid is not None:
                _kill_stale(pid, name)
            try:
                # At platform start Traefik comes after the API: no route to wait for.
                self._launch(instance_id, wait_route=False)
            except PlatformError as exc:
                logger.error("instance %s failed to start: %s", name, exc.message)
        self._watcher = threading.Thread(
            target=self._watch, name="instance-watcher", daemon=True
        )
        self._watcher.start()

    def stop_all(self) -> None:
        self._stopping.set()
        with self._lock:
            names = list(self._running)
        for name in names:
            self._stop(name)

    # -- steps ----------------------------------------------------------------

    def _insert(
        self,
        principal: Principal,
        name: str,
        kind: str,
        admin_name: str,
        hub_id: str | None,
    ) -> str:
        if not admin_name or any(ch.isspace() or ch == ":" for ch in admin_name):
            raise InvalidInput(f"invalid admin name {admin_name!r}")
        try:
            with self.db.session() as session:
                instance = Instance(
                    name=name,
                    kind=kind,
                    owner=principal.username,
                    admin_user=admin_name,
                    jupyterhub_id=hub_id,
                )
                session.add(instance)
                session.flush()
                return instance.id
        except IntegrityError:
            raise Conflict(f"instance {name!r} already exists") from None

    def _hub_to_link(self, hub: str) -> str:
        with self.db.session() as session:
            instance = self._find(session, hub)
            if instance.kind != "jupyterhub":
                raise InvalidInput(f"instance {instance.name!r} is not a JupyterHub")
            linked = self._linked_mlflow(session, instance)
            if linked is not None:
                raise Conflict(
                    f"JupyterHub {instance.name!r} already has the linked MLflow "
                    f"instance {linked.name!r}"
                )
            return instance.id

    def _start_new(self, instance_id: str) -> InstanceView:
        try:
            self._launch(instance_id)
        except BaseException:
            with self.db.session() as session:
                instance = session.get(Instance, instance_id)
                if instance is not None:
                    name = instance.name
                    session.delete(instance)
            self._stop(name)
            shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        with self.db.session() as session:
            instance = session.get(Instance, instance_id)
            assert instance is not None
            return self._view(session, instance)

    def _launch(self, instance_id: str, wait_route: bool = True) -> None:
        with self.db.session() as session:
            instance = session.get(Instance, instance_id)
            assert instance is not None
            process = self._build(session, instance)
            name, instance_kind = instance.name, instance.kind
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        process.start(folder / "server.log")
        try:
            process.wait_healthy(START_TIMEOUT)
        except BaseException:
            process.stop()
            raise
        with self._lock:
            self._running[name] = process
        self._record_pid(instance_id, process)
        self._publish()
        # Until Traefik loads the route, the path falls through to the default MLflow.
        probe = "/hub/api" if instance_kind == "jupyterhub" else "/health"
        if wait_route and not self._wait_served(self._prefix(name) + probe):
            logger.warning("instance %s: route not served by traefik yet", name)
        logger.info(
            "instance %s running at %s%s", name, process.url, self._prefix(name)
        )

    def _build(self, session: Session, instance: Instance) -> Process:
        # Imported here: the hub and tracking classes pull in their own dependencies.
        from mlplatform.children import free_port
        from mlplatform.jupyterhub import JupyterHubInstance, find_proxy_command
        from mlplatform.tracking import TrackingServer

        folder = self.root / instance.name
        secret = self._read_secrets(instance.name)
        port = self._ports.setdefault(instance.name, free_port())
        if instance.kind == "jupyterhub":
            linked = self._linked_mlflow(session, instance)
            mlflow_url = (
                f"{self.public_url}{self._prefix(linked.name)}" if linked else None
            )
            return JupyterHubInstance(
                folder / "data",
                port,
                instance.admin_user,
                secret["admin_password"],
                base_url=self._prefix(instance.name) + "/",
                mlflow_url=mlflow_url,
                mlflow_service_token=secret["service_token"],
                proxy_command=find_proxy_command(),
            )
        hub_api_url = None
        hub_oauth = None
        if instance.jupyterhub_id is not None:
            hub = session.get(Instance, instance.jupyterhub_id)
            assert hub is not None
            with self._lock:
                running_hub = self._running.get(hub.name)
            if running_hub is None:
                raise PlatformError(
                    f"JupyterHub {hub.name!r} of {instance.name!r} is down"
                )
            if not isinstance(running_hub, JupyterHubInstance):
                raise PlatformError(f"{hub.name!r} is not a running JupyterHub")
            hub_api_url = running_hub.api_url
            hub_oauth = self._hub_oauth(hub.name, running_hub)
        return TrackingServer(
            folder / "data",
            port,
            secret["admin_password"],
            admin_username=instance.admin_user,
            default_permission="NO_PERMISSIONS",
            public_url=self.public_url,
            platform_database_url=None if hub_api_url else self.platform_database_url,
            hub_api_url=hub_api_url,
            hub_cache_ttl=HUB_CACHE_TTL,
            static_prefix=self._prefix(instance.name),
            hub_oauth=hub_oauth,
        )

    def _hub_oauth(self, hub_name: str, hub: "JupyterHubInstance") -> "HubOAuth":
        from mlplatform.jupyterhub.config import OAUTH_CLIENT_ID
        from mlplatform.tracking.server import HubOAuth

        # Browsers reach the hub through Traefik; the MLflow redeems the code on
        # loopback, so the exchange does not depend on the public address resolving.
        return HubOAuth(
            authorize_url=(
                f"{self.public_url}{self._prefix(hub_name)}/hub/api/oauth2/authorize"
            ),
            token_url=f"{hub.api_url}/oauth2/token",
            client_id=OAUTH_CLIENT_ID,
            client_secret=hub.service_token,
        )

    def _restart_hub(self, hub_id: str) -> None:
        with self.db.session() as session:
            hub = session.get(Instance, hub_id)
            assert hub is not None
            name = hub.name
        self._stop(name)
        self._launch(hub_id)

    def _stop(self, name: str) -> None:
        with self._lock:
            process = self._running.pop(name, None)
        if process is not None:
            process.stop()

    def _watch(self) -> None:
        failures: dict[str, int] = {}
        while not self._stopping.wait(2.0):
            with self._lock:
                running = list(self._running.items())
            for name, process in running:
                popen = process.process
                if popen is None or popen.poll() is None:
                    continue
                failures[name] = failures.get(name, 0) + 1
                logger.warning(
                    "instance %s exited -> restarting (attempt %d)",
                    name,
                    failures[name],
                )
                self._relaunch(name)

    def _relaunch(self, name: str) -> None:
        with self.db.session() as session:
            instance = session.scalar(select(Instance).where(Instance.name == name))
            instance_id = instance.id if instance else None
        self._stop(name)
        if instance_id is None:
            return
        try:
            self._launch(instance_id)
        except PlatformError as exc:
            logger.error("instance %s failed to restart: %s", name, exc.message)

    def _record_pid(self, instance_id: str, process: Process) -> None:
        popen = process.process
        with self.db.session() as session:
            instance = session.get(Instance, instance_id)
            if instance is not None:
                instance.pid = getattr(popen, "pid", None)

    # -- secrets --------------------------------------------------------------

    def _write_secrets(self, name: str, values: dict[str, str]) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "secrets.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(values, file)

    def _read_secrets(self, name: str) -> dict[str, str]:
        values: dict[str, str] = json.loads(
            (self.root / name / "secrets.json").read_text()
        )
        return values

    # -- lookups and views ----------------------------------------------------

    @staticmethod
    def _prefix(name: str) -> str:
        return f"{INSTANCES_PREFIX}/{name}"

    @staticmethod
    def _find(session: Session, key: str) -> Instance:
        instance = session.get(Instance, key) or session.scalar(
            select(Instance).where(Instance.name == key)
        )
        if instance is None:
            raise NotFound(f"instance {key!r} not found")
        return instance

    @staticmethod
    def _linked_mlflow(session: Session, hub: Instance) -> Instance | None:
        return session.scalar(select(Instance).where(Instance.jupyterhub_id == hub.id))

    def _view(self, session: Session, instance: Instance) -> InstanceView:
        if instance.kind == "jupyterhub":
            linked = self._linked_mlflow(session, instance)
            mode, linked_to = "hub", linked.name if linked else None
        elif instance.jupyterhub_id is not None:
            hub = session.get(Instance, instance.jupyterhub_id)
            mode, linked_to = "linked", hub.name if hub else None
        else:
            mode, linked_to = "standalone", None
        with self._lock:
            status = "running" if instance.name in self._running else "stopped"
        return InstanceView(
            id=instance.id,
            name=instance.name,
            kind=instance.kind,
            mode=mode,
            linked_to=linked_to,
            status=status,
            url=f"{self.public_url}{self._prefix(instance.name)}/",
            admin_user=instance.admin_user,
            created_at=instance.created_at,
        )


def _kill_stale(pid: int, name: str) -> None:
    """Stop what an earlier, crashed platform process left of an instance."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if f"/instances/{name}/".encode() not in cmdline:
        return  # the pid was reused by something else
    logger.warning("instance %s: stale process %s -> killed", name, pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
