"""Every deployment manifest in infra/ parses and satisfies its schema or required fields.

- Ray cluster launcher YAML: validated with jsonschema against the schema that ships inside the
  installed ``ray`` package (``ray/autoscaler/ray-schema.json``), plus our own placement rules.
- KubeRay RayCluster / RayJob: apiVersion, kind and the spec fields the operator requires.
- compose file: the three services, pinned images, environment, PostgreSQL-backed MLflow.
- Dockerfile: the image installs this project from its pyproject.toml.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
IMAGE = "registry.example.com/nasforge/worker:0.1.0"


def _yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((INFRA / name).read_text())
    assert isinstance(data, dict), f"{name} must be a YAML mapping"
    return data


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- Ray cluster launcher --------------------------------------------------------------------

def test_cluster_launcher_matches_rays_own_schema() -> None:
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = _yaml("ray-cluster.yaml")
    jsonschema.validate(config, schema)  # raises with the failing path


def test_cluster_launcher_schema_check_is_not_vacuous() -> None:
    """The same schema refuses a broken copy (a non-integer resource, a missing provider)."""
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = _yaml("ray-cluster.yaml")
    broken = json.loads(json.dumps(config))
    broken["available_node_types"]["gpu_t4"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    del broken["provider"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cluster_launcher_cpu_head_gpu_workers_with_device_classes() -> None:
    config = _yaml("ray-cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "evaluations must not land on the head"
    assert "GPU" not in head["resources"]
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert len(gpu_types) >= 2, "at least two GPU device classes"
    for name, t in types.items():
        if name == config["head_node_type"]:
            continue
        classes = [k for k in t["resources"] if k.startswith("device:")]
        assert len(classes) == 1, f"{name}: one device:CLASS resource"
        if name in gpu_types:
            assert t["resources"][classes[0]] == t["resources"]["GPU"], f"{name}: one device:CLASS per GPU"
        assert t.get("max_workers", 0) >= t.get("min_workers", 0)
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"] + 10


def test_cluster_launcher_keeps_token_auth_on() -> None:
    config = _yaml("ray-cluster.yaml")
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd, cmd
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    mounts = config["file_mounts"]
    token_path = next(o.split("=", 1)[1] for o in config["docker"]["run_options"] if "RAY_AUTH_TOKEN_PATH=" in o)
    assert token_path in mounts and mounts[token_path].endswith(".ray/auth_token")
    assert config["docker"]["image"] == IMAGE


# ---- KubeRay ---------------------------------------------------------------------------------

def _check_pod_template(template: dict[str, Any], where: str) -> list[dict[str, Any]]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: at least one container"
    for c in containers:
        assert c.get("name") and c.get("image") == IMAGE, f"{where}: container name and image"
        for e in c.get("env", []):
            assert "name" in e and ("value" in e or "valueFrom" in e), f"{where}: env entry {e}"
    mounted = {m["name"] for c in containers for m in c.get("volumeMounts", [])}
    declared = {v["name"] for v in template["spec"].get("volumes", [])}
    assert mounted <= declared, f"{where}: volumeMounts without volumes: {mounted - declared}"
    return containers


def _check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    assert spec["rayVersion"] == "2.60.0"
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth stays on"
    head = spec["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    assert head["rayStartParams"].get("num-cpus") == "0"
    containers = _check_pod_template(head["template"], f"{where}.headGroupSpec")
    ports = {p["containerPort"] for c in containers for p in c.get("ports", [])}
    assert {6379, 8265} <= ports, "GCS and the Jobs API (dashboard) ports"
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        name = g["groupName"]
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], name
        containers = _check_pod_template(g["template"], f"{where}.{name}")
        raw = g["rayStartParams"]["resources"]
        # KubeRay pastes the value into `ray start --resources=...` in a shell: quoted JSON
        assert raw.startswith('"') and raw.endswith('"'), "KubeRay wants the JSON quoted for the shell"
        resources = json.loads(shlex.split(raw)[0])
        assert [k for k in resources if k.startswith("device:")], f"{name}: a device:CLASS resource"
        gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in containers]
        assert all(gpus), f"{name}: GPU workers ask Kubernetes for nvidia.com/gpu"


def test_kuberay_raycluster() -> None:
    doc = _yaml("kuberay/raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    _check_ray_cluster_spec(doc["spec"], "RayCluster")
    head_env = {e["name"]: e for e in doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert head_env["NASFORGE_STORE_URL"]["value"].startswith("postgresql+psycopg2://")
    assert "valueFrom" in head_env["NASFORGE_DB_PASSWORD"], "the password comes from a Secret"


def test_kuberay_rayjob() -> None:
    doc = _yaml("kuberay/rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["nasforge", "submit"] and "--address" in argv
    assert argv[argv.index("--address") + 1] == "auto", "the entrypoint joins the job's own cluster"
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert set(env) <= {"env_vars", "working_dir", "py_modules", "pip", "conda", "excludes"}
    _check_ray_cluster_spec(spec["rayClusterSpec"], "RayJob.rayClusterSpec")


# ---- compose ---------------------------------------------------------------------------------

def test_compose_mlflow_postgres_minio() -> None:
    doc = _yaml("compose.yaml")
    services = doc["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pinned image tag"
        for value in (svc.get("environment") or {}).values():
            if "PASSWORD" in str(value) or "SECRET" in str(value):
                assert str(value).startswith("${"), f"{name}: secrets come from the environment"
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(pg["environment"])
    assert "healthcheck" in pg
    minio_env = services["minio"]["environment"]
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= set(minio_env)
    mlflow = services["mlflow"]
    cmd = " ".join(mlflow["command"])
    backend = re.search(r"--backend-store-uri\s+\"?(\S+?)\"?\s", cmd)
    assert backend and backend.group(1).startswith("postgresql+psycopg2://"), "MLflow on PostgreSQL"
    db = backend.group(1).rsplit("/", 1)[1]
    init_sql = (INFRA / "postgres-init.sql").read_text()
    assert re.search(rf"CREATE DATABASE {db}\b", init_sql), f"database {db} is created at first start"
    assert "--artifacts-destination s3://" in cmd and "--serve-artifacts" in cmd
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["build"]["dockerfile"] == "infra/Dockerfile" and mlflow["image"] == IMAGE
    bucket = re.search(r"s3://([a-z0-9-]+)", cmd).group(1)  # type: ignore[union-attr]
    assert bucket in " ".join(services["minio-init"]["entrypoint"]), "the artifact bucket is created"


# ---- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_installs_the_project_from_pyproject() -> None:
    text = (INFRA / "Dockerfile").read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("FROM python:3.11"), "Python matches pyproject's requires-python"
    copies = [ln for ln in lines if ln.startswith("COPY")]
    assert any("pyproject.toml" in c for c in copies) and any("nasforge" in c.split()[1:-1] for c in copies)
    extras_default = re.search(r"ARG NASFORGE_EXTRAS=(\S+)", text).group(1)  # type: ignore[union-attr]
    run = " ".join(ln for ln in lines if ln.startswith("RUN"))
    assert 'pip install ".[${NASFORGE_EXTRAS}]"' in run, "the project itself is installed, with its extras"
    optional = _pyproject()["project"]["optional-dependencies"]
    for extra in extras_default.split(","):
        assert extra in optional, f"extra {extra!r} is not in pyproject.toml"
    assert any(d.startswith("psycopg2") for d in optional["postgres"])
    deps = " ".join(_pyproject()["project"]["dependencies"])
    assert "mlflow" in deps and "ray[" in deps, "MLflow server and Ray come from the project's dependencies"
    # the dashboard / Jobs API and S3 artifacts come from pyproject's `cluster` extra, in the image
    assert "cluster" in extras_default.split(",")
    cluster = " ".join(optional["cluster"])
    assert "ray[default]" in cluster and "boto3" in cluster
    # every pip install in the image installs the project: nothing is added beside pyproject
    installs = re.findall(r"pip install ([^;&]+)", run)
    assert installs and all(i.split()[-1] in ('".[${NASFORGE_EXTRAS}]"', "pip") for i in installs), installs
    assert "ray.dashboard.optional_deps" in run, "the build fails if the dashboard could not start"
