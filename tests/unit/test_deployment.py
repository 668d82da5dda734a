"""The deployment files, checked offline: docker-compose.yml by docker-compose itself, the
Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, strict), and both
against what the code really offers (its commands, the seeds' resource figures)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = sorted((REPO / "infra" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.34.0"
STACK = {"kafka", "schema-registry", "clickhouse", "neo4j", "chroma", "triton", "prometheus", "grafana",
         "planner", "executor", "sinks", "api"}


def _compose_cli() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing: `make test` installs it (apt docker-compose)")
        pytest.skip("docker-compose not installed (make test installs it)")
    return found


def _compose_config_errors(path: Path) -> str:
    run = subprocess.run([_compose_cli(), "-f", str(path), "config", "-q"], capture_output=True, text=True,
                         cwd=path.parent, timeout=60)
    return "" if run.returncode == 0 else (run.stderr or run.stdout)


def _docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in K8S for d in yaml.safe_load_all(p.read_text()) if d]


def test_compose_file_is_valid_and_a_broken_one_is_refused(tmp_path):
    assert _compose_config_errors(REPO / "docker-compose.yml") == ""
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["planner"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert "no-such-service" in _compose_config_errors(tmp_path / "docker-compose.yml")


def test_compose_runs_the_whole_stack_with_commands_the_cli_has():
    from typer.main import get_command

    from streams.cli import app
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert STACK <= set(compose["services"])
    commands = set(get_command(app).commands)
    ours = {name: s for name, s in compose["services"].items() if s.get("image") == "chimera:local"}
    assert {"planner", "executor", "sinks", "api", "topics"} <= set(ours)
    for name, service in ours.items():
        assert service["command"][0] in commands, f"{name}: `chimera {service['command'][0]}` does not exist"


def test_dockerfile_copies_only_what_exists():
    lines = (REPO / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ") and "--from=" not in line]
    assert copies
    for sources in copies:
        for src in sources:
            assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_manifests_validate_strictly_against_the_kubernetes_schemas(path):
    import kubernetes_validate
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_manifest_with_a_misspelt_field_is_refused():
    import kubernetes_validate
    _, deployment = next((p, d) for p, d in _docs() if d["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"tcpSocket": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_workload_has_probes_and_resources_and_planners_have_the_seeds_figures():
    deployments = {d["metadata"]["name"]: d for _, d in _docs() if d["kind"] == "Deployment"}
    assert {"planner", "executor", "sinks", "api", "triton"} <= set(deployments)
    for name, d in deployments.items():
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in c, f"{name} has no liveness probe"
            assert c["resources"]["requests"] and c["resources"]["limits"], name
    planner = deployments["planner"]["spec"]["template"]["spec"]["containers"][0]
    # the seeds: a planner needs 256-512 MiB and 0.25-0.5 CPU
    assert planner["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"},
                                    "limits": {"cpu": "500m", "memory": "512Mi"}}
    assert "readinessProbe" in deployments["api"]["spec"]["template"]["spec"]["containers"][0]


def test_manifests_run_commands_the_cli_has():
    from typer.main import get_command

    from streams.cli import app
    commands = set(get_command(app).commands)
    ours = [c for _, d in _docs() if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] if c["image"] == "chimera:local"]
    assert len(ours) == 4
    for c in ours:
        assert c["args"][0] in commands, f"{c['name']}: `chimera {c['args'][0]}` does not exist"


def test_autoscalers_and_disruption_budgets_point_at_real_workloads():
    docs = [d for _, d in _docs()]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert {"planner", "api"} <= {h["spec"]["scaleTargetRef"]["name"] for h in hpas}
    for h in hpas:
        assert h["spec"]["scaleTargetRef"]["name"] in deployments
    from topics.registry import PLAN_PARTITIONS
    planner_hpa = next(h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == "planner")
    assert planner_hpa["spec"]["maxReplicas"] <= PLAN_PARTITIONS, "a planner beyond the partitions idles"
    assert {"planner", "api"} <= {p["metadata"]["name"] for p in pdbs}
    for p in pdbs:
        selects = p["spec"]["selector"]["matchLabels"]
        assert any(selects.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                   for d in deployments.values()), f"PDB {p['metadata']['name']} selects no pods"
