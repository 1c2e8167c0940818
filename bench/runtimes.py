"""Runtime benchmark (issue 4): the process and docker runtimes side by side.

One platform (``mlplatform up --detach`` in a temporary MLPLATFORM_HOME), the model of
bench/serving.py, and one deploy server per runtime, each deployment with route auth:

1. deploy time, ``create_deployment_standalone`` -> first good prediction through
   Traefik. The docker runtime first with a cold image cache (the runtime image of the
   model's dependencies is removed beforehand, so this deploy builds it); the process
   runtime has no image cache, so its first deployment stands for its cold one. Then
   warm deployments, alternated process, docker, ...;
2. memory per warm deployment, idle after 10 requests: RSS (and PSS) summed over the
   scoring server's processes from /proc for both runtimes, and the container's
   usage as ``docker stats --no-stream`` reports it;
3. requests/s and latency through Traefik with route auth of the last deployment of
   each runtime, wrk runs alternated process, docker, process, docker;
4. raw JSON to bench/results/ and a Markdown section to docs/benchmarks.md.

The helpers are bench/serving.py's. Everything started here is stopped again, its
containers removed, on failure too. Run it with ``bench/run.sh runtimes``.
"""

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import mlflow
from serving import (
    THROUGHPUT_GOAL,
    BenchError,
    DeployTiming,
    Load,
    Model,
    Quiet,
    QuietGate,
    RouteSummary,
    Target,
    WrkRun,
    add_quiet_args,
    check_targets,
    environment,
    machine,
    measure,
    predicts,
    register_model,
    run,
    start_platform,
    summarise,
    time_deployment,
    versions,
    write_doc,
    write_json,
    write_scripts,
)

from mlplatform.runtimes import images
from mlplatform_client import MLPlatform, MLPlatformError

SECTION_START = "<!-- bench/runtimes.py: start -->"
SECTION_END = "<!-- bench/runtimes.py: end -->"

RUNTIMES = {"p": "process", "d": "docker"}  # wrk route key -> runtime
SERVERS = {"process": "bench-process", "docker": "bench-docker"}
WARM_DEPLOY_GOAL_S = 10.0
MAX_WARM_DEPLOYS = 10
MAX_MEMORY_REQUESTS = 100
# What the process runtime sets in its servers' environment (runtimes/process.py).
MARKER_VAR = b"MLPLATFORM_DEPLOYMENT_ID"
MODEL_PATH_VAR = b"__pyfunc_model_path__"
# Which Python serves, and how fast it runs plain Python code (a JSON round trip of a
# request-sized body, in microseconds): the two runtimes do not run the same build.
PYTHON_PROBE = (
    "import platform, timeit; "
    "t = min(timeit.repeat('json.loads(json.dumps(d))', "
    "'import json; d = {\"a\": [list(range(13))] * 2}', number=20000, repeat=5)); "
    "print(platform.python_version(), round(t / 20000 * 1e6, 2))"
)
_UNITS = {
    "B": 1,
    "kB": 10**3, "MB": 10**6, "GB": 10**9,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30,
}  # fmt: skip


# -- processes and containers -------------------------------------------------


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:  # the process is gone, or not ours to read
        return b""


