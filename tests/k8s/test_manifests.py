"""The Kubernetes manifests render, match the API of the targeted Kubernetes version, and run the
consumer the way the restricted Pod Security Standard and the consumer's contract require.

Both variants are checked: the base (CPU HPA) and the base with the KEDA component, the way
infra/create.sh combines them in an overlay that sets the real settings.
"""

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBERNETES_VERSION = "1.33.0"  # EKS
NAMESPACE = "image-pipeline"
APP = "imgpipe-consumer"
HEALTH_PORT = 8080
MIN_GRACE_SECONDS = 90  # one 20 s long poll + the slowest allowed image + margin
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication"}  # KEDA CRDs: no schema in the package
OVERLAY_REGION = "eu-west-1"
OVERLAY_QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/imgpipe-thumbnails"


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: these tests render k8s/ with `kubectl kustomize`. Install the "
            "kubectl client (v1.27 or later, it bundles kustomize v5), e.g. the apt package "
            "`kubectl` from the Kubernetes or Google Cloud repository."
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def keda(tmp_path_factory) -> list[dict]:
    """The base plus the KEDA component, in an overlay like the one infra/create.sh writes."""
    overlay = tmp_path_factory.mktemp("overlay")
    relative = Path(os.path.relpath(K8S, overlay))  # kustomize refuses absolute paths
    overlay.joinpath("kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative)],
                "components": [str(relative / "keda")],
                "images": [{"name": APP, "newName": f"example.invalid/{APP}", "newTag": "v1"}],
                "configMapGenerator": [
                    {
                        "name": "imgpipe-config",
                        "behavior": "merge",
                        "literals": [
                            f"AWS_REGION={OVERLAY_REGION}",
                            f"QUEUE_URL={OVERLAY_QUEUE_URL}",
                            "BUCKET_NAME=imgpipe-123456789012-eu-west-1",
                        ],
                    }
                ],
            }
        )
    )
    return kustomize(overlay)


@pytest.fixture(params=["base", "keda"])
def rendered(request) -> list[dict]:
    return request.getfixturevalue(request.param)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def containers(objects: list[dict]) -> list[dict]:
    spec = pod_spec(objects)
    return spec.get("initContainers", []) + spec["containers"]


def consumer_container(objects: list[dict]) -> dict:
    (container,) = pod_spec(objects)["containers"]
    return container


def config_map(objects: list[dict]) -> dict:
    return one(objects, "ConfigMap")


def test_every_object_matches_the_kubernetes_api_schema(rendered):
    for obj in rendered:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        # strict: an unknown (misspelt) field fails too
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_objects_carry_the_names_the_other_parts_rely_on(base):
    assert one(base, "Namespace")["metadata"]["name"] == NAMESPACE
    assert one(base, "ServiceAccount")["metadata"]["name"] == APP
    assert one(base, "Deployment")["metadata"]["name"] == APP
    assert config_map(base)["metadata"]["name"].startswith("imgpipe-config-")
    for obj in base:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "imgpipe"
    container = consumer_container(base)
    assert container["image"] == APP
    assert {"name": "http", "containerPort": HEALTH_PORT} in container["ports"]
    assert pod_spec(base)["serviceAccountName"] == APP


def test_config_map_has_every_consumer_setting(base):
    data = config_map(base)["data"]
    for name in ("BUCKET_NAME", "QUEUE_URL", "AWS_REGION", "THUMBNAIL_SIZE", "WORKERS"):
        assert name in data
    # Left empty on purpose: the consumer refuses to start until the overlay sets them.
    assert data["BUCKET_NAME"] == data["QUEUE_URL"] == ""
    assert data["HEALTH_PORT"] == str(HEALTH_PORT)


def test_namespace_enforces_the_restricted_pod_security_standard(base):
    labels = one(base, "Namespace")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_every_container_runs_restricted(rendered):
    pod = pod_spec(rendered)
    pod_context = pod.get("securityContext", {})
    for container in containers(rendered):
        name = container["name"]
        # A container's own setting wins over the pod's.
        context = pod_context | container.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, name
        assert context.get("runAsUser") == 10001, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
        assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert not context.get("privileged"), name
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_every_container_has_requests_and_limits(rendered):
    for container in containers(rendered):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) >= {"cpu", "memory"}, (container["name"], bound)


def test_probes_ask_the_health_endpoints_on_the_health_port(rendered):
    container = consumer_container(rendered)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == HEALTH_PORT


def test_tmp_is_the_only_writable_path_and_an_empty_dir(rendered):
    pod = pod_spec(rendered)
    mounts = {m["mountPath"]: m["name"] for m in consumer_container(rendered)["volumeMounts"]}
    assert set(mounts) == {"/tmp"}
    (volume,) = [v for v in pod["volumes"] if v["name"] == mounts["/tmp"]]
    assert "emptyDir" in volume


def test_pods_have_time_to_finish_their_images_on_sigterm(rendered):
    assert pod_spec(rendered)["terminationGracePeriodSeconds"] >= MIN_GRACE_SECONDS


def test_settings_reach_the_container(rendered):
    env_from = consumer_container(rendered)["envFrom"]
    assert {"configMapRef": {"name": config_map(rendered)["metadata"]["name"]}} in env_from
    # demo-only access keys: the pod must start without the Secret too
    assert {"secretRef": {"name": "imgpipe-aws-keys", "optional": True}} in env_from


def test_service_and_pdb_select_the_consumer_pods(rendered):
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(rendered, "Service")
    pdb = one(rendered, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in consumer_container(rendered)["ports"]}
    assert all(p["targetPort"] in container_ports for p in service["spec"]["ports"])
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(HEALTH_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_pdb_keeps_one_pod_and_still_lets_a_node_drain(rendered):
    min_available = one(rendered, "PodDisruptionBudget")["spec"]["minAvailable"]
    assert min_available == 1
    assert one(rendered, "Deployment")["spec"]["replicas"] > min_available


def test_base_scales_the_deployment_on_cpu(base):
    hpa = one(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP}
    assert hpa["spec"]["scaleTargetRef"] == target
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_keda_variant_scales_on_the_queue_instead_of_the_hpa(keda):
    assert of_kind(keda, "HorizontalPodAutoscaler") == []  # KEDA makes its own
    scaled = one(keda, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == NAMESPACE
    assert scaled["spec"]["scaleTargetRef"]["name"] == APP
    assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (2, 10)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values())  # KEDA metadata is string-only
    assert metadata["queueLength"] == "10"
    # The queue URL comes from the container's environment, i.e. the overlay's ConfigMap.
    assert metadata["queueURLFromEnv"] == "QUEUE_URL"
    assert config_map(keda)["data"]["QUEUE_URL"] == OVERLAY_QUEUE_URL
    assert metadata["awsRegion"] == OVERLAY_REGION == config_map(keda)["data"]["AWS_REGION"]


def test_keda_trigger_authenticates_with_a_pod_identity(keda):
    (trigger,) = one(keda, "ScaledObject")["spec"]["triggers"]
    auth = one(keda, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["metadata"]["namespace"] == NAMESPACE
    assert auth["spec"]["podIdentity"]["provider"] == "aws"
