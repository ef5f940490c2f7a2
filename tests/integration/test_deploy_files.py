"""deploy/: the Dockerfile, the compose file and the Helm chart, checked as far as this machine allows.

- the image's health check runs for real against a real server;
- the compose file is validated against the Compose Specification schema (and by
  ``docker compose config`` / ``docker-compose config`` where one is installed);
- the chart is rendered (real ``helm template`` where installed, else
  tests/helm_lite.py) and every manifest is validated against the Kubernetes
  OpenAPI schemas (kubernetes-validate, strict: unknown fields fail).

Not run here: building the image and starting the compose stack (no Docker
daemon), installing the chart (no cluster).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helm_lite import manifests

from runwatch.service.alerts import AlertsConfig
from runwatch.service.tokens import TokenFile

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "runwatch"
K8S_VERSION = "1.30.0"


# -- Dockerfile and its health check -----------------------------------------------------------


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_is_slim_non_root_installs_the_wheel_and_checks_health():
    text = dockerfile()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms and all(re.fullmatch(r"python:3\.\d+-slim(-\w+)?", f) for f in froms)
    assert re.search(r"pip wheel .*--no-deps", text) and "runwatch-*.whl)[kafka,postgresql]" in text
    assert "--constraint /tmp/constraints.txt" in text
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*runwatch\.service\.healthcheck", text, re.MULTILINE)
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):  # every path it copies exists
        assert (ROOT / src).exists(), src
    # what the wheel is built from covers every package pyproject lists
    pyproject = (ROOT / "pyproject.toml").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.MULTILINE))
    for directory in set(re.findall(r'= "(\w+)(?:/[\w/]+)?"', pyproject.split("package-dir")[1].split("\n")[0])):
        assert directory in copied, f"the image build does not COPY {directory}/"


def test_healthcheck_command_against_a_real_server(server):
    srv, _ = server
    cmd = [sys.executable, "-m", "runwatch.service.healthcheck", "--target", srv.target, "--timeout", "5"]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
    ingest = subprocess.run(
        [*cmd, "--service", "runwatch.v1.IngestService"], capture_output=True, text=True, timeout=60, check=False
    )
    assert ingest.returncode == 0
    unknown = subprocess.run(
        [*cmd, "--service", "no.such.Service"], capture_output=True, text=True, timeout=60, check=False
    )
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
    srv.stop()
    down = subprocess.run(cmd[:-2] + ["--timeout", "1"], capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


# -- docker compose ------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_schema():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema comes with the dev extra")
    schema = json.loads((ROOT / "tests" / "fixtures" / "deploy" / "compose_spec.json").read_text())
    # The file says draft 2019-09 under a non-canonical URL: name the draft instead of guessing.
    jsonschema.Draft201909Validator(schema).validate(compose())


def test_compose_has_kraft_kafka_two_runwatch_instances_and_prometheus():
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in env
    assert not any("ZOOKEEPER" in k for k in env) and "zookeeper" not in services
    runwatch = [name for name, s in services.items() if s.get("image", "").startswith("runwatch")]
    assert len(runwatch) == 2
    http_ports = set()
    for name in runwatch:
        s = services[name]
        e = s["environment"]
        assert e["RUNWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert s["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert "runwatch.service.healthcheck" in " ".join(s["healthcheck"]["test"])
        assert s["build"]["dockerfile"] == "deploy/Dockerfile" and (DEPLOY / s["build"]["context"]).resolve() == ROOT
        http_ports.add(e["RUNWATCH_HTTP_PORT"])
    assert len(http_ports) == 1
    prometheus = services["prometheus"]
    mount = next(v for v in prometheus["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((DEPLOY / mount.split(":")[0]).read_text())
    targets = config["scrape_configs"][0]["static_configs"][0]["targets"]
    port = next(iter(http_ports))
    assert sorted(targets) == sorted(f"{name}:{port}" for name in runwatch)
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_compose_config_with_docker_compose_when_installed():
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode != 0:
            continue
        done = subprocess.run(
            [*cmd, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return
    pytest.skip("neither `docker compose` nor `docker-compose` is installed (the schema test still ran)")


# -- Helm chart ----------------------------------------------------------------------------------

FULL = {
    "replicaCount": 2,
    "tls": {"secretName": "runwatch-tls", "serverName": "runwatch.ml.svc"},
    "allowInsecure": False,
    "kafka": {"bootstrap": "kafka:9092"},
    "persistence": {"enabled": True, "storageClass": "fast"},
    "extraEnv": [{"name": "RUNWATCH_AUTO_CREATE_RUNS", "value": "true"}],
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "alerts": {
        "enabled": True,
        "config": json.loads((DEPLOY / "alerts.example.json").read_text()),
        "secretEnv": {
            "RUNWATCH_OPS_WEBHOOK_URL": "https://hooks.example.com/ops",
            "RUNWATCH_OPS_WEBHOOK_AUTH": "Bearer x",
            "RUNWATCH_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
            "SMTP_PASSWORD": "hunter2",
        },
    },
}


def rendered(values: dict | None = None) -> list[dict]:
    if shutil.which("helm"):
        args = ["helm", "template", "rw", str(CHART)]
        if values:
            args += ["-f", "-"]
        done = subprocess.run(
            args, input=yaml.safe_dump(values or {}), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d]
    return manifests(CHART, values)


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "tls-alerts-kafka-persistence"])
def test_chart_renders_manifests_valid_against_the_kubernetes_schemas(values):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the dev extra")
    docs = rendered(values)
    for doc in docs:
        kv.validate(doc, K8S_VERSION, strict=True)
    kinds = by_kind(docs)
    expected = {"Deployment", "Service", "Secret"} | ({"ConfigMap", "PersistentVolumeClaim"} if values else set())
    assert set(kinds) == expected


def container(docs: list[dict]) -> dict:
    (deployment,) = by_kind(docs)["Deployment"]
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_default_chart_uses_native_grpc_probes_and_a_token_secret():
    docs = rendered()
    c = container(docs)
    assert c["livenessProbe"]["grpc"] == {"port": 50051, "service": "runwatch.v1.RunService"}
    assert c["readinessProbe"]["grpc"] == {"port": 50051}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["RUNWATCH_AUTH_TOKENS"] == "/etc/runwatch/tokens/tokens.json" and env["RUNWATCH_HTTP_PORT"] == "8080"
    (secret,) = by_kind(docs)["Secret"]
    TokenFile.model_validate_json(secret["stringData"]["tokens.json"])  # the server would read it
    pod = by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    (service,) = by_kind(docs)["Service"]
    assert [p["name"] for p in service["spec"]["ports"]] == ["grpc", "http"]


def test_full_chart_mounts_alerts_tls_and_uses_exec_probes_with_tls(monkeypatch):
    docs = rendered(FULL)
    c = container(docs)
    probe = c["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "runwatch.service.healthcheck"] and "https://127.0.0.1:50051" in probe
    assert probe[probe.index("--server-name") + 1] == "runwatch.ml.svc"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["RUNWATCH_TLS_CERT"] == "/etc/runwatch/tls/tls.crt" and "RUNWATCH_ALLOW_INSECURE" not in env
    assert env["RUNWATCH_ALERTS_CONFIG"] == "/etc/runwatch/alerts/alerts.json"
    assert env["RUNWATCH_KAFKA_BOOTSTRAP"] == "kafka:9092" and env["RUNWATCH_AUTO_CREATE_RUNS"] == "true"
    (configmap,) = by_kind(docs)["ConfigMap"]
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs)["Secret"]}
    alerts_secret = secrets[c["envFrom"][0]["secretRef"]["name"]]
    # The mounted config is one the server accepts, given the secrets the chart passes as variables.
    for name, value in alerts_secret["stringData"].items():
        monkeypatch.setenv(name, value)
    config = AlertsConfig.model_validate_json(configmap["data"]["alerts.json"])
    assert {s.type for s in config.sinks.values()} == {"webhook", "slack", "smtp", "command"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/runwatch/alerts"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert volumes[mounts["/var/lib/runwatch/data"]]["persistentVolumeClaim"]["claimName"].endswith("-data")
    assert by_kind(docs)["Deployment"][0]["spec"]["strategy"]["type"] == "Recreate"


def test_every_chart_file_is_template_or_yaml_we_can_read():
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["apiVersion"] == "v2"
    assert isinstance(yaml.safe_load((CHART / "values.yaml").read_text()), dict)
    for template in (CHART / "templates").iterdir():
        assert template.suffix in (".yaml", ".tpl", ".txt"), template


def test_helm_lint_when_installed():
    if shutil.which("helm") is None:
        pytest.skip("helm is not installed: the chart was rendered by tests/helm_lite.py instead")
    done = subprocess.run(
        ["helm", "lint", str(CHART)], capture_output=True, text=True, timeout=120, env=os.environ, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
