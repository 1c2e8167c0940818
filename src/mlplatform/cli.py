"""The ``mlplatform`` command line."""

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import pydantic
import typer
from rich.console import Console
from rich.table import Table

from mlplatform import __version__, credentials
from mlplatform.children import log_tail
from mlplatform.client import MLPlatform, MLPlatformError
from mlplatform.errors import PlatformError
from mlplatform.logs import configure_logging
from mlplatform.platform import RUNTIMES
from mlplatform.settings import Settings
from mlplatform.supervisor import (
    API_HEALTH_PATH,
    Supervisor,
    read_state,
    stop_running,
    stored_address,
)

app = typer.Typer(
    help="Self-hosted MLflow with protected model endpoints.",
    no_args_is_help=True,
    # Locals can hold passwords and tokens: never print them in a traceback.
    pretty_exceptions_show_locals=False,
)
endpoint_app = typer.Typer(help="Deploy servers (endpoints).", no_args_is_help=True)
deployment_app = typer.Typer(help="Deployments of models.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")
token_app = typer.Typer(help="Platform API tokens.", no_args_is_help=True)
app.add_typer(deployment_app, name="deployment")
app.add_typer(token_app, name="token")
user_app = typer.Typer(
    help="Users of the tracking server (admin only).", no_args_is_help=True
)
permission_app = typer.Typer(
    help="Access of users to experiments and registered models.", no_args_is_help=True
)
app.add_typer(user_app, name="user")
app.add_typer(permission_app, name="permission")
images_app = typer.Typer(help="Images of the docker runtime.", no_args_is_help=True)
instance_app = typer.Typer(
    help="MLflow and JupyterHub instances.", no_args_is_help=True
)
app.add_typer(instance_app, name="instance")
app.add_typer(images_app, name="images")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


class CliError(Exception):
    pass


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """The one place errors become ``Error: ...`` and a non-zero exit code."""
    try:
        yield
    except (PlatformError, MLPlatformError, CliError) as exc:
        err_console.print(f"[red]Error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlplatform {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Self-hosted MLflow with protected model endpoints."""


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid setting: {problems}") from None


# -- platform lifecycle -------------------------------------------------------


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="Public port (Traefik).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    admin_user: Annotated[
        str | None, typer.Option(help="Tracking server admin.")
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            envvar="MLPLATFORM_ADMIN_PASSWORD",
            help="Admin password (at least 12 characters); generated when unset.",
            show_envvar=True,
        ),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background.")
    ] = False,
    home: Annotated[Path | None, typer.Option(envvar="MLPLATFORM_HOME")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="Default runtime of new deploy servers: process or docker."),
    ] = None,
) -> None:
    """Start the tracking server, the platform API and Traefik."""
    with errors_to_exit():
        port, host = _remembered_address(home, port, host)
        if runtime is not None and runtime not in RUNTIMES:
            raise CliError(f"unknown runtime {runtime!r}: use process or docker")
        settings = _settings(
            port=port, host=host, admin_user=admin_user,
            admin_password=admin_password, home=home, runtime=runtime,
        )  # fmt: skip
        _export_settings(
            settings,
            port=port,
            host=host,
            admin_user=admin_user,
            home=home,
            runtime=runtime,
        )
        if detach:
            _up_detached(settings)
            return
        configure_logging()
        supervisor = Supervisor(settings)
        try:
            admin, generated = supervisor.start()
            _print_summary(settings, admin, generated)
            supervisor.watch()
        finally:
            supervisor.stop()


def _remembered_address(
    home: Path | None, port: int | None, host: str | None
) -> tuple[int | None, str | None]:
    """Default to where this home ran last, so deployment URLs stay the same."""
    stored = stored_address(_settings(home=home).resolved_home())
    if stored is None:
        return port, host
    if port is None and "MLPLATFORM_PORT" not in os.environ:
        port = int(stored["port"])
    if host is None and "MLPLATFORM_HOST" not in os.environ:
        host = str(stored["host"])
    return port, host


