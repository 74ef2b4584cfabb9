"""deploy/k8s: Deployments, Service, ConfigMap and the KEDA ScaledObject parsed and held against the code:
commands, variables, ports, probe paths, the GPU request, and the stream and group the scaler watches."""

from __future__ import annotations

import shutil
import subprocess
from urllib.parse import urlparse

import pytest

from service.commands.cli import COMMANDS
from service.core.settings import Settings, WorkerSettings
from service.stores import RedisStore
from service.stores.job_stream import JobStream
from tests.deploy.manifests import DEPLOY, load_all, route_paths, settings_env_names

K8S = DEPLOY / "k8s"


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_names(objects: dict, deployment: dict) -> dict[str, str | None]:
    c = container(deployment)
    names: dict[str, str | None] = {}
    for source in c.get("envFrom", []):
        names |= objects[("ConfigMap", source["configMapRef"]["name"])]["data"]
    names |= {e["name"]: e.get("value") for e in c.get("env", [])}
    return names


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_all(K8S / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )


@pytest.mark.parametrize("name,worker", [("diffplex-api", False), ("diffplex-worker", True)])
def test_deployments_match_the_code(objects: dict, name: str, worker: bool) -> None:
    deployment = objects[("Deployment", name)]
    c = container(deployment)
    assert c["args"][0] in COMMANDS
    env = env_names(objects, deployment)
    assert set(env) <= settings_env_names(), set(env) - settings_env_names()
    port = int(env["DIFFPLEX_WORKER__PORT"] if worker else env["DIFFPLEX_PORT"])
    assert port == (WorkerSettings().port if worker else Settings().port)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    routes = route_paths(worker)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] in routes, (probe, get["path"])
        assert ports[get["port"]] == port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 150  # drains in time
    if worker:
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["image"].startswith("diffplex-gpu:")
        assert any(e["name"] == "DIFFPLEX_WORKER__CONSUMER" and "fieldRef" in e["valueFrom"] for e in c["env"])
    else:
        assert env["DIFFPLEX_ROLE"] == "api" and c["image"].startswith("diffplex:")
        assert any(e["name"] == "DIFFPLEX_ADMIN_KEY" and "secretKeyRef" in e["valueFrom"] for e in c["env"])


def test_service_reaches_the_api_pods(objects: dict) -> None:
    service = objects[("Service", "diffplex-api")]
    api = objects[("Deployment", "diffplex-api")]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    names = {p["name"] for p in container(api)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_keda_watches_the_workers_stream_and_group(objects: dict) -> None:
    scaled = objects[("ScaledObject", "diffplex-worker")]
    assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in objects
    config = objects[("ConfigMap", "diffplex-config")]["data"]
    stream = JobStream(
        RedisStore("redis://unused:1/0", config["DIFFPLEX_REDIS_PREFIX"]), config["DIFFPLEX_WORKER__GROUP"]
    )
    redis_url = urlparse(config["DIFFPLEX_REDIS_URL"])
    kinds = set()
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert meta["stream"] == stream.key and meta["consumerGroup"] == stream.group
        assert meta["address"] == f"{redis_url.hostname}:{redis_url.port}"
        assert meta["databaseIndex"] == redis_url.path.lstrip("/")
        kinds |= {"lagCount", "pendingEntriesCount"} & set(meta)
    assert kinds == {"lagCount", "pendingEntriesCount"}  # queued work and work in flight


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_renders_the_kustomization() -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: ScaledObject" in rendered.stdout and "kind: Deployment" in rendered.stdout
