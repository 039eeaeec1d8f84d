"""Checks deploy/helm/memento: the output of `helm template` when helm is available, else the
chart's files structurally (Chart.yaml and values.yaml parse; the templates declare what the
chart promises).

Usage: check_helm.py REPO_ROOT RENDERED.yaml
       check_helm.py REPO_ROOT --no-helm
"""

import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1])
chart_dir = root / "deploy/helm/memento"
chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
assert chart["apiVersion"] == "v2" and chart["name"] == "memento", chart
values = yaml.safe_load((chart_dir / "values.yaml").read_text())
assert values["daemon"]["hpa"]["enabled"] is True, values["daemon"]
assert set(values) >= {"postgres", "redis", "limits", "ingress", "mcpServer", "daemon"}, values.keys()
assert values["ingress"]["userHashBy"] == "$memento_user", values["ingress"]

if sys.argv[2] == "--no-helm":
    text = "\n".join(p.read_text() for p in sorted((chart_dir / "templates").glob("*.yaml")))
    for kind in ("Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "Ingress", "Service", "Secret"):
        assert f"kind: {kind}" in text, kind
    assert "nginx.ingress.kubernetes.io/upstream-hash-by" in text
    print("ok (structural: helm is not available)")
    sys.exit(0)

docs = [d for d in yaml.safe_load_all(Path(sys.argv[2]).read_text()) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
assert sorted(by_kind) == sorted(
    ["Deployment", "HorizontalPodAutoscaler", "Ingress", "NetworkPolicy", "Secret", "Service"]
), sorted(by_kind)
deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind["Deployment"]}
daemon, mcp = deployments["daemon"], deployments["mcp-server"]
daemon_labels = daemon["spec"]["template"]["metadata"]["labels"]
mcp_labels = mcp["spec"]["template"]["metadata"]["labels"]
assert daemon_labels != mcp_labels

# The HPA owns the daemon's replica count.
hpa = by_kind["HorizontalPodAutoscaler"][0]
assert hpa["spec"]["scaleTargetRef"]["name"] == daemon["metadata"]["name"], hpa
assert "replicas" not in daemon["spec"], daemon["spec"]
assert hpa["spec"]["minReplicas"] >= 2, hpa

# Only daemons reach the memory server.
policy = by_kind["NetworkPolicy"][0]
assert policy["spec"]["podSelector"]["matchLabels"] == mcp_labels, policy
ingress_rule = policy["spec"]["ingress"][0]
assert ingress_rule["from"] == [{"podSelector": {"matchLabels": daemon_labels}}], ingress_rule
assert ingress_rule["ports"] == [{"protocol": "TCP", "port": 8000}], ingress_rule

# Hashing on the user at the ingress.
ingress = by_kind["Ingress"][0]
assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$memento_user"
backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
assert services[backend["name"]]["spec"]["selector"] == daemon_labels, backend

# External PostgreSQL and Redis: both services on PostgreSQL, the daemons' limits on Redis.
secret = by_kind["Secret"][0]["stringData"]
assert secret["MEMENTO_STORAGE__POSTGRES_URL"] == "postgres://memento:pw@db.example:5432/memento", secret
assert secret["MEMENTO_LIMITS__REDIS_URL"] == "redis://cache.example:6379/0", secret
assert len(secret["MEMENTO_CONVERSATION__TRACE_USER_KEY"]) >= 32, "one pseudonym key for all daemons"


def env(deployment):
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}, container


daemon_env, daemon_container = env(daemon)
assert daemon_env["MEMENTO_STORAGE__BACKEND"] == "postgres", daemon_env
assert daemon_env["MEMENTO_LIMITS__BACKEND"] == "redis", daemon_env
assert daemon_container["envFrom"][0]["secretRef"]["name"] == by_kind["Secret"][0]["metadata"]["name"]
mcp_url = daemon_container["args"][daemon_container["args"].index("--mcp-url") + 1]
mcp_service = next(s for s in by_kind["Service"] if s["spec"]["selector"] == mcp_labels)
assert mcp_url == f"http://{mcp_service['metadata']['name']}:8000/mcp", mcp_url
mcp_env, _ = env(mcp)
assert mcp_env["MEMENTO_STORAGE__BACKEND"] == "postgres", mcp_env
for deployment in (daemon, mcp):
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] in ("/readyz", "/healthz")
print("ok (helm template)")
