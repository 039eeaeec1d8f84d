"""Structural checks of deploy/ that need no Docker engine: compose.yaml and the Kubernetes
manifests parse, and hold what deploy/README.md promises.

Usage: check_deploy.py REPO_ROOT
"""

import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
compose = yaml.safe_load((root / "deploy/compose.yaml").read_text())
services = compose["services"]
assert set(services) >= {"jaeger", "mcp-server", "memento", "mock-azure"}, services
assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:2"), services["jaeger"]
ports = " ".join(services["jaeger"]["ports"])
for port in ("4317", "4318", "16686"):
    assert port in ports, ports
assert services["mock-azure"]["profiles"] == ["offline"]
for name, service in services.items():
    assert "healthcheck" in service, f"{name} has no healthcheck"
assert "memento-data" in compose["volumes"]
assert any("memento-data" in v for v in services["mcp-server"]["volumes"])
assert services["memento"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"

# One Jaeger configuration file, shared by compose and deploy/jaeger-local.sh.
jaeger = services["jaeger"]
assert "./jaeger/config.yaml:/etc/jaeger/config.yaml:ro" in jaeger["volumes"], jaeger
assert jaeger["command"] == ["--config", "/etc/jaeger/config.yaml"], jaeger
assert jaeger["environment"]["JAEGER_LISTEN_HOST"] == "0.0.0.0", jaeger
assert "jaeger/config.yaml" in (root / "deploy/jaeger-local.sh").read_text()
jaeger_config = yaml.safe_load((root / "deploy/jaeger/config.yaml").read_text())
pipeline = jaeger_config["service"]["pipelines"]["traces"]
assert pipeline["receivers"] == ["otlp"], pipeline
assert set(jaeger_config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
backends = jaeger_config["extensions"]["jaeger_storage"]["backends"]
assert all("memory" in b for b in backends.values()), backends
for key, default in (("QUERY_HTTP", "16686"), ("OTLP_GRPC", "4317"), ("OTLP_HTTP", "4318"), ("HEALTH", "13133")):
    assert f"JAEGER_{key}_PORT:-{default}" in (root / "deploy/jaeger/config.yaml").read_text(), key

docs = list(yaml.safe_load_all((root / "deploy/k8s/memento.yaml").read_text()))
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "Secret", "Service", "Service", "StatefulSet"], kinds
policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
daemon = next(d for d in docs if d["kind"] == "Deployment")
mcp = next(d for d in docs if d["kind"] == "StatefulSet")
assert policy["spec"]["podSelector"]["matchLabels"] == mcp["spec"]["template"]["metadata"]["labels"], policy
sources = policy["spec"]["ingress"][0]["from"]
assert sources == [{"podSelector": {"matchLabels": daemon["spec"]["template"]["metadata"]["labels"]}}], sources
assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
# Compose ships no default token: start-up refuses placeholders, so compose demands real ones.
for name in ("mcp-server", "memento"):
    token = services[name]["environment"]["MEMENTO_MCP_TOKEN"]
    assert token.startswith("${MEMENTO_MCP_TOKEN:?"), token
for doc in docs:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        probes = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
        assert "/healthz" in probes, probes
        assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
secret = next(d for d in docs if d["kind"] == "Secret")
assert "AZURE_OPENAI_API_KEY" in secret["stringData"]
# Several daemons: deploy/scale/docker-compose.yml.
scale = yaml.safe_load((root / "deploy/scale/docker-compose.yml").read_text())["services"]
assert set(scale) >= {"postgres", "redis", "mcp-server", "memento", "nginx", "mock-azure"}, scale
assert "../nginx/memento.conf:/etc/nginx/conf.d/default.conf:ro" in scale["nginx"]["volumes"]
assert scale["memento"]["deploy"]["replicas"] >= 2
daemon_env = scale["memento"]["environment"]
assert daemon_env["MEMENTO_LIMITS__BACKEND"] == "redis", daemon_env
assert daemon_env["MEMENTO_STORAGE__BACKEND"] == "postgres", daemon_env
assert daemon_env["MEMENTO_LIMITS__REDIS_URL"].startswith("redis://redis:"), daemon_env
assert scale["mcp-server"]["environment"]["MEMENTO_STORAGE__BACKEND"] == "postgres"
assert "hash $memento_user consistent;" in (root / "deploy/nginx/memento.conf").read_text()
print("ok")
