"""Images of the docker runtime, built with no registry and no network in any build.

Three layers, each reused by everything above it:

- the base image: a Python of the platform's own minor version with ``venv``. Where a
  registry answers it is the public ``python:3.X-slim``; where none does,
  ``build_base_image`` makes an equivalent ``mlplatform/base:py3.X`` from a minimal
  Debian root filesystem (``debootstrap`` of the host's own suite and mirror, then
  ``docker import``), so no pull is ever needed;
- a runtime image per dependency set, ``mlplatform/runtime:<hash>``: the model's
  ``requirements.txt`` plus the platform's MLflow and uvicorn in a virtualenv. The
  wheels are downloaded (or built) on the host, which has the network, and installed by
  a ``--network none`` two-stage build, so the wheels never stay in the final image and
  no step inside a container needs the network or the host's proxy CA;
- the model itself is not baked into any image: the runtime mounts the folder the
  platform already fetched, read-only, at ``/model``. A thin ``FROM runtime`` image per
  model would cost a build (and a copy of every model byte into the image store) per
  deployment and one more image to prune, and buy nothing here: the engine runs on the
  same host as the platform, which is also what a loopback-published port requires.

Wheels are fetched with the platform's own interpreter, so the base image must run the
same Python minor version on the same architecture; the build checks the first and
fails with the fix. The host's glibc must not be newer than the base image's for wheels
built on the host from sdists; the offline base is made from the host's own Debian
suite, which keeps them equal.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from mlplatform.runtimes.base import RuntimeError_
from mlplatform.tracking.requirements import read_requirements

logger = logging.getLogger(__name__)

PYTHON_MINOR = f"{sys.version_info.major}.{sys.version_info.minor}"
PUBLIC_BASE_IMAGE = f"python:{PYTHON_MINOR}-slim"
OFFLINE_BASE_IMAGE = f"mlplatform/base:py{PYTHON_MINOR}"
RUNTIME_REPOSITORY = "mlplatform/runtime"
VENV = "/opt/venv"
USER_ID = 10001  # the non-root user of every runtime image

# Bump when the Dockerfile below changes, so images of the old recipe are not reused.
_RECIPE = "1"
_BASE_PACKAGES = "python3,python3-venv,ca-certificates"
_DEFAULT_MIRROR = "http://deb.debian.org/debian"
_BUILD_STAGE_LABEL = "mlplatform.stage=wheels"
_PIP_OUTPUT_TAIL = 30
# Packages the runtime itself pins to the platform's versions, whatever the model says:
# the scoring server that runs is the platform's MLflow, and a model logged with
# another MLflow is served by it just as the process runtime serves it.
_PLATFORM_PACKAGES = {"mlflow", "mlflow-skinny", "mlflow-tracing"}

# One build at a time per process: two deployments with the same dependencies must not
# build the same image twice, and the cleanup after a build removes the dangling build
# stage, which must not be the stage of a build still running.
_build_lock = threading.Lock()

_DOCKERFILE = """\
ARG BASE
FROM ${{BASE}} AS wheels
LABEL {stage_label}
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; \\
sys.exit(0 if v == '{python}' else 'the base image runs Python ' + v + \\
', the platform {python}: pick a base image of Python {python}')"
COPY requirements.txt /build/requirements.txt
COPY wheels /build/wheels
RUN python3 -m venv {venv} \\
 && {venv}/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \\
    --find-links /build/wheels -r /build/requirements.txt

FROM ${{BASE}}
LABEL mlplatform.managed=true mlplatform.python={python} \\
      mlplatform.mlflow-version={mlflow} mlplatform.requirements-hash={digest}
COPY --from=wheels {venv} {venv}
RUN groupadd --system --gid {uid} model \\
 && useradd --system --uid {uid} --gid {uid} --home-dir /tmp --no-create-home \\
    --shell /usr/sbin/nologin model