def _export_settings(settings: Settings, **given: Any) -> None:
    # Child processes (API, detached supervisor) read the same settings from env.
    for name, value in given.items():
        if value is not None:
            os.environ[f"MLPLATFORM_{name.upper()}"] = str(value)


def _up_detached(settings: Settings) -> None:
    supervisor = Supervisor(settings)
    supervisor.check_machine()
    admin, generated = supervisor.bootstrap()
    supervisor.release_home()
    home = settings.resolved_home()
    log_file = home / "logs" / "platform.log"
    env = {**os.environ, "MLPLATFORM_HOME": str(home)}
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlplatform.cli", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    with console.status("starting the tracking server, the platform API and traefik"):
        _wait_detached(process, home, log_file)
    _print_summary(settings, admin, generated)


def _wait_detached(
    process: "subprocess.Popen[bytes]", home: Path, log_file: Path
) -> None:
    deadline = time.monotonic() + 300
    delay = 0.2
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_tail(log_file, 5)
            raise CliError(f"the platform exited during start; see {log_file}:\n{tail}")
        if read_state(home) is not None:
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise CliError(f"the platform did not start within 300 s; see {log_file}")


def _print_summary(
    settings: Settings, admin: credentials.AdminCredentials, generated: bool
) -> None:
    home = settings.resolved_home()
    url = settings.resolved_public_url()
    console.print(f"mlplatform {__version__} is running at [bold]{url}[/bold]")
    console.print(f"  MLflow UI and API   {url}/")
    console.print(
        f"  platform API        {url}/platform/api/v1  (docs: /platform/api/v1/docs)"
    )
    console.print(f"  deployments         {url}/deploy/<deploy server>/<deployment>/")
    console.print(f"  admin user          {admin.admin_user}")
    if generated:
        console.print(
            f"  admin password      {admin.admin_password}  (generated, shown once)"
        )
    console.print(
        f"  credentials         {credentials.credentials_path(home)} (mode 0600)"
    )
    console.print('Run `eval "$(mlplatform env)"` to use it from this shell.')


@app.command()
def down(
    home: Annotated[Path | None, typer.Option(envvar="MLPLATFORM_HOME")] = None,
) -> None:
    """Stop everything `mlplatform up` started, model servers included."""
    with errors_to_exit():
        settings = _settings(home=home)
        if stop_running(settings.resolved_home()):
            console.print("mlplatform stopped")
        else:
            console.print("mlplatform is not running")


@app.command()
def status(
    home: Annotated[Path | None, typer.Option(envvar="MLPLATFORM_HOME")] = None,
) -> None:
    """Show each component, its URL and its health."""
    with errors_to_exit():
        settings = _settings(home=home)
        state = read_state(settings.resolved_home())
        if state is None:
            raise CliError(
                "mlplatform is not running; start it with `mlplatform up --detach`"
            )
        table = Table("component", "url", "health")
        checks = [
            ("traefik (entrance)", state.traefik_ping_url, state.public_url),
            ("tracking server", state.tracking_url + "/health", state.public_url + "/"),
            ("platform API", state.api_url + API_HEALTH_PATH,
             state.public_url + "/platform/api/v1"),
        ]  # fmt: skip
        healthy = True
        for name, probe, shown in checks:
            ok = _probe(probe)
            healthy &= ok
            table.add_row(
                name, shown, "[green]healthy[/green]" if ok else "[red]down[/red]"
            )
        console.print(table)
        if not healthy:
            raise typer.Exit(1)


