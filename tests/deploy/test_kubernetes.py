"""The Kubernetes manifests (deploy/kubernetes/): every resource validates against the
schemas of a pinned Kubernetes version (kubernetes-validate, strict: unknown fields are
errors), the ConfigMap's config passes `veloxy check`, and the pieces agree with each other
and with the config (ports, probes on /healthz, the drain timeline, selectors, the headless
Service the upstream group resolves, --watch on a directory mount)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from veloxy.config.values import parse_duration
from veloxy.loadgen.settings import parse_start_time

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (the test extra)")

#: The Kubernetes version the manifests are written for and checked against.
KUBERNETES_VERSION = "1.33.0"
MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [doc for _, doc in documents()
               if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def proxy_config() -> dict[str, Any]:
    return yaml.safe_load(find("ConfigMap", "veloxy-config")["data"]["veloxy.yaml"])


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                if c["name"] == name)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("name, doc", documents(), ids=[n for n, _ in documents()])
def test_validates_against_the_pinned_schemas(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = yaml.safe_load(yaml.safe_dump(find("Deployment", "veloxy")))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    unknown = yaml.safe_load(yaml.safe_dump(find("Deployment", "veloxy")))
    container(unknown, "veloxy")["readinesProbe"] = {}  # a typo strict mode must catch
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, KUBERNETES_VERSION, strict=True)


@pytest.mark.process
def test_configmap_config_passes_check(tmp_path: Path) -> None:
    path = tmp_path / "veloxy.yaml"
    path.write_text(find("ConfigMap", "veloxy-config")["data"]["veloxy.yaml"])
    out = subprocess.run([sys.executable, "-m", "veloxy", "check", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_deployment_drains_before_sigterm_and_outlasts_shutdown_timeout() -> None:
    deployment = find("Deployment", "veloxy")
    pod = deployment["spec"]["template"]["spec"]
    proxy = container(deployment, "veloxy")
    config = proxy_config()
    pre_stop = proxy["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain_s = float(pre_stop[1])
    assert drain_s >= 5, "endpoint removal needs a few seconds to spread"
    delay_s = parse_duration(config["limits"].get("shutdown_delay", 0))
    shutdown_s = parse_duration(config["limits"]["shutdown_timeout"])
    # The grace period counts from the start of preStop; SIGTERM comes after it, then the
    # delay (still serving), then at most shutdown_timeout.
    assert pod["terminationGracePeriodSeconds"] > drain_s + delay_s + shutdown_s + 5
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_probes_metrics_and_ports_match_the_config() -> None:
    deployment = find("Deployment", "veloxy")
    proxy = container(deployment, "veloxy")
    config = proxy_config()
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports["admin"] == port_of(config["admin"])
    assert ports["http"] == port_of(config["listen"][0])
    for probe in ("readinessProbe", "livenessProbe"):
        get = proxy[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] == "admin"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["admin"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert proxy["resources"]["requests"] and proxy["resources"]["limits"]
    service = find("Service", "veloxy")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # admin not exposed


def test_config_is_mounted_as_a_directory_and_watched() -> None:
    deployment = find("Deployment", "veloxy")
    proxy = container(deployment, "veloxy")
    assert proxy["args"] == ["serve", "--config", "/etc/veloxy/veloxy.yaml", "--watch"]
    mount = next(m for m in proxy["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/veloxy" and "subPath" not in mount  # updates arrive
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "config")
    assert volume["configMap"]["name"] == "veloxy-config"


def test_selectors_agree() -> None:
    labels = find("Deployment", "veloxy")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = find(kind, "veloxy")["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    hpa = find("HorizontalPodAutoscaler", "veloxy")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": "veloxy"}
    assert hpa["minReplicas"] >= 2  # the PDB's one-at-a-time leaves capacity serving


def test_upstream_group_resolves_the_headless_service() -> None:
    headless = find("Service", "app")
    assert headless["spec"]["clusterIP"] == "None"
    group = proxy_config()["upstreams"]["app"]
    port = headless["spec"]["ports"][0]["port"]
    assert group["servers"] == [f"http://app:{port}"]
    assert parse_duration(group["dns_ttl"]) > 0  # resolved again: pods come and go
    app = find("Deployment", "app")
    assert headless["spec"]["selector"].items() <= \
        app["spec"]["template"]["metadata"]["labels"].items()


def test_loadgen_job_runs_indexed_generators_with_one_start() -> None:
    job = find("Job", "veloxy-loadgen")["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["parallelism"] == job["completions"] >= 2
    bench = container({"spec": {"template": job["template"]}}, "bench")
    env = {e["name"]: e["value"] for e in bench["env"]}
    script = bench["args"][0]
    argv = shlex.split(script.split(">")[0].replace("$TARGET", env["TARGET"])
                       .replace("$START_AT", env["START_AT"]))
    assert argv[:3] == ["veloxy", "bench", "http://veloxy/"]
    assert argv[argv.index("--start-at") + 1] == env["START_AT"]
    assert "--json" in argv and "cat /tmp/result.json" in script
    # The start placeholder is a valid --start-at form (sed replaces it at apply time).
    assert parse_start_time(env["START_AT"], now=2e9) == 1767225600.0