ENV PATH={venv}/bin:$PATH LANG=C.UTF-8 PYTHONUNBUFFERED=1 HOME=/tmp
USER {uid}:{uid}
WORKDIR /tmp
EXPOSE 8080
"""


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    built: bool  # False when an existing image was reused
    seconds: float
    size_bytes: int


def mlflow_version() -> str:
    return metadata.version("mlflow")


# -- the base image --------------------------------------------------------------------


def resolve_base_image(client: docker.DockerClient, configured: str | None) -> str:
    """The base image to build on, pulling it if it is missing and can be pulled.

    Without a configured name, an image already present wins, the public one first and
    then the offline one; otherwise the public one is pulled.
    """
    if configured is None:
        for candidate in (PUBLIC_BASE_IMAGE, OFFLINE_BASE_IMAGE):
            if _image_exists(client, candidate):
                return candidate
    name = configured or PUBLIC_BASE_IMAGE
    if _image_exists(client, name):
        return name
    logger.info("pulling base image %s", name)
    try:
        client.images.pull(name)
    except docker.errors.APIError as exc:
        raise RuntimeError_(
            f"base image {name} is not present and cannot be pulled "
            f"({exc.explanation or exc}); with no registry, build one offline with "
            f"`mlplatform images build-base` (tag {OFFLINE_BASE_IMAGE})"
        ) from exc
    return name


def build_base_image(
    client: docker.DockerClient, tag: str = OFFLINE_BASE_IMAGE, force: bool = False
) -> BuiltImage:
    """Build the offline base image with ``debootstrap`` and ``docker import``.

    Needs root (debootstrap creates device nodes and chroots) and the host's Debian
    mirror; skipped when ``tag`` exists, unless ``force``.
    """
    if not force and _image_exists(client, tag):
        return BuiltImage(tag, built=False, seconds=0.0, size_bytes=_size(client, tag))
    if shutil.which("debootstrap") is None:
        raise RuntimeError_(
            "debootstrap is not installed; install it (apt-get install debootstrap "
            "or scripts/ensure-docker.sh) to build the base image offline"
        )
    suite, mirror = host_suite(), host_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlplatform-base-") as workdir:
        root = Path(workdir) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={_BASE_PACKAGES}",
                suite,
                str(root),
                mirror,
            ],
            what=f"debootstrap of Debian {suite} from {mirror}",
        )
        _trim_rootfs(root)
        archive = Path(workdir) / "rootfs.tar"
        # Numeric owners: the names of the host's users mean nothing in the image.
        _run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(archive), "."],
            what="packing the root filesystem",
        )
        repository, _, version = tag.rpartition(":")
        client.api.import_image_from_file(
            str(archive),
            repository=repository or tag,
            tag=version if repository else None,
            changes=[
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
                "LABEL mlplatform.managed=true",
            ],
        )
    seconds = time.monotonic() - started
    size = _size(client, tag)
    logger.info(
        "built base image %s from Debian %s in %.1f s (%d MB)",
        tag,
        suite,
        seconds,
        size // 10**6,
    )
    return BuiltImage(tag, built=True, seconds=seconds, size_bytes=size)


def host_suite() -> str:
    """The host's Debian codename, from ``/etc/os-release``."""
    fields = _os_release()
    codename = fields.get("VERSION_CODENAME")
    if fields.get("ID") != "debian" or not codename:
        raise RuntimeError_(
            "the offline base image is built from the host's Debian release, but this "
            f"host runs {fields.get('PRETTY_NAME', 'an unknown system')}; configure "
            f"a base image instead (e.g. {PUBLIC_BASE_IMAGE})"
        )
    return codename


def host_mirror() -> str:
    """The first Debian mirror in the host's apt sources (deb822 or one-line style)."""
    deb822 = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in deb822:
        for line in _read_lines(path):
            if line.startswith("URIs:"):
                for uri in line.removeprefix("URIs:").split():
                    if _is_main_archive(uri):
                        return uri
    one_line = [Path("/etc/apt/sources.list")]
    one_line += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    for path in one_line:
        for line in _read_lines(path):
            words = [w for w in line.split() if not w.startswith("[")]
            if len(words) >= 2 and words[0] == "deb" and _is_main_archive(words[1]):
                return words[1]
    return _DEFAULT_MIRROR


def _is_main_archive(uri: str) -> bool:
    # The security archive carries updates only: debootstrap needs the full suite.
    return uri.startswith(("http://", "https://")) and "security" not in uri


def _os_release() -> dict[str, str]:
    fields = {}
    for line in _read_lines(Path("/etc/os-release")):
        name, sep, value = line.partition("=")
        if sep:
            fields[name] = value.strip().strip('"')
    return fields


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _trim_rootfs(root: Path) -> None:
    # Package caches and docs are about a quarter of a minbase; nothing here reads them.
    for relative in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ):
        target = root / relative
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()


# -- the runtime image -----------------------------------------------------------------


