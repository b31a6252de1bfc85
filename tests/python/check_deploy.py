"""Schema checks of deploy/ that need no container engine and no cluster.

- Every Kubernetes manifest in deploy/k8s validates, strictly (unknown fields refused), against
  the Kubernetes 1.30 JSON schemas shipped in the PyPI package `kubernetes-validate`.
- deploy/compose.yaml validates against the Compose specification's JSON schema (the copy in
  the docker-compose 1.29.2 wheel, extracted by scripts/setup-test-env.sh).
- The Grafana dashboard is JSON with a uid, unique panel ids, and a Prometheus query on every
  graph panel; the provisioning files point at it.

Run by tests/operations.rs with the project's .venv; prints one line per file and a last line
"deploy: all checks passed", or raises.
"""

import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"


def check_kubernetes() -> None:
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert manifests, "no manifests in deploy/k8s"
    kinds = set()
    for path in manifests:
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            kinds.add(document["kind"])
            print(f"k8s: {path.name} {document['kind']} valid for {KUBERNETES_VERSION}")
    for kind in ["Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"]:
        assert kind in kinds, f"deploy/k8s has no {kind}"
    deployment = next(
        d
        for p in manifests
        for d in yaml.safe_load_all(p.read_text())
        if d and d["kind"] == "Deployment"
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready", container
    assert container["livenessProbe"]["httpGet"]["path"] == "/health", container
    assert container["resources"]["requests"], container


def check_compose() -> None:
    schema = json.loads((ROOT / "data/tools/compose_spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert not errors, f"compose.yaml: {errors}"
    services = compose["services"]
    for name in ["switchyard", "qdrant", "prometheus", "grafana"]:
        assert name in services, f"compose has no {name} service"
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    print(f"compose: compose.yaml valid ({len(services)} services)")


def check_dashboard() -> None:
    path = DEPLOY / "grafana/dashboards/switchyard.json"
    dashboard = json.loads(path.read_text())
    assert dashboard.get("uid"), "dashboard has no uid"
    panels = []

    def walk(items):
        for panel in items:
            panels.append(panel)
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [p for p in panels if p.get("type") != "row"]
    for panel in graphs:
        targets = panel.get("targets", [])
        assert targets and all(t.get("expr") for t in targets), f"panel {panel.get('title')} has no query"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/switchyard.yml").read_text())
    assert provider["providers"], "no dashboard provider"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert any(d["type"] == "prometheus" for d in datasources["datasources"])
    print(f"grafana: {path.name} valid ({len(graphs)} panels)")


def main() -> int:
    check_kubernetes()
    check_compose()
    check_dashboard()
    print("deploy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
