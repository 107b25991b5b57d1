"""The Kubernetes manifests: kustomize renders them, kubernetes-validate --strict accepts them (offline,
bundled schemas), and they carry what a cluster needs from this service."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service.settings import BY_NAME

yaml = pytest.importorskip("yaml", reason="PyYAML reads the manifests")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def documents(*files: Path) -> list[dict]:
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def base() -> dict[tuple[str, str], dict]:
    docs = documents(*(K8S / "base").glob("*.yaml"))
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs if "metadata" in doc}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: kustomize cannot render the manifests")
@pytest.mark.skipif(not VALIDATE.exists(), reason="kubernetes-validate is in the dev extra")
@pytest.mark.parametrize("target", ["deploy/k8s", "deploy/k8s/overlays/redis-demo"])
def test_kustomize_renders_and_kubernetes_validate_strict_accepts(tmp_path, target):
    rendered = subprocess.run([KUBECTL, "kustomize", str(ROOT / target)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.stdout)
    checked = subprocess.run([str(VALIDATE), "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered.stdout) if doc}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds


def test_web_deployment_probes_drain_and_resources():
    web = base()[("Deployment", "toxiserve-web")]
    pod, main = web["spec"]["template"]["spec"], container(web)
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # time to load and warm the models
    pause = int(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = BY_NAME["GRACEFUL_TIMEOUT"].default
    assert pod["terminationGracePeriodSeconds"] > graceful + pause
    assert {"cpu", "memory"} <= set(main["resources"]["requests"]) and {"cpu", "memory"} <= set(
        main["resources"]["limits"]
    )


@pytest.mark.parametrize("name", ["toxiserve-web", "toxiserve-grpc"])
def test_pods_run_locked_down(name):
    deployment = base()[("Deployment", name)]
    pod, main = deployment["spec"]["template"]["spec"], container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True and isinstance(pod["securityContext"]["runAsUser"], int)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert "/var/lib/toxiserve" in mounts  # the one writable place (the image's volume)


def test_grpc_deployment_uses_grpc_health_probes():
    grpc = container(base()[("Deployment", "toxiserve-grpc")])
    assert grpc["readinessProbe"]["grpc"] == {"port": 50051, "service": "toxiserve.v1.Toxicity"}
    assert "grpc" in grpc["livenessProbe"] and "grpc" in grpc["startupProbe"]


def test_api_keys_come_from_a_secret_as_digests_never_a_configmap():
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (config,) = kustomization["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in config["literals"])
    assert "TOXISERVE_API_KEYS" not in settings
    keys_file = settings["TOXISERVE_API_KEYS_FILE"]
    (secret,) = kustomization["secretGenerator"]
    web = container(base()[("Deployment", "toxiserve-web")])
    mount = next(m for m in web["volumeMounts"] if keys_file.startswith(m["mountPath"]))
    volumes = base()[("Deployment", "toxiserve-web")]["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == mount["name"])["secret"]["secretName"] == secret["name"]
    lines = [line for line in (K8S / "base" / secret["files"][0]).read_text().splitlines() if not line.startswith("#")]
    assert all(len(line.split(":", 1)[1]) == 64 for line in lines)  # sha256 digests, no plain keys


def test_autoscaling_and_disruption_budget():
    resources = base()
    hpa = resources[("HorizontalPodAutoscaler", "toxiserve-web")]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert resources[("PodDisruptionBudget", "toxiserve-web")]["spec"]["minAvailable"] >= 1