def requirements_digest(model_dir: Path, base_image: str) -> str:
    """What identifies a runtime image: dependencies, Python, MLflow, base, recipe."""
    lines = sorted({line for line in read_requirements(model_dir)})
    material = "\n".join(
        [
            f"python={PYTHON_MINOR}",
            f"mlflow={mlflow_version()}",
            f"base={base_image}",
            f"recipe={_RECIPE}",
            *lines,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def runtime_image_tag(model_dir: Path, base_image: str) -> str:
    return f"{RUNTIME_REPOSITORY}:{requirements_digest(model_dir, base_image)}"


def runtime_image(
    client: docker.DockerClient, model_dir: Path, base_image: str
) -> BuiltImage:
    """The runtime image for the model's dependencies, built if it does not exist."""
    digest = requirements_digest(model_dir, base_image)
    tag = f"{RUNTIME_REPOSITORY}:{digest}"
    with _build_lock:
        if _image_exists(client, tag):
            logger.debug("reusing runtime image %s", tag)
            size = _size(client, tag)
            return BuiltImage(tag, built=False, seconds=0.0, size_bytes=size)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="mlplatform-image-") as workdir:
            context = Path(workdir)
            requirements = _image_requirements(model_dir)
            (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
            _download_wheels(context / "requirements.txt", context / "wheels")
            (context / "Dockerfile").write_text(_dockerfile(digest))
            _build(client, context, tag, base_image)
        _remove_build_stages(client)
    seconds = time.monotonic() - started
    size = _size(client, tag)
    logger.info("built runtime image %s in %.1f s (%d MB)", tag, seconds, size // 10**6)
    return BuiltImage(tag, built=True, seconds=seconds, size_bytes=size)


def prune_runtime_images(client: docker.DockerClient) -> list[str]:
    """Remove runtime images no container (running or not) uses; return their tags."""
    used = {c.attrs.get("Image") for c in client.containers.list(all=True)}
    removed = []
    for image in client.images.list(name=RUNTIME_REPOSITORY):
        if image.id in used:
            continue
        # The listing also shows an image's other names (a base image tagged as a
        # runtime one, say): only the runtime names are ours to remove.
        for tag in [t for t in image.tags if t.startswith(f"{RUNTIME_REPOSITORY}:")]:
            try:
                client.images.remove(tag)
            except docker.errors.APIError as exc:
                # A container created since the listing holds it: keep it.
                logger.warning("keeping runtime image %s: %s", tag, exc.explanation)
                continue
            removed.append(tag)
    with _build_lock:
        _remove_build_stages(client)
    return removed


def _image_requirements(model_dir: Path) -> list[str]:
    requirements = []
    for line in read_requirements(model_dir):
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement:
            name = None  # a URL or path: pip resolves it, we cannot name it
        if name in _PLATFORM_PACKAGES:
            if line != f"mlflow=={mlflow_version()}":
                logger.info(
                    "model %s asks for %s; serving with mlflow==%s",
                    model_dir,
                    line,
                    mlflow_version(),
                )
            continue
        requirements.append(line)
    requirements += [f"mlflow=={mlflow_version()}", "uvicorn"]
    return requirements


def _download_wheels(requirements: Path, wheels: Path) -> None:
    # `pip wheel` rather than `pip download`: a package published only as an sdist is
    # built here, on the host, since nothing inside the build may reach an index.
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--disable-pip-version-check",
        "--quiet",
        "--wheel-dir",
        str(wheels),
        "-r",
        str(requirements),
    ]
    logger.debug("downloading wheels: %s", " ".join(command))
    _run(command, what="downloading the model's wheels", env=_pip_env())


def _pip_env() -> dict[str, str]:
    # Building an sdist runs its setup code: it must not see the platform's secrets.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MLFLOW_TRACKING_", "MLPLATFORM_"))
    }


def _dockerfile(digest: str) -> str:
    return _DOCKERFILE.format(
        stage_label=_BUILD_STAGE_LABEL,
        python=PYTHON_MINOR,
        venv=VENV,
        mlflow=mlflow_version(),
        digest=digest,
        uid=USER_ID,
    )


def _build(
    client: docker.DockerClient, context: Path, tag: str, base_image: str
) -> None:
    logger.info("building runtime image %s on %s", tag, base_image)
    try:
        client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE": base_image},
            network_mode="none",
            rm=True,
            forcerm=True,
            pull=False,
        )
    except docker.errors.BuildError as exc:
        output = "".join(
            str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log
        )
        tail = output.rstrip("\n").splitlines()[-_PIP_OUTPUT_TAIL:]
        raise RuntimeError_(
            f"building runtime image {tag} failed: {exc.msg}\n" + "\n".join(tail)
        ) from exc


def _remove_build_stages(client: docker.DockerClient) -> None:
    # The legacy builder keeps the wheel stage as a dangling image: hundreds of MB of
    # wheels nothing will reuse, since each dependency set is built once.
    with contextlib.suppress(docker.errors.APIError):
        client.images.prune(filters={"dangling": True, "label": _BUILD_STAGE_LABEL})


def _image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _size(client: docker.DockerClient, name: str) -> int:
    image: Image = client.images.get(name)
    size: int = image.attrs.get("Size", 0)
    return size


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).rstrip("\n").splitlines()
        raise RuntimeError_(
            f"{what} failed with exit code {result.returncode}:\n"
            + "\n".join(output[-_PIP_OUTPUT_TAIL:])
        )
