"""The Kubernetes manifests: kustomize renders them, kubernetes-validate --strict accepts them (offline,
bundled schemas), and they carry what a cluster needs from this service."""

import hashlib
import json
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


def _kubectl_too_old() -> bool:
    """kubectl before 1.24 embeds a kustomize (< v4.5) that cannot build these files (Debian's
    kubernetes-client is 1.20)."""
    if KUBECTL is None:
        return False
    shown = subprocess.run([KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    try:
        minor = json.loads(shown.stdout)["clientVersion"]["minor"]
    except (ValueError, KeyError):
        return True
    return int("".join(ch for ch in minor if ch.isdigit()) or 0) < 24


KUBECTL_TOO_OLD = _kubectl_too_old()
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def documents(*files: Path) -> list[dict]:
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]


def base() -> dict[tuple[str, str], dict]:
    docs = documents(*(K8S / "base").glob("*.yaml"))
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs if "metadata" in doc}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def make_keys(tree: Path) -> dict[str, str]:
    """Run a copy's make-keys.sh; the keys it printed, by kind ("api", "admin")."""
    made = subprocess.run(
        ["bash", str(tree / "make-keys.sh")], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert made.returncode == 0, made.stderr
    return {line.split(" ", 1)[0]: line.rsplit(": ", 1)[1] for line in made.stdout.splitlines()}


def test_make_keys_writes_digests_once_and_prints_each_key_once(tmp_path):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.sha256"))
    keys = make_keys(tree)
    assert set(keys) == {"api", "admin"} and all(len(key) == 40 for key in keys.values())
    for kind, key in keys.items():
        written = (tree / "base" / "secrets" / f"{kind}-keys.sha256").read_text()
        assert written.split(":", 1)[1].strip() == hashlib.sha256(key.encode()).hexdigest() and key not in written
    assert make_keys(tree) == {}  # run again: both files kept, no new key


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: kustomize cannot render the manifests")
@pytest.mark.skipif(KUBECTL_TOO_OLD, reason="kubectl is older than 1.24: its kustomize cannot render these manifests")
@pytest.mark.skipif(not VALIDATE.exists(), reason="kubernetes-validate is in the dev extra")
@pytest.mark.parametrize("target", [".", "overlays/redis-demo"])
def test_kustomize_renders_and_kubernetes_validate_strict_accepts(tmp_path, target):
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.sha256"))
    missing = subprocess.run([KUBECTL, "kustomize", str(tree / target)], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "api-keys.sha256" in missing.stderr  # no keys: nothing renders
    keys = make_keys(tree)
    rendered = subprocess.run([KUBECTL, "kustomize", str(tree / target)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert not any(key in rendered.stdout for key in keys.values())  # digests only
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(rendered.stdout)
    checked = subprocess.run([str(VALIDATE), "--strict", str(manifest)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    kinds = {doc["kind"] for doc in objects}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} <= kinds
    (secret,) = [doc for doc in objects if doc["kind"] == "Secret"]
    assert set(secret["data"]) == {"api-keys.sha256", "admin-keys.sha256"}


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


def settings() -> dict[str, str]:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (config,) = kustomization["configMapGenerator"]
    return dict(literal.split("=", 1) for literal in config["literals"])


@pytest.mark.parametrize("name", ["toxiserve-web", "toxiserve-grpc"])
def test_api_and_admin_keys_come_from_a_secret_as_digests_never_a_configmap(name):
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "TOXISERVE_API_KEYS" not in settings() and "TOXISERVE_ADMIN_KEYS" not in settings()
    (secret,) = kustomization["secretGenerator"]
    deployment = base()[("Deployment", name)]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    for variable, file in (
        ("TOXISERVE_API_KEYS_FILE", "api-keys.sha256"),
        ("TOXISERVE_ADMIN_KEYS_FILE", "admin-keys.sha256"),
    ):
        path = settings()[variable]  # the admin API answers nobody without the admin keys
        mount = next(m for m in container(deployment)["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
        assert next(v for v in volumes if v["name"] == mount["name"])["secret"]["secretName"] == secret["name"]
        assert f"secrets/{file}" in secret["files"] and path.endswith("/" + file)


def test_no_key_digest_is_committed():
    """The operator's files (make-keys.sh): a committed digest would go live with `kubectl apply -k`."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: which files are committed is unknown")
    tracked = subprocess.run(["git", "ls-files", "deploy"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert not [path for path in tracked.stdout.splitlines() if path.endswith(".sha256")]


def test_grpc_metrics_are_exported_and_scraped():
    grpc = base()[("Deployment", "toxiserve-grpc")]
    port = int(settings()["TOXISERVE_GRPC_METRICS_PORT"])
    assert {"name": "metrics", "containerPort": port} in container(grpc)["ports"]
    for name, scraped in (("toxiserve-grpc", port), ("toxiserve-web", 8000)):
        annotations = base()[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == scraped


@pytest.mark.parametrize("name", ["toxiserve-web", "toxiserve-grpc"])
def test_autoscaling_and_disruption_budget(name):
    resources = base()
    hpa = resources[("HorizontalPodAutoscaler", name)]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["scaleTargetRef"]["name"] == name
    assert resources[("PodDisruptionBudget", name)]["spec"]["minAvailable"] >= 1


def test_the_deployments_run_the_images_build_sh_tags():
    built = (ROOT / "deploy" / "docker" / "build.sh").read_text()
    assert "tag=$target" in built and '[ "$target" = web ] && tag=serve' in built
    assert container(base()[("Deployment", "toxiserve-web")])["image"] == "toxiserve:serve"
    assert container(base()[("Deployment", "toxiserve-grpc")])["image"] == "toxiserve:grpc"
