"""Serving benchmark (issue 2): a model served directly vs. through the platform.

One run, one machine, one model (a random forest on scikit-learn's wine data), 2-row
requests and one scoring worker everywhere:

1. start a platform in a temporary MLPLATFORM_HOME (``mlplatform up --detach``) and
   time ``create_deployment_standalone`` -> first good prediction through Traefik;
2. serve the same model with ``mlflow models serve`` on its own port;
3. load all three routes with wrk, alternating: (a) the direct server, (b) Traefik
   with route basic auth (forwardAuth to the platform API), (c) Traefik without auth;
4. at one connection, take p50(b) - p50(c) as the auth cost and p50(c) - p50(a) as
   Traefik's own cost;
5. write raw JSON to bench/results/ and a Markdown section to docs/benchmarks.md.

Before the deploys and again before the wrk runs it waits (within one time budget)
until the machine is quiet: a 1-minute load average below ``--quiet-load``.

Everything started here is stopped again, on failure too. Run it with bench/run.sh.
"""

import argparse
import base64
import json
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import sklearn
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

from mlplatform_client import MLPlatform, MLPlatformError

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION_START = "<!-- bench/serving.py: start -->"
SECTION_END = "<!-- bench/serving.py: end -->"

MODEL_NAME = "bench-wine"
DEPLOY_SERVER = "bench"
OPEN_DEPLOYMENT = "open"
ROUTES = {
    "a": "direct (mlflow models serve)",
    "b": "Traefik + route auth",
    "c": "Traefik, no auth",
}
THROUGHPUT_GOAL = 0.9
AUTH_OVERHEAD_GOAL_MS = 2.0
# Upper bounds that keep every load run short whatever the arguments say.
MAX_DURATION_S = 120
MAX_CONNECTIONS = 64


class BenchError(Exception):
    pass