def process_servers(home: Path) -> dict[str, list[int]]:
    """Deployment id -> pids of the process runtime's servers of this platform."""
    servers: dict[str, list[int]] = {}
    home_path = str(home.resolve()).encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        variables = dict(
            item.partition(b"=")[::2]
            for item in _read(f"/proc/{entry.name}/environ").split(b"\0")
        )
        deployment_id = variables.get(MARKER_VAR)
        if deployment_id and home_path in variables.get(MODEL_PATH_VAR, b""):
            servers.setdefault(deployment_id.decode(), []).append(int(entry.name))
    return servers


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and all their descendants, from /proc/<pid>/task/*/children."""
    seen: list[int] = []
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.append(pid)
        tasks = Path(f"/proc/{pid}/task")
        for task in tasks.iterdir() if tasks.is_dir() else []:
            pending += [int(p) for p in _read(f"{task}/children").split()]
    return seen


def _kb_field(text: bytes, name: bytes) -> int:
    match = re.search(rb"^" + name + rb":\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def resident_mb(pids: Iterable[int]) -> tuple[float, float, int]:
    """RSS and PSS in MB summed over ``pids``, and how many were still there."""
    rss = pss = alive = 0
    for pid in pids:
        status = _read(f"/proc/{pid}/status")
        if not status:
            continue
        alive += 1
        rss += _kb_field(status, b"VmRSS")
        pss += _kb_field(_read(f"/proc/{pid}/smaps_rollup"), b"Pss")
    return rss * 1024 / 1e6, pss * 1024 / 1e6, alive


def docker_cli(*args: str) -> str:
    return run(["docker", *args], timeout=120).strip()


def state_dir(home: Path) -> str:
    """The docker runtime's scope label of this platform (see runtimes/docker.py)."""
    return str((home / "deployments").resolve())


def containers(home: Path, deployment: str | None = None) -> list[str]:
    """Ids of this platform's containers, all or those of one deployment."""
    filters = ["--filter", f"label=mlplatform.state-dir={state_dir(home)}"]
    if deployment is not None:
        filters += ["--filter", f"label=mlplatform.deployment={deployment}"]
    return docker_cli("ps", "-aq", "--no-trunc", *filters).split()


def remove_containers(home: Path) -> None:
    """Remove what ``mlplatform down`` left of this platform's containers."""
    found = containers(home)
    if found:
        print(f"removing {len(found)} leftover container(s)", flush=True)
        docker_cli("rm", "-f", *found)


def parse_size(text: str) -> float:
    """``docker stats`` sizes ("181.3MiB") in MB."""
    match = re.fullmatch(r"([\d.]+)\s*([kKMG]?i?B)", text.strip())
    if match is None:
        raise BenchError(f"unexpected size {text!r} from docker stats")
    return float(match.group(1)) * _UNITS[match.group(2)] / 1e6


# -- the runtime image ----------------------------------------------------------


@dataclass
class RuntimeImage:
    tag: str
    removed: bool = False  # it existed and was removed before the cold deploy
    built_during_cold_deploy: bool = False
    size_mb: float = 0.0


def image_created(tag: str) -> datetime | None:
    try:
        stamp = docker_cli("image", "inspect", "-f", "{{.Created}}", tag)
    except BenchError:
        return None
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp))


def remove_runtime_image(model: Model, workdir: Path) -> RuntimeImage:
    """Remove the runtime image of the model's dependency set, if no container uses it.

    The tag is computed as the docker runtime computes it, from the model's
    requirements and the base image it would pick (the platform runs with the default
    base image: platform_env drops every MLPLATFORM_ variable).
    """
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=model.uri, dst_path=str(workdir / "model")
    )
    base = images.resolve_base_image(docker.from_env(), None)
    image = RuntimeImage(images.runtime_image_tag(Path(model_dir), base))
    if image_created(image.tag) is None:
        return image
    users = docker_cli("ps", "-aq", "--filter", f"ancestor={image.tag}").split()
    if users:
        raise BenchError(
            f"runtime image {image.tag} is used by container(s) {', '.join(users)}; "
            "remove them (or wait until they are gone) to measure a cold deploy"
        )
    docker_cli("rmi", image.tag)
    image.removed = True
    return image


# -- deployments ----------------------------------------------------------------


@dataclass(frozen=True)
class Deploy:
    runtime: str
    cache: str  # "cold" (docker builds its image, process' first deploy) or "warm"
    deployment: str
    created_s: float
    first_prediction_s: float


@dataclass(frozen=True)
class Memory:
    runtime: str
    deployment: str
    rss_mb: float  # summed over the scoring server's processes
    pss_mb: float  # the same, shared pages split among the processes sharing them
    processes: int
    docker_stats_mb: float | None  # the container's usage (docker runtime only)


@dataclass(frozen=True)
class Deployed:
    name: str
    pids: list[int]  # the scoring server's process tree
    container: str | None


class Deployer:
    """Deploys the model on either runtime's deploy server and finds what runs it."""

    def __init__(self, client: MLPlatform, model: Model, auth: str, home: Path):
        self.client, self.model, self.auth, self.home = client, model, auth, home

    def create_servers(self) -> None:
        for runtime, server in SERVERS.items():
            self.client.create_endpoint_standalone(server, runtime=runtime)

    def deploy(self, runtime: str, name: str, cache: str) -> tuple[Deploy, Deployed]:
        before = set(process_servers(self.home))
        timing: DeployTiming = time_deployment(
            self.client, name, self.model, self.auth, SERVERS[runtime]
        )
        deploy = Deploy(
            runtime, cache, name, timing.created_s, timing.first_prediction_s
        )
        print(f"{runtime} {cache} deploy {name}: first prediction after "
              f"{deploy.first_prediction_s:.2f} s", flush=True)  # fmt: skip
        if runtime == "process":
            servers = process_servers(self.home)
            new = [pids for id_, pids in servers.items() if id_ not in before]
            if len(new) != 1:
                raise BenchError(f"found {len(new)} new process servers for {name}")
            return deploy, Deployed(name, process_tree(new[0]), None)
        found = containers(self.home, name)
        if len(found) != 1:
            raise BenchError(f"found {len(found)} containers for deployment {name}")
        pid = int(docker_cli("inspect", "-f", "{{.State.Pid}}", found[0]))
        return deploy, Deployed(name, process_tree([pid]), found[0])

    def memory(self, runtime: str, deployed: Deployed, requests: int) -> Memory:
        """Memory of an idle deployment after ``requests`` good predictions."""
        for _ in range(requests):
            if not predicts(
                self.client, deployed.name, self.auth, self.model, SERVERS[runtime]
            ):
                raise BenchError(f"deployment {deployed.name} predicts wrongly")
        rss, pss, alive = resident_mb(process_tree(deployed.pids))
        stats = None
        if deployed.container is not None:
            usage = docker_cli(
                "stats", "--no-stream", "--format", "{{.MemUsage}}", deployed.container
            )
            stats = parse_size(usage.partition("/")[0])
        memory = Memory(runtime, deployed.name, rss, pss, alive, stats)
        print(f"  memory: RSS {rss:.0f} MB, PSS {pss:.0f} MB over {alive} "
              f"process(es), docker stats {stats or 0:.0f} MB", flush=True)  # fmt: skip
        return memory

    def delete(self, runtime: str, name: str) -> None:
        self.client.delete_deployment(SERVERS[runtime], name)


# -- results ----------------------------------------------------------------------


@dataclass
class Results:
    started_at: str
    machine: dict[str, str]
    versions: dict[str, str]
    settings: dict[str, Any]
    image: RuntimeImage | None = None
    container: dict[str, Any] = field(default_factory=dict)
    pythons: dict[str, dict[str, Any]] = field(default_factory=dict)
    deploys: list[Deploy] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)
    runs: list[WrkRun] = field(default_factory=list)
    quiet_waits: list[Quiet] = field(default_factory=list)
    quiet_note: str = ""
    elapsed_s: float = 0.0

    def throughput(self) -> dict[str, RouteSummary]:
        return summarise(self.runs, RUNTIMES)

    def deploy_seconds(self, runtime: str, cache: str) -> list[float]:
        return [
            d.first_prediction_s
            for d in self.deploys
            if d.runtime == runtime and d.cache == cache
        ]

    def memory_median(self, runtime: str, attribute: str) -> float | None:
        values = [getattr(m, attribute) for m in self.memory if m.runtime == runtime]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def derived(self) -> dict[str, float]:
        summary = self.throughput()
        derived = {
            "throughput_ratio_d_p_median": summary["d"].rps_median
            / summary["p"].rps_median,
            "throughput_ratio_d_p_best": summary["d"].rps_best / summary["p"].rps_best,
        }
        for runtime in SERVERS:
            warm = self.deploy_seconds(runtime, "warm")
            derived[f"{runtime}_warm_deploy_median_s"] = statistics.median(warm)
            derived[f"{runtime}_warm_deploy_max_s"] = max(warm)
            cold = self.deploy_seconds(runtime, "cold")
            derived[f"{runtime}_cold_deploy_s"] = cold[0]
        return derived

    def load_range(self) -> tuple[float, float]:
        loads = [r.load_1m for r in self.runs]
        return min(loads), max(loads)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            "throughput": {k: asdict(v) for k, v in self.throughput().items()},
            **self.derived(),
        }
        return data


# -- report -----------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def _side_by_side(results: Results) -> list[str]:
    derived, summary = results.derived(), results.throughput()
    p, d = summary["p"], summary["d"]
    warm_count = len(results.deploy_seconds("docker", "warm"))

    def both(label: str, attribute: str) -> str:
        values = [_mb(results.memory_median(r, attribute)) for r in SERVERS]
        return f"| {label} | {values[0]} | {values[1]} |"

    def deploy(cache: str, key: str) -> str:
        return " | ".join(f"{derived[f'{r}_{cache}_{key}']:.2f} s" for r in SERVERS)

    return [
        "| measure | process | docker |",
        "|---|---:|---:|",
        "| first deploy, cold image cache (docker builds its runtime image; "
        f"process has no image cache) | {deploy('cold', 'deploy_s')} |",
        f"| warm deploy, median of {warm_count} | "
        f"{deploy('warm_deploy', 'median_s')} |",
        f"| warm deploy, slowest of {warm_count} | {deploy('warm_deploy', 'max_s')} |",
        both("memory, idle after 10 requests: RSS summed over the server's "
             "processes (median)", "rss_mb"),
        both("memory, the same as PSS (shared pages split)", "pss_mb"),
        both("memory, `docker stats --no-stream` usage (median)", "docker_stats_mb"),
        f"| req/s through Traefik + route auth (median of {results.settings['rounds']}"
        f") | {p.rps_median:.0f} | {d.rps_median:.0f} |",
        f"| req/s, best round | {p.rps_best:.0f} | {d.rps_best:.0f} |",
        f"| p50 latency (median) | {p.p50_ms_median:.2f} ms "
        f"| {d.p50_ms_median:.2f} ms |",
        f"| p99 latency (median) | {p.p99_ms_median:.2f} ms "
        f"| {d.p99_ms_median:.2f} ms |",
        f"| wrk errors (non-2xx + socket) | {p.errors} | {d.errors} |",
    ]  # fmt: skip


def _goals(results: Results) -> list[str]:
    derived = results.derived()
    ratio = derived["throughput_ratio_d_p_median"]
    best = derived["throughput_ratio_d_p_best"]
    lines = ["| goal | value | verdict |", "|---|---:|---|"]
    for runtime in SERVERS:
        slowest = derived[f"{runtime}_warm_deploy_max_s"]
        lines.append(
            f"| warm deploy < {WARM_DEPLOY_GOAL_S:g} s, {runtime} (slowest; median "
            f"{derived[f'{runtime}_warm_deploy_median_s']:.2f} s) | {slowest:.2f} s "
            f"| {_verdict(slowest < WARM_DEPLOY_GOAL_S)} |"
        )
    lines.append(
        f"| docker / process throughput >= {THROUGHPUT_GOAL} (median of rounds; "
        f"best rounds {best:.2f}) | {ratio:.2f} "
        f"| {_verdict(ratio >= THROUGHPUT_GOAL)} |"
    )
    return lines


def _deploys(results: Results) -> list[str]:
    lines = [
        "| runtime | image cache | deployment | create call returned "
        "| first good prediction |",
        "|---|---|---|---:|---:|",
    ]
    for d in results.deploys:
        lines.append(
            f"| {d.runtime} | {d.cache} | {d.deployment} | {d.created_s:.2f} s "
            f"| {d.first_prediction_s:.2f} s |"
        )
    return lines


def _runs(results: Results) -> list[str]:
    lines = [
        "| runtime | round | load avg (1 min) | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.runs:
        lines.append(
            f"| {RUNTIMES[r.route]} | {r.round} | {r.load_1m:.2f} "
            f"| {r.requests_per_s:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx + r.socket_errors} |"
        )
    return lines


def _header(results: Results) -> list[str]:
    m, v, s, c = results.machine, results.versions, results.settings, results.container
    load, image = s["load"], results.image
    low, high = results.load_range()
    cold = "**not** rebuilt during the cold deploy"
    if image is not None and image.built_during_cold_deploy:
        cold = "built during the cold deploy"
    return [
        "## Runtimes: process vs. docker",
        "",
        f"Measured {results.started_at} by `bench/runtimes.py` in "
        f"{results.elapsed_s / 60:.0f} minutes. Reproduce with `bench/run.sh "
        "runtimes` (`--help` lists the knobs).",
        "",
        f"- machine: `nproc` {m['nproc']}, {m['cpu']}, memory {m['memory']}; "
        f"Docker {v['docker']}",
        f"- versions: Python {v['python']}, MLflow {v['mlflow']}, scikit-learn "
        f"{v['scikit-learn']}, Traefik {v['traefik']}, wrk {v['wrk']}",
        "- model: the one of the serving benchmark (RandomForestClassifier on "
        "`load_wine`, 2-row requests), 1 scoring worker per deployment, every "
        "deployment with route basic auth",
        f"- deploy servers: one per runtime, size `{s['size']}`; the container gets "
        f"{c.get('cpus', '?')} CPU and {c.get('memory_mb', '?')} MB, the process "
        "server no limit; the container's port is published on 127.0.0.1 "
        f"(docker-proxy in the path: {c.get('docker_proxy', '?')})",
        f"- runtime image `{image.tag if image else '?'}` "
        f"({image.size_mb if image else 0:.0f} MB), removed before the cold deploy "
        f"and {cold}",
        f"- deploy time: `create_deployment_standalone` -> first correct prediction "
        f"through Traefik; {s['warm_deploys']} warm deploys per runtime, "
        "alternated process, docker",
        f"- memory: each warm deployment idle after {s['memory_requests']} "
        "predictions; RSS/PSS from /proc over the server's process tree (the "
        "container's processes seen from the host), and `docker stats --no-stream`",
        f"- throughput: `wrk -t{load['threads']} -c{load['connections']} "
        f"-d{load['duration_s']}s --latency` on /invocations through Traefik + route "
        f"auth after a {load['warmup_s']} s warm-up per run, runtimes alternated "
        f"p, d x {s['rounds']}",
        f"- load: the 1-minute load average was {low:.2f}-{high:.2f} as the wrk runs "
        f"started (table below); {results.quiet_note}",
        f"- Python: {_python(results, 'process')} for the process runtime (the "
        f"platform's own), {_python(results, 'docker')} in the runtime image (its "
        "base image's); a JSON round trip of a request-sized body measures how fast "
        "each runs plain Python code, which most of a 2-row prediction is",
        f"- caveat: wrk, Traefik, the platform API and the model servers share "
        f"{m['nproc']} CPUs; compare the runtimes within one run only.",
    ]


def _python(results: Results, runtime: str) -> str:
    found = results.pythons.get(runtime)
    if not found:
        return "?"
    return (
        f"CPython {found['version']} (JSON round trip "
        f"{found['json_round_trip_us']:.2f} us)"
    )


def render(results: Results) -> str:
    lines = [
        SECTION_START,
        *_header(results),
        "",
        "### Side by side",
        "",
        *_side_by_side(results),
        "",
        "### Against the goals",
        "",
        *_goals(results),
        "",
        "### Every deploy",
        "",
        *_deploys(results),
        "",
        "### Every wrk run",
        "",
        *_runs(results),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


# -- the run ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=int, default=20, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=5, help="seconds before each run")
    parser.add_argument("--rounds", type=int, default=2, help="p,d repetitions")
    parser.add_argument("--warm-deploys", type=int, default=3, help="per runtime")
    parser.add_argument("--memory-requests", type=int, default=10)
    parser.add_argument("--size", default="mid", choices=("low", "mid", "high"))
    add_quiet_args(parser)
    parser.add_argument("--no-doc", action="store_true", help="skip docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.warm_deploys <= MAX_WARM_DEPLOYS:
        parser.error(f"--warm-deploys must be 1..{MAX_WARM_DEPLOYS}")
    if not 0 <= args.memory_requests <= MAX_MEMORY_REQUESTS:
        parser.error(f"--memory-requests must be 0..{MAX_MEMORY_REQUESTS}")
    return args


def pythons(tag: str) -> dict[str, dict[str, Any]]:
    """The Python of each runtime: its version and its time for a JSON round trip."""
    outputs = {
        "process": run([sys.executable, "-c", PYTHON_PROBE], timeout=120),
        "docker": docker_cli(
            "run", "--rm", "--network", "none", tag, "python", "-c", PYTHON_PROBE
        ),
    }
    found = {}
    for runtime, output in outputs.items():
        version, micros = output.split()
        found[runtime] = {"version": version, "json_round_trip_us": float(micros)}
    return found


def container_facts(container: str) -> dict[str, Any]:
    nano_cpus = docker_cli("inspect", "-f", "{{.HostConfig.NanoCpus}}", container)
    memory = docker_cli("inspect", "-f", "{{.HostConfig.Memory}}", container)
    port = docker_cli("port", container).rpartition(":")[2]
    # pgrep exits 1 when nothing matches: dockerd runs with --userland-proxy=false.
    pgrep = ["pgrep", "-a", "docker-proxy"]
    proxies = subprocess.run(pgrep, capture_output=True, text=True, timeout=30).stdout
    return {
        "cpus": int(nano_cpus) / 1e9,
        "memory_mb": int(memory) // 2**20,
        "docker_proxy": "yes" if f"-host-port {port}" in proxies else "no",
    }


def deploy_phase(
    args: argparse.Namespace, results: Results, deployer: Deployer, workdir: Path
) -> dict[str, Deployed]:
    """Cold and warm deploys with their memory; returns the last one per runtime."""
    deployer.create_servers()
    image = remove_runtime_image(deployer.model, workdir)
    results.image = image
    started = datetime.now(UTC)

    deploy, _ = deployer.deploy("process", "process-cold", "cold")
    results.deploys.append(deploy)
    deployer.delete("process", "process-cold")
    deploy, _ = deployer.deploy("docker", "docker-cold", "cold")
    results.deploys.append(deploy)
    deployer.delete("docker", "docker-cold")
    created = image_created(image.tag)
    image.built_during_cold_deploy = created is not None and created >= started
    size = docker_cli("image", "inspect", "-f", "{{.Size}}", image.tag)
    image.size_mb = int(size) / 1e6

    kept: dict[str, Deployed] = {}
    for index in range(1, args.warm_deploys + 1):
        for runtime in SERVERS:
            name = f"{runtime}-warm-{index}"
            deploy, deployed = deployer.deploy(runtime, name, "warm")
            results.deploys.append(deploy)
            results.memory.append(
                deployer.memory(runtime, deployed, args.memory_requests)
            )
            if index < args.warm_deploys:
                deployer.delete(runtime, name)
            kept[runtime] = deployed
    return kept


def benchmark(args: argparse.Namespace, results: Results, workdir: Path) -> None:
    load = Load(args.threads, args.connections, args.duration, args.warmup)
    results.settings = {
        "load": asdict(load), "rounds": args.rounds, "size": args.size,
        "warm_deploys": args.warm_deploys, "memory_requests": args.memory_requests,
    }  # fmt: skip
    gate = QuietGate(args.quiet_load, args.quiet_wait)
    home = workdir / "home"
    with ExitStack() as stack:
        # Registered first, so it runs last: after `mlplatform down`.
        stack.callback(remove_containers, home)
        print("starting the platform", flush=True)
        env = start_platform(home, stack)
        stack.enter_context(environment(env))
        model = register_model()
        auth = f"bench:{secrets.token_urlsafe(12)}"
        client = stack.enter_context(MLPlatform())
        deployer = Deployer(client, model, auth, home)
        gate.wait("deploys")
        kept = deploy_phase(args, results, deployer, workdir)
        results.container = container_facts(kept["docker"].container or "")
        results.pythons = pythons(results.image.tag if results.image else "")

        base = env["MLPLATFORM_URL"]
        targets = [
            Target(key, f"{base}/deploy/{SERVERS[r]}/{kept[r].name}", auth)
            for key, r in RUNTIMES.items()
        ]
        check_targets(targets, model)
        scripts = write_scripts(targets, model.body(), workdir)
        gate.wait("load runs")
        results.quiet_waits, results.quiet_note = gate.waits, gate.describe()
        print("throughput runs", flush=True)
        results.runs = measure(targets, scripts, load, args.rounds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started_at = time.monotonic()
    about = versions()
    about["docker"] = docker_cli("version", "--format", "{{.Server.Version}}")
    results = Results(started, machine(), about, {})
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        try:
            benchmark(args, results, Path(tmp))
            results.elapsed_s = time.monotonic() - started_at
        except (BenchError, MLPlatformError, subprocess.SubprocessError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    print(f"raw results: {write_json('runtimes', started, results.to_json())}")
    section = render(results)
    if not args.no_doc:
        write_doc(section, SECTION_START, SECTION_END)
        print("wrote docs/benchmarks.md")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