def _probe(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
def env(
    home: Annotated[Path | None, typer.Option(envvar="MLPLATFORM_HOME")] = None,
) -> None:
    """Print `export` lines for the MLflow and platform clients (the admin's)."""
    with errors_to_exit():
        settings = _settings(home=home)
        home_dir = settings.resolved_home()
        admin = credentials.load(home_dir)
        if admin is None:
            raise CliError(f"no platform in {home_dir}; run `mlplatform up` first")
        state = read_state(home_dir)
        url = state.public_url if state else settings.resolved_public_url()
        values = {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": admin.admin_user,
            "MLFLOW_TRACKING_PASSWORD": admin.admin_password,
            "REFRESH_TOKEN": admin.refresh_token,
            "MLPLATFORM_URL": url,
        }
        for name, value in values.items():
            typer.echo(f"export {name}={shlex.quote(value)}")


# -- deploy servers and deployments -------------------------------------------


def _client() -> MLPlatform:
    """A client from the environment, else the local admin's credentials file."""
    if os.getenv("REFRESH_TOKEN"):
        return MLPlatform()
    settings = Settings()
    home = settings.resolved_home()
    admin = credentials.load(home)
    state = read_state(home)
    if admin is None or state is None:
        raise CliError(
            "no credentials: export the output of `mlplatform env`, or start the "
            "platform on this machine with `mlplatform up --detach`"
        )
    return MLPlatform(
        admin.refresh_token,
        url=state.public_url,
        # The admin's token goes with the admin's MLflow credentials: one identity.
        tracking_username=admin.admin_user,
        tracking_password=admin.admin_password,
    )


def _run(call: Callable[[MLPlatform], T]) -> T:
    with errors_to_exit(), _client() as client:
        return call(client)
    raise AssertionError("unreachable")


def _print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))


@endpoint_app.command("create")
def endpoint_create(
    name: str,
    runtime: Annotated[
        str | None, typer.Option(help="process or docker; default: the platform's")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="low, mid or high (CPU and memory limits)")
    ] = None,
) -> None:
    """Create a deploy server."""
    _print_json(
        _run(lambda c: c.create_endpoint_standalone(name, runtime=runtime, size=size))
    )


@endpoint_app.command("list")
def endpoint_list() -> None:
    """List deploy servers."""
    servers = _run(lambda c: c.list_endpoints())
    table = Table("name", "runtime", "owner", "deployments", "url")
    for s in servers:
        table.add_row(
            s["name"], s["runtime"], s["owner"], str(s["deployments"]), s["url"]
        )
    console.print(table)


@endpoint_app.command("get")
def endpoint_get(name: str) -> None:
    """Show one deploy server."""
    _print_json(_run(lambda c: c.get_endpoint(name)))


@endpoint_app.command("delete")
def endpoint_delete(
    name: str,
    force: Annotated[bool, typer.Option(help="Delete its deployments too.")] = False,
) -> None:
    """Delete a deploy server."""
    _run(lambda c: c.delete_endpoint(name, force=force))
    console.print(f"deploy server {name} deleted")


@deployment_app.command("create")
def deployment_create(
    server: str,
    name: str,
    model_uri: str,
    auth: Annotated[
        str | None,
        typer.Option(
            help="user:password protecting the URL", envvar="MLPLATFORM_DEPLOY_AUTH"
        ),
    ] = None,
) -> None:
    """Deploy a model and wait until it answers."""
    with console.status(f"deploying {model_uri} as {server}/{name}"):
        deployment = _run(
            lambda c: c.create_deployment_standalone(server, name, model_uri, auth)
        )
    _print_json(deployment)


@deployment_app.command("list")
def deployment_list(server: str) -> None:
    """List the deployments of a deploy server."""
    deployments = _run(lambda c: c.list_deployments(server))
    table = Table("name", "status", "model uri", "url")
    for d in deployments:
        table.add_row(d["name"], d["status"], d["model_uri"], d["model_ref"])
    console.print(table)


@deployment_app.command("get")
def deployment_get(server: str, name: str) -> None:
    """Show one deployment."""
    _print_json(_run(lambda c: c.get_deployment(server, name)))


@deployment_app.command("delete")
def deployment_delete(server: str, name: str) -> None:
    """Delete a deployment and stop its model server."""
    _run(lambda c: c.delete_deployment(server, name))
    console.print(f"deployment {server}/{name} deleted")


@deployment_app.command("logs")
def deployment_logs(
    server: str,
    name: str,
    tail: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
) -> None:
    """Print the model server's output."""
    typer.echo(_run(lambda c: c.get_deployment_logs(server, name, tail)), nl=False)