# -- processes and polling ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def poll(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``check`` with growing pauses until it is true; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def run(
    command: list[str], env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise BenchError(
            f"{shlex.join(command[:3])} ... exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result.stdout


def stop_group(process: "subprocess.Popen[bytes]") -> None:
    """Terminate the process group ``process`` leads, then kill what is left."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# -- a quiet machine ----------------------------------------------------------


@dataclass(frozen=True)
class Quiet:
    phase: str
    waited_s: float
    load_1m: float  # as the wait ended
    reached: bool  # False when the time budget ran out first


class QuietGate:
    """Waits for a quiet machine (low 1-minute load average) before each phase.

    One time budget covers every phase of a run, so a busy machine delays the run by
    at most ``budget_s``; each wait is kept with the load it ended at.
    """

    def __init__(self, threshold: float, budget_s: float, interval_s: float = 15):
        self.threshold = threshold
        self.budget_s = budget_s
        self.interval_s = interval_s
        self.remaining_s = budget_s
        self.waits: list[Quiet] = []

    def wait(self, phase: str) -> Quiet:
        started = time.monotonic()
        while True:
            load = os.getloadavg()[0]
            waited = time.monotonic() - started
            left = self.remaining_s - waited
            if load < self.threshold or left <= 0:
                break
            print(f"{phase}: 1-minute load {load:.2f} >= {self.threshold:g}, "
                  f"waiting ({waited:.0f} s, {left:.0f} s of budget left)",
                  flush=True)  # fmt: skip
            time.sleep(min(self.interval_s, left))
        self.remaining_s = max(0.0, left)
        quiet = Quiet(phase, round(waited, 1), load, load < self.threshold)
        self.waits.append(quiet)
        return quiet

    def describe(self) -> str:
        """One sentence for the report."""
        if self.budget_s <= 0:
            return "the run did not wait for a quiet machine (`--quiet-wait 0`)"
        phases = ", ".join(
            f"{q.phase} {q.waited_s:.0f} s, "
            + (f"load {q.load_1m:.2f}" if q.reached else f"gave up at {q.load_1m:.2f}")
            for q in self.waits
        )
        return (
            f"before each phase the run polled `/proc/loadavg` every "
            f"{self.interval_s:g} s until the 1-minute load average was below "
            f"{self.threshold:.1f} (at most {self.budget_s / 60:.0f} min in all): "
            f"{phases}"
        )


# -- the platform -------------------------------------------------------------


def platform_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING_", "MLPLATFORM_", "REFRESH_TOKEN"))
    }
    env["MLPLATFORM_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def parse_env(output: str) -> dict[str, str]:
    values = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0]
    return values


def start_platform(home: Path, stack: ExitStack) -> dict[str, str]:
    """``mlplatform up --detach`` in ``home``; returns what ``mlplatform env`` says."""
    env = platform_env(home)
    mlplatform = str(BIN / "mlplatform")
    password = "Bench-" + secrets.token_urlsafe(12)
    # Registered before `up`: a half-started platform is stopped as well.
    stack.callback(subprocess.run, [mlplatform, "down"], env=env, timeout=120)
    port = str(free_port())
    command = [mlplatform, "up", "--detach", "--port", port]
    run([*command, "--admin-password", password], env=env)
    return parse_env(run([mlplatform, "env"], env=env))


# -- the model ----------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    uri: str
    sample: pd.DataFrame  # the two rows every request sends
    expected: list[int]  # model.predict(sample)

    def body(self) -> str:
        split = self.sample.to_dict(orient="split", index=False)
        return json.dumps({"dataframe_split": split})


def register_model() -> Model:
    data = load_wine(as_frame=True)
    model = RandomForestClassifier(n_estimators=100, random_state=0)
    model.fit(data.data, data.target)
    sample = data.data.iloc[[0, 100]]
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run(run_name="random-forest"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL_NAME,
            input_example=sample,
            # MLflow 3.17 loads forests with skops, which trusts no tree by default.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    uri = f"models:/{MODEL_NAME}/{info.registered_model_version}"
    return Model(uri, sample, [int(x) for x in model.predict(sample)])


# -- deployments --------------------------------------------------------------


@dataclass(frozen=True)
class DeployTiming:
    deployment: str
    created_s: float  # create_deployment_standalone returned
    first_prediction_s: float  # the first correct prediction through Traefik


def predicts(
    client: MLPlatform,
    name: str,
    auth: str | None,
    model: Model,
    server: str = DEPLOY_SERVER,
) -> bool:
    try:
        served = client.predict_model(model.sample, server, name, auth=auth)
    except MLPlatformError:
        return False
    return [int(x) for x in served["predictions"]] == model.expected


def time_deployment(
    client: MLPlatform,
    name: str,
    model: Model,
    auth: str | None,
    server: str = DEPLOY_SERVER,
) -> DeployTiming:
    started = time.perf_counter()
    client.create_deployment_standalone(server, name, model.uri, auth=auth)
    created = time.perf_counter() - started
    poll(
        lambda: predicts(client, name, auth, model, server),
        120,
        f"deployment {server}/{name}",
    )
    return DeployTiming(name, created, time.perf_counter() - started)


def deploy_all(
    client: MLPlatform, model: Model, auth: str, repeats: int
) -> tuple[list[DeployTiming], str]:
    """Time ``repeats`` protected deployments, keep the last, add an open one."""
    client.create_endpoint_standalone(DEPLOY_SERVER)
    timings = []
    for index in range(1, repeats + 1):
        name = f"auth-{index}"
        timings.append(time_deployment(client, name, model, auth))
        print(f"deployment {name}: first prediction after "
              f"{timings[-1].first_prediction_s:.2f} s", flush=True)  # fmt: skip
        if index < repeats:
            client.delete_deployment(DEPLOY_SERVER, name)
    time_deployment(client, OPEN_DEPLOYMENT, model, None)
    return timings, timings[-1].deployment


# -- the direct server --------------------------------------------------------


def ping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_direct_server(model: Model, workdir: Path, stack: ExitStack) -> str:
    """``mlflow models serve`` of a downloaded copy of the model; returns its URL."""
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=model.uri, dst_path=str(workdir / "model")
    )
    port = free_port()
    command = [
        str(BIN / "mlflow"), "models", "serve", "-m", model_dir,
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    env = platform_env(workdir)  # no tracking credentials: it serves a local folder
    with (workdir / "direct-server.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.callback(stop_group, process)
    url = f"http://127.0.0.1:{port}"
    poll(lambda: process.poll() is None and ping(url), 180, "direct server")
    return url


# -- load with wrk ------------------------------------------------------------

# done() prints one JSON line, so no parsing of wrk's human-readable report.
LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.body = [==[BODY]==]
wrk.headers["Content-Type"] = "application/json"
HEADERS
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"non_2xx\\": %d, " ..
    "\\"socket_errors\\": %d, \\"mean_us\\": %.1f, \\"p50_us\\": %d, " ..
    "\\"p90_us\\": %d, \\"p99_us\\": %d, \\"max_us\\": %d}\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max))
end
"""


@dataclass(frozen=True)
class Target:
    key: str
    url: str  # of the scoring server, without a path
    auth: str | None  # "user:password" for route basic auth

    def lua(self, body: str | None) -> str:
        """POST ``body`` to /invocations, or GET /ping when ``body`` is None."""
        headers = ""
        if self.auth is not None:
            token = base64.b64encode(self.auth.encode()).decode()
            headers = f'wrk.headers["Authorization"] = "Basic {token}"'
        script = LUA_TEMPLATE.replace("HEADERS", headers)
        if body is None:
            return script.replace('wrk.method = "POST"', 'wrk.method = "GET"').replace(
                "wrk.body = [==[BODY]==]\n", ""
            )
        return script.replace("BODY", body)


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration_s: int
    warmup_s: int

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= MAX_DURATION_S or self.warmup_s > MAX_DURATION_S:
            raise BenchError(f"durations must be 1..{MAX_DURATION_S} s")
        if not 0 < self.threads <= self.connections <= MAX_CONNECTIONS:
            raise BenchError(f"need 0 < threads <= connections <= {MAX_CONNECTIONS}")


@dataclass(frozen=True)
class WrkRun:
    route: str
    round: int
    load_1m: float  # the machine's load average as the run started
    requests: int
    requests_per_s: float
    non_2xx: int
    socket_errors: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Scripts:
    """One wrk script per route, all requesting the same scoring-server path."""

    path: str  # "invocations" or "ping"
    files: dict[str, Path]


def write_scripts(targets: list[Target], body: str | None, workdir: Path) -> Scripts:
    path = "ping" if body is None else "invocations"
    files = {}
    for target in targets:
        file = workdir / f"{path}-{target.key}.lua"
        file.write_text(target.lua(body))
        files[target.key] = file
    return Scripts(path, files)


def wrk(url: str, script: Path, load: Load, seconds: int) -> dict[str, Any]:
    command = [
        "wrk", f"-t{load.threads}", f"-c{load.connections}", f"-d{seconds}s",
        "--timeout", "10s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    output = run(command, timeout=seconds + 60)
    match = re.search(r"^WRK_JSON (.*)$", output, re.MULTILINE)
    if match is None:
        raise BenchError(f"no result line in wrk output:\n{output}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def measure_once(
    target: Target, scripts: Scripts, load: Load, round_number: int
) -> WrkRun:
    url, script = f"{target.url}/{scripts.path}", scripts.files[target.key]
    if load.warmup_s:
        wrk(url, script, load, load.warmup_s)
    load_1m = os.getloadavg()[0]
    raw = wrk(url, script, load, load.duration_s)
    run_ = WrkRun(
        route=target.key,
        round=round_number,
        load_1m=load_1m,
        requests=raw["requests"],
        requests_per_s=raw["requests"] / (raw["duration_us"] / 1e6),
        non_2xx=raw["non_2xx"],
        socket_errors=raw["socket_errors"],
        mean_ms=raw["mean_us"] / 1000,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )
    print(f"  /{scripts.path} {load.connections} conn, route {target.key} "
          f"round {round_number}: {run_.requests_per_s:.0f} req/s, "
          f"p50 {run_.p50_ms:.2f} ms, p99 {run_.p99_ms:.2f} ms, "
          f"errors {run_.non_2xx + run_.socket_errors}, load {load_1m:.1f}",
          flush=True)  # fmt: skip
    return run_


def measure(
    targets: list[Target], scripts: Scripts, load: Load, rounds: int
) -> list[WrkRun]:
    """Alternate the routes (a, b, c, a, b, c, ...) so drift hits them alike."""
    return [
        measure_once(target, scripts, load, round_number)
        for round_number in range(1, rounds + 1)
        for target in targets
    ]


def check_targets(targets: list[Target], model: Model) -> None:
    """Each route predicts correctly; the protected one refuses a missing password."""
    body = model.body()
    headers = {"Content-Type": "application/json"}
    for target in targets:
        auth = None
        if target.auth is not None:
            user, _, password = target.auth.partition(":")
            auth = (user, password)
        url = f"{target.url}/invocations"
        response = httpx.post(url, content=body, headers=headers, auth=auth, timeout=30)
        response.raise_for_status()
        if [int(x) for x in response.json()["predictions"]] != model.expected:
            raise BenchError(f"route {target.key} predicts wrongly")
        if auth is not None:
            refused = httpx.post(url, content=body, headers=headers, timeout=30)
            if refused.status_code != 401:
                raise BenchError(f"route {target.key} answers without auth")


# -- summary ------------------------------------------------------------------


@dataclass
class RouteSummary:
    route: str
    rps_best: float
    rps_median: float
    p50_ms_median: float
    p99_ms_median: float
    p50_ms_best: float
    errors: int


def summarise(
    runs: list[WrkRun], keys: Iterable[str] = ROUTES
) -> dict[str, RouteSummary]:
    summaries = {}
    for key in keys:
        mine = [r for r in runs if r.route == key]
        summaries[key] = RouteSummary(
            route=key,
            rps_best=max(r.requests_per_s for r in mine),
            rps_median=statistics.median(r.requests_per_s for r in mine),
            p50_ms_median=statistics.median(r.p50_ms for r in mine),
            p99_ms_median=statistics.median(r.p99_ms for r in mine),
            p50_ms_best=min(r.p50_ms for r in mine),
            errors=sum(r.non_2xx + r.socket_errors for r in mine),
        )
    return summaries


@dataclass
class Results:
    started_at: str
    machine: dict[str, str]
    versions: dict[str, str]
    settings: dict[str, Any]
    deploy_timings: list[DeployTiming] = field(default_factory=list)
    throughput_runs: list[WrkRun] = field(default_factory=list)
    latency_runs: list[WrkRun] = field(default_factory=list)
    ping_runs: list[WrkRun] = field(default_factory=list)
    quiet_waits: list[Quiet] = field(default_factory=list)
    quiet_note: str = ""
    elapsed_s: float = 0.0

    def throughput(self) -> dict[str, RouteSummary]:
        return summarise(self.throughput_runs)

    def latency(self) -> dict[str, RouteSummary]:
        return summarise(self.latency_runs)

    def ping(self) -> dict[str, RouteSummary]:
        return summarise(self.ping_runs)

    def load_range(self) -> tuple[float, float]:
        loads = [r.load_1m for r in self.throughput_runs + self.latency_runs]
        loads += [r.load_1m for r in self.ping_runs]
        return min(loads), max(loads)

    def derived(self) -> dict[str, float]:
        heavy, light, bare = self.throughput(), self.latency(), self.ping()
        seconds = [t.first_prediction_s for t in self.deploy_timings]
        return {
            "throughput_ratio_b_a_median": heavy["b"].rps_median
            / heavy["a"].rps_median,
            "throughput_ratio_b_a_best": heavy["b"].rps_best / heavy["a"].rps_best,
            "throughput_ratio_c_a_median": heavy["c"].rps_median
            / heavy["a"].rps_median,
            "auth_overhead_p50_ms": light["b"].p50_ms_median - light["c"].p50_ms_median,
            "traefik_overhead_p50_ms": light["c"].p50_ms_median
            - light["a"].p50_ms_median,
            "auth_overhead_ping_p50_ms": bare["b"].p50_ms_median
            - bare["c"].p50_ms_median,
            "traefik_overhead_ping_p50_ms": bare["c"].p50_ms_median
            - bare["a"].p50_ms_median,
            "deploy_to_first_prediction_median_s": statistics.median(seconds),
        }

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = {
            "throughput": {k: asdict(v) for k, v in self.throughput().items()},
            "low_load": {k: asdict(v) for k, v in self.latency().items()},
            "ping": {k: asdict(v) for k, v in self.ping().items()},
            **self.derived(),
        }
        return data


# -- machine and versions -----------------------------------------------------


def command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({type(exc).__name__})"
    return (result.stdout or result.stderr).strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown"


def machine() -> dict[str, str]:
    memory = command_output(["free", "-h"]).splitlines()
    mem = next((line.split() for line in memory if line.startswith("Mem:")), [])
    return {
        "nproc": command_output(["nproc"]),
        "memory": f"{mem[1]} total, {mem[-1]} available" if mem else "?",
        "arch": command_output(["uname", "-m"]),
        "cpu": cpu_model(),
        "kernel": command_output(["uname", "-r"]),
    }


def versions() -> dict[str, str]:
    traefik = re.search(
        r"Version:\s*(\S+)", command_output([str(BIN / "traefik"), "version"])
    )
    wrk_version = re.search(r"wrk (\S+)", command_output(["wrk", "-v"]))
    return {
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "scikit-learn": sklearn.__version__,
        "traefik": traefik.group(1) if traefik else "?",
        "wrk": wrk_version.group(1) if wrk_version else "?",
    }


# -- report -------------------------------------------------------------------


def _row(label: str, summary: RouteSummary) -> str:
    return (
        f"| {label} | {summary.rps_median:.0f} | {summary.rps_best:.0f} "
        f"| {summary.p50_ms_median:.2f} | {summary.p99_ms_median:.2f} "
        f"| {summary.errors} |"
    )


def _table(summaries: dict[str, RouteSummary]) -> list[str]:
    head = [
        "| route | req/s (median) | req/s (best) | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    return head + [_row(f"({k}) {ROUTES[k]}", summaries[k]) for k in ROUTES]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _goals(results: Results) -> list[str]:
    derived = results.derived()
    ratio = derived["throughput_ratio_b_a_median"]
    best = derived["throughput_ratio_b_a_best"]
    auth = derived["auth_overhead_p50_ms"]
    ratio_ok = _verdict(ratio >= THROUGHPUT_GOAL)
    auth_ok = _verdict(auth < AUTH_OVERHEAD_GOAL_MS)
    return [
        "| measure | value | goal |",
        "|---|---:|---|",
        f"| throughput ratio b/a (median; best {best:.2f}) | {ratio:.2f} "
        f"| >= {THROUGHPUT_GOAL}: {ratio_ok} |",
        "| throughput ratio c/a (median) "
        f"| {derived['throughput_ratio_c_a_median']:.2f} | - |",
        f"| auth overhead p50, b - c, /invocations at 1 connection | {auth:.2f} ms "
        f"| < {AUTH_OVERHEAD_GOAL_MS:g} ms: {auth_ok} |",
        "| Traefik overhead p50, c - a, /invocations at 1 connection "
        f"| {derived['traefik_overhead_p50_ms']:.2f} ms | - |",
        "| auth overhead p50, b - c, /ping at 1 connection "
        f"| {derived['auth_overhead_ping_p50_ms']:.2f} ms | - |",
        "| Traefik overhead p50, c - a, /ping at 1 connection "
        f"| {derived['traefik_overhead_ping_p50_ms']:.2f} ms | - |",
        "| deploy call -> first prediction (median) "
        f"| {derived['deploy_to_first_prediction_median_s']:.2f} s | - |",
    ]


def _deploys(results: Results) -> list[str]:
    lines = [
        "| deployment | create call returned | first good prediction |",
        "|---|---:|---:|",
    ]
    for t in results.deploy_timings:
        lines.append(
            f"| {t.deployment} | {t.created_s:.2f} s | {t.first_prediction_s:.2f} s |"
        )
    return lines


def _header(results: Results) -> list[str]:
    m, v, s = results.machine, results.versions, results.settings
    heavy, light, bare = s["throughput_load"], s["low_load"], s["ping_load"]
    low, high = results.load_range()
    return [
        "## Serving: direct vs. Traefik vs. Traefik + route auth",
        "",
        f"Measured {results.started_at} by `bench/serving.py` in "
        f"{results.elapsed_s / 60:.0f} minutes. Reproduce with `bench/run.sh` "
        "(installs wrk when missing; `--help` lists the knobs).",
        "",
        f"- machine: `nproc` {m['nproc']}, {m['cpu']}, `uname -m` {m['arch']}, "
        f"kernel {m['kernel']}, memory {m['memory']} (`free -h`)",
        f"- versions: Python {v['python']}, MLflow {v['mlflow']}, scikit-learn "
        f"{v['scikit-learn']}, Traefik {v['traefik']}, wrk {v['wrk']}",
        "- model: RandomForestClassifier(n_estimators=100) on `load_wine`, "
        "2-row `dataframe_split` requests, 1 scoring worker on every route",
        f"- throughput: `wrk -t{heavy['threads']} -c{heavy['connections']} "
        f"-d{heavy['duration_s']}s --latency` after a {heavy['warmup_s']} s "
        f"warm-up per run, routes alternated a, b, c x {s['rounds']}",
        f"- low load: the same with `-t{light['threads']} -c{light['connections']} "
        f"-d{light['duration_s']}s`, then GET /ping (no model work) with "
        f"`-d{bare['duration_s']}s` after {bare['warmup_s']} s warm-up",
        '- medians are over the rounds; "best" is the best round',
        f"- caveat: wrk, Traefik, the platform API and the model servers share "
        f"{m['nproc']} CPUs, so the load generator competes with the servers. "
        f"The 1-minute load average was {low:.1f}-{high:.1f} during the runs "
        "(other work on the machine included); treat absolute numbers as "
        "this machine's and compare routes within one run only.",
        f"- quiet machine: {results.quiet_note}",
    ]


def render(results: Results) -> str:
    lines = [
        SECTION_START,
        *_header(results),
        "",
        f"### Throughput, /invocations, "
        f"{results.settings['throughput_load']['connections']} connections",
        "",
        *_table(results.throughput()),
        "",
        "### Low load, /invocations, 1 connection",
        "",
        *_table(results.latency()),
        "",
        "### Low load, /ping, 1 connection",
        "",
        *_table(results.ping()),
        "",
        "### Deploy time (`create_deployment_standalone` -> first prediction)",
        "",
        *_deploys(results),
        "",
        "### Against the goals",
        "",
        *_goals(results),
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_doc(section: str, start: str = SECTION_START, end: str = SECTION_END) -> None:
    """Replace one benchmark's section of docs/benchmarks.md, keep the rest."""
    if DOC.exists():
        text = DOC.read_text()
    else:
        text = "# Benchmarks\n\nSpeed goals are measured here, never in tests.\n\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def write_json(benchmark: str, started_at: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = started_at.replace(":", "").replace("-", "")
    path = RESULTS_DIR / f"{benchmark}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# -- the run ------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=int, default=20, help="seconds per run")
    parser.add_argument("--low-duration", type=int, default=15)
    parser.add_argument("--ping-duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5, help="seconds before each run")
    parser.add_argument("--rounds", type=int, default=2, help="a,b,c repetitions")
    parser.add_argument("--deploy-repeats", type=int, default=3)
    add_quiet_args(parser)
    parser.add_argument("--no-doc", action="store_true", help="skip docs/benchmarks.md")
    return parser.parse_args(argv)


def add_quiet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="wait before each phase until the 1-minute load average is below this",
    )
    parser.add_argument(
        "--quiet-wait",
        type=int,
        default=1200,
        help="seconds of waiting for a quiet machine, in all; 0 does not wait",
    )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def routes(
    platform_url: str, direct_url: str, auth_deployment: str, auth: str
) -> list[Target]:
    deploy = f"{platform_url}/deploy/{DEPLOY_SERVER}"
    return [
        Target("a", direct_url, None),
        Target("b", f"{deploy}/{auth_deployment}", auth),
        Target("c", f"{deploy}/{OPEN_DEPLOYMENT}", None),
    ]


def prepare(
    args: argparse.Namespace,
    results: Results,
    workdir: Path,
    stack: ExitStack,
    gate: QuietGate,
) -> tuple[list[Target], Model]:
    """Platform up, model registered and deployed, direct server started."""
    print("starting the platform", flush=True)
    env = start_platform(workdir / "home", stack)
    stack.enter_context(environment(env))
    model = register_model()
    gate.wait("deploys")
    auth = f"bench:{secrets.token_urlsafe(12)}"
    with MLPlatform() as client:
        timings, auth_deployment = deploy_all(client, model, auth, args.deploy_repeats)
    results.deploy_timings = timings
    direct_url = start_direct_server(model, workdir, stack)
    targets = routes(env["MLPLATFORM_URL"], direct_url, auth_deployment, auth)
    check_targets(targets, model)
    return targets, model


def benchmark(args: argparse.Namespace, results: Results, workdir: Path) -> None:
    heavy = Load(args.threads, args.connections, args.duration, args.warmup)
    light = Load(1, 1, args.low_duration, args.warmup)
    bare = Load(1, 1, args.ping_duration, min(args.warmup, 2))
    results.settings = {
        "throughput_load": asdict(heavy), "low_load": asdict(light),
        "ping_load": asdict(bare), "rounds": args.rounds,
        "deploy_repeats": args.deploy_repeats,
    }  # fmt: skip
    gate = QuietGate(args.quiet_load, args.quiet_wait)
    with ExitStack() as stack:
        targets, model = prepare(args, results, workdir, stack, gate)
        invocations = write_scripts(targets, model.body(), workdir)
        ping_scripts = write_scripts(targets, None, workdir)
        gate.wait("load runs")
        results.quiet_waits, results.quiet_note = gate.waits, gate.describe()
        print("throughput runs", flush=True)
        results.throughput_runs = measure(targets, invocations, heavy, args.rounds)
        print("low-load runs", flush=True)
        results.latency_runs = measure(targets, invocations, light, args.rounds)
        results.ping_runs = measure(targets, ping_scripts, bare, args.rounds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started_at = time.monotonic()
    results = Results(started, machine(), versions(), {})
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        try:
            benchmark(args, results, Path(tmp))
            results.elapsed_s = time.monotonic() - started_at
        except (BenchError, MLPlatformError, subprocess.SubprocessError) as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
    path = write_json("serving", results.started_at, results.to_json())
    print(f"raw results: {path}")
    section = render(results)
    if not args.no_doc:
        write_doc(section)
        print(f"wrote {DOC}")
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
