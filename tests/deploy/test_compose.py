"""docker-compose.yml and the Dockerfiles, parsed and held against the code: commands exist in the CLI,
variables in Settings, probe paths are routes of the app they probe, ports agree, workers are scalable."""

from __future__ import annotations

import re
import tomllib
from urllib.parse import urlparse

import pytest
import yaml

from service.commands.cli import COMMANDS
from service.core.settings import Settings, WorkerSettings
from tests.deploy.manifests import DEPLOY, ROOT, route_paths, settings_env_names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def healthcheck_url(service: dict) -> str:
    (url,) = re.findall(r"https?://[^'\"]+", " ".join(service["healthcheck"]["test"]))
    return url


def test_services_and_redis_persistence(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "api", "worker", "prometheus"} <= set(services)
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"  # AOF: accepted jobs survive a restart
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert services["prometheus"]["profiles"] == ["monitoring"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_commands_and_environment_exist_in_the_code(compose: dict) -> None:
    known = settings_env_names()
    for name in ("api", "worker"):
        service = compose["services"][name]
        assert service["command"][0] in COMMANDS
        env = set(service["environment"])
        assert env <= known, env - known
        redis_url = urlparse(service["environment"]["DIFFPLEX_REDIS_URL"])
        assert redis_url.hostname == "redis"  # the compose service
    assert compose["services"]["api"]["environment"]["DIFFPLEX_ROLE"] in ("api", "all")
    Settings(**{"role": compose["services"]["api"]["environment"]["DIFFPLEX_ROLE"]})  # a valid value


def test_probes_and_ports_match_the_apps(compose: dict) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    url = urlparse(healthcheck_url(api))
    assert url.port == int(api["environment"]["DIFFPLEX_PORT"]) == Settings().port
    assert url.path in route_paths(worker=False)
    assert any(p.endswith(":8000") for p in api["ports"])
    url = urlparse(healthcheck_url(worker))
    assert url.port == int(worker["environment"]["DIFFPLEX_WORKER__PORT"]) == WorkerSettings().port
    assert url.path in route_paths(worker=True)
    assert "ports" not in worker and "container_name" not in worker  # `--scale worker=N` needs both absent
    assert int(worker["stop_grace_period"].rstrip("s")) >= 150  # longer than the drain


def test_prometheus_scrapes_the_metrics_routes(compose: dict) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["diffplex-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["diffplex-worker"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 8001}
    assert all(job["metrics_path"] in route_paths(worker=False) for job in jobs.values())
    assert "/metrics" in route_paths(worker=True)
    mount = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    assert (ROOT / mount).resolve() == DEPLOY / "prometheus.yml"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_copy_what_exists_and_run_a_command(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text()
    for source in re.findall(r"^COPY (\S+) ", text, re.M):
        assert (ROOT / source).exists(), source
    cmd = re.search(r'^CMD \["(\w[\w-]*)"', text, re.M)
    assert cmd is not None and cmd.group(1) in COMMANDS
    assert re.search(r'^ENTRYPOINT \["diffplex"\]', text, re.M)
    assert "torch==2.13.0" in text  # the one torch build the project runs on
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    assert WorkerSettings().port in exposed
    if dockerfile.endswith(".gpu"):
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        assert {"onnxruntime-gpu", "tensorrt"} <= set(extras["gpu"]) and '".[gpu]"' in text


def test_compose_builds_from_the_dockerfiles(compose: dict) -> None:
    for name in ("api", "worker"):
        build = compose["services"][name]["build"]
        default = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", build["dockerfile"])
        assert (ROOT / build["context"] / default).is_file()
    assert "diffplex:latest" in compose["services"]["api"]["image"]