@deployment_app.command("predict")
def deployment_predict(
    server: str,
    name: str,
    data: Annotated[str, typer.Option(help="JSON body, or @file.json")],
    auth: Annotated[str | None, typer.Option(envvar="MLPLATFORM_DEPLOY_AUTH")] = None,
) -> None:
    """Send a JSON request to a deployment's /invocations."""
    with errors_to_exit():
        try:
            raw = Path(data[1:]).read_text() if data.startswith("@") else data
        except OSError as exc:
            raise CliError(f"cannot read {data[1:]}: {exc.strerror}") from None
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise CliError(f"--data is not valid JSON: {exc}") from None
    _print_json(_run(lambda c: c.predict_model(payload, server, name, auth=auth)))


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="The token's owner (an MLflow user).")],
    name: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d; none: no expiry")
    ] = None,
) -> None:
    """Create a token and print it (once)."""
    created = _run(lambda c: c.create_token(user, name, role, ttl))
    typer.echo(created["token"])


@token_app.command("list")
def token_list() -> None:
    """List tokens (without their secrets)."""
    tokens = _run(lambda c: c.list_tokens())
    table = Table("id", "owner", "name", "role", "expires", "last used", "revoked")
    for t in tokens:
        table.add_row(
            t["id"], t["owner"], t["name"], t["role"], str(t["expires_at"] or "never"),
            str(t["last_used_at"] or "-"), "yes" if t["revoked"] else "no",
        )  # fmt: skip
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    """Revoke a token; it stops working at once."""
    _run(lambda c: c.delete_token(token_id))
    console.print(f"token {token_id} revoked")


@token_app.command("register")
def token_register(
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    ttl: Annotated[str, typer.Option(help="How long it may be used, e.g. 1d")] = "1d",
) -> None:
    """Create a single-use register token to hand to a new user (printed once)."""
    created = _run(lambda c: c.create_register_token(role, ttl))
    typer.echo(created["token"])


@token_app.command("exchange")
def token_exchange(
    register_token: Annotated[str, typer.Argument(envvar="MLPLATFORM_REGISTER_TOKEN")],
    name: Annotated[str, typer.Option(help="What the new token is for.")] = "cli",
) -> None:
    """Spend a register token for your own token (uses your MLflow credentials)."""
    with errors_to_exit(), MLPlatform(refresh_token="unused") as client:
        typer.echo(client.create_refresh_token(register_token, name)["token"])


@user_app.command("create")
def user_create(
    username: str,
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True,
            envvar="MLPLATFORM_USER_PASSWORD",
            help="At least 12 characters; asked for when not given.",
        ),
    ],
) -> None:  # fmt: skip
    """Create a user in the tracking server's auth store."""
    _run(lambda c: c.create_user(username, password))
    console.print(f"user {username} created")


@user_app.command("list")
def user_list() -> None:
    """List users."""
    users = _run(lambda c: c.list_users())
    table = Table("user", "admin")
    for user in users:
        table.add_row(user["username"], "yes" if user["is_admin"] else "no")
    console.print(table)


@user_app.command("delete")
def user_delete(username: str) -> None:
    """Delete a user; their tokens stop working at once."""
    _run(lambda c: c.delete_user(username))
    console.print(f"user {username} deleted")


ExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", help="Experiment name or id.")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Registered model name.")]


def _one_resource(experiment: str | None, model: str | None) -> None:
    if (experiment is None) == (model is None):
        with errors_to_exit():
            raise CliError("give exactly one of --experiment or --model")


@permission_app.command("grant")
def permission_grant(
    username: str,
    permission: Annotated[str, typer.Argument(help="READ, USE, EDIT, MANAGE or DENY")],
    experiment: ExperimentOpt = None,
    model: ModelOpt = None,
) -> None:
    """Give a user a permission on one experiment or registered model."""
    _one_resource(experiment, model)
    _run(
        lambda c: c.grant_permission(
            username, permission, experiment=experiment, registered_model=model
        )
    )
    console.print(f"{permission.upper()} granted to {username}")


@permission_app.command("revoke")
def permission_revoke(
    username: str, experiment: ExperimentOpt = None, model: ModelOpt = None
) -> None:
    """Remove a user's grant on one experiment or registered model."""
    _one_resource(experiment, model)
    _run(
        lambda c: c.revoke_permission(
            username, experiment=experiment, registered_model=model
        )
    )
    console.print(f"grant of {username} revoked")


@permission_app.command("list")
def permission_list(experiment: ExperimentOpt = None, model: ModelOpt = None) -> None:
    """Who has which access to one experiment or registered model."""
    _one_resource(experiment, model)
    grants = _run(
        lambda c: c.list_permissions(experiment=experiment, registered_model=model)
    )
    table = Table("user", "permission")
    for grant in grants:
        table.add_row(grant["username"], grant["permission"])
    console.print(table)


@instance_app.command("create")
def instance_create(
    kind: Annotated[str, typer.Argument(help="mlflow or jupyterhub")],
    name: str,
    admin_name: Annotated[str, typer.Option(help="The instance's admin.")] = "admin",
    admin_password: Annotated[
        str | None,
        typer.Option(
            envvar="MLPLATFORM_INSTANCE_ADMIN_PASSWORD",
            help="At least 12 characters; needed unless linking MLflow to a hub.",
        ),
    ] = None,
    jupyterhub: Annotated[
        str | None, typer.Option(help="Link the new MLflow to this JupyterHub.")
    ] = None,
) -> None:
    """Create and start an instance, served under /instances/NAME/."""
    if kind == "jupyterhub":
        if not admin_password:
            with errors_to_exit():
                raise CliError("a JupyterHub needs --admin-password")
        password = admin_password or ""
        created = _run(lambda c: c.create_jupyter_hub(name, admin_name, password))
    elif kind == "mlflow":
        created = _run(
            lambda c: c.create_mlflow(
                name, jupyterhub, admin_name=admin_name, admin_password=admin_password
            )
        )
    else:
        with errors_to_exit():
            raise CliError(f"unknown instance kind {kind!r}: use mlflow or jupyterhub")
    _print_json(created)


@instance_app.command("list")
def instance_list() -> None:
    """List instances."""
    instances = _run(lambda c: c.get_all_instances_info())
    table = Table("name", "kind", "mode", "linked to", "status", "url")
    for i in instances:
        table.add_row(
            i["name"],
            i["kind"],
            i["mode"],
            i["linked_to"] or "-",
            i["status"],
            i["url"],
        )
    console.print(table)


@instance_app.command("get")
def instance_get(
    key: Annotated[str, typer.Argument(help="Instance id or name.")],
) -> None:
    """Show one instance."""
    _print_json(_run(lambda c: c.get_instance_info(key)))


@instance_app.command("delete")
def instance_delete(
    key: Annotated[str, typer.Argument(help="Instance id or name.")],
    force: Annotated[
        bool, typer.Option(help="Also delete a hub's linked MLflow.")
    ] = False,
    delete_data: Annotated[
        bool, typer.Option(help="Remove its data folder too.")
    ] = False,
) -> None:
    """Stop an instance and remove its route (its data only with --delete-data)."""
    _run(lambda c: c.delete_instance(key, force=force, delete_data=delete_data))
    console.print(f"instance {key} deleted")


@images_app.command("build-base")
def images_build_base(
    force: Annotated[bool, typer.Option(help="Rebuild even if it exists.")] = False,
) -> None:
    """Build the offline base image (debootstrap + docker import; no registry)."""
    from mlplatform.runtimes import images
    from mlplatform.runtimes.docker import connect

    with errors_to_exit():
        with console.status(
            "building the base image with debootstrap (about a minute)"
        ):
            built = images.build_base_image(connect(), force=force)
        console.print(f"base image ready: {built.tag}")


@images_app.command("prune")
def images_prune() -> None:
    """Remove runtime images no deployment uses any more."""
    from mlplatform.runtimes import images
    from mlplatform.runtimes.docker import connect

    with errors_to_exit():
        removed = images.prune_runtime_images(connect())
    console.print(f"removed {len(removed)} image(s)")
    for tag in removed:
        console.print(f"  {tag}")


def main() -> None:
    logging.captureWarnings(True)
    app()


if __name__ == "__main__":
    main()
