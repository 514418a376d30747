"""deploy/k8s holds what issue 14 asks of it, checked on the rendered objects (no cluster needed):
`kubectl kustomize deploy/k8s` renders, every object passes kubernetes-validate's strict schema for
the newest Kubernetes it knows, and the objects agree with each other and with the gateway (probes,
drain arithmetic, non-root, read-only root, requests, the config the gateway loads, the keys it
reads, Redis where GATEWAY_REDIS_URL points).

kubectl is Debian's kubernetes-client or any other; `make test` installs Debian's when kubectl is
missing and it can (as root). Without kubectl these tests are skipped, loudly.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from gateway.config import load
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = ("!!! KUBECTL NOT INSTALLED: deploy/k8s was neither rendered nor validated "
              "(apt-get install kubernetes-client) !!!")

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    if KUBECTL is None:
        pytest.skip(NO_KUBECTL)
    done = subprocess.run([KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{done.stderr}"
    docs = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    assert docs, "the kustomization rendered no object"
    return docs


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    """The one object of this kind named so (a generated ConfigMap's name has a hash suffix)."""
    hits = [o for o in objects if o["kind"] == kind
            and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name}, found {[o['metadata']['name'] for o in hits]}"
    return hits[0]


def container(deployment: Obj, name: str) -> Obj:
    (hit,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return hit


def env(c: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_number(c: Obj, port: int | str) -> int:
    """A probe's or a Service's target port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (hit,) = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    return int(hit)


def pod_labels(deployment: Obj) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def all_containers(objects: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    for o in objects:
        if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            pod = o["spec"]["template"]["spec"]
            for c in pod.get("initContainers", []) + pod["containers"]:
                yield f"{o['kind']}/{o['metadata']['name']}/{c['name']}", pod, c


def test_the_deploy_copy_of_the_table_is_config_gateway_yaml() -> None:
    """kustomize reads no file outside deploy/k8s, hence the copy; it must not drift."""
    assert (K8S / "gateway.yaml").read_text() == (ROOT / "config" / "gateway.yaml").read_text(), \
        "deploy/k8s/gateway.yaml differs from config/gateway.yaml: copy it over"


# --- the schema ------------------------------------------------------------------------------------

def test_every_object_passes_kubernetes_validate_strictly(objects: list[Obj]) -> None:
    version = kubernetes_validate.latest_version()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 33), f"kubernetes-validate's newest is {version}"
    problems = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{o['kind']}/{o['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not problems, f"invalid for Kubernetes {version}:\n" + "\n".join(problems)


def test_the_validation_can_fail(objects: list[Obj]) -> None:
    """The check above has teeth: a misspelt field and a wrong type are refused."""
    version = kubernetes_validate.latest_version()
    typo = copy.deepcopy(find(objects, "Deployment", "gateway"))
    c = container(typo, "gateway")
    c["readinesProbe"] = c.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, version, strict=True)
    wrong = copy.deepcopy(find(objects, "Deployment", "gateway"))
    wrong["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


def test_the_kinds_issue_14_lists_are_there(objects: list[Obj]) -> None:
    kinds = {(o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])) for o in objects}
    assert {("Deployment", "gateway"), ("Service", "gateway"), ("ConfigMap", "gateway-config"),
            ("Secret", "gateway-keys"), ("Deployment", "redis"), ("Service", "redis"),
            ("PodDisruptionBudget", "gateway"), ("HorizontalPodAutoscaler", "gateway")} <= kinds, kinds


# --- the gateway's pods ----------------------------------------------------------------------------

def test_three_replicas_and_probes_on_the_gateway_port(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 3
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    c = container(deployment, "gateway")
    assert port_number(c, "http") == 8000
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert (ready["path"], port_number(c, ready["port"])) == ("/readyz", 8000)
    assert (live["path"], port_number(c, live["port"])) == ("/healthz", 8000)
    # one worker per pod: scaled by replicas (a worker count above 1 needs PROMETHEUS_MULTIPROC_DIR)
    command = c.get("command", []) + c.get("args", [])
    assert "--workers" not in command or command[command.index("--workers") + 1] == "1", command


def test_the_settings_in_the_manifest_are_the_gateways(objects: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every GATEWAY_* variable set is one gateway/settings.py reads (it ignores unknown ones, so a
    misspelt name would silently do nothing), and the values parse."""
    variables = env(container(find(objects, "Deployment", "gateway"), "gateway"))
    fields = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    unknown = {n for n in variables if n.startswith("GATEWAY_")} - fields
    assert not unknown, f"not settings of the gateway: {sorted(unknown)}"
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.shutdown_delay > 0, "readiness must turn 503 before the listener closes"


def test_termination_grace_covers_prestop_delay_and_grace(objects: list[Obj],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = find(objects, "Deployment", "gateway")
    c = container(deployment, "gateway")
    for name, value in env(c).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    pre_stop = c["lifecycle"]["preStop"]
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert PurePosixPath(command[0]).name == "sleep" and len(command) == 2, command
        pre_stop_seconds = float(command[1])
    else:
        pre_stop_seconds = float(pre_stop["sleep"]["seconds"])
    assert pre_stop_seconds > 0
    total = pre_stop_seconds + settings.shutdown_delay + settings.shutdown_grace
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > total, f"terminationGracePeriodSeconds {grace} <= preStop + delay + grace = {total}"
    assert grace <= total + 60, f"terminationGracePeriodSeconds {grace}: far past the drain ({total})"
    assert settings.shutdown_grace >= 300, "thinking-model streams last minutes"


def test_non_root_read_only_root_and_requests_everywhere(objects: list[Obj]) -> None:
    seen = []
    for where, pod, c in all_containers(objects):
        seen.append(where)
        context = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, where
        assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert "ALL" in context.get("capabilities", {}).get("drop", []), where
        requests = c.get("resources", {}).get("requests", {})
        assert {"cpu", "memory"} <= set(requests), f"{where}: requests {requests}"
        assert "memory" in c["resources"].get("limits", {}), where
    assert len(seen) >= 2, seen


def test_the_gateway_runs_as_the_images_user_and_has_a_scratch_tmp(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user, "the Dockerfile's USER is numeric"
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(map(int, user.groups()))
    mounts = {m["mountPath"]: m["name"] for m in container(deployment, "gateway")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a read-only root needs a writable /tmp"


def test_metrics_are_scraped_on_the_gateway_port(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port_number(container(deployment, "gateway"), "http")


# --- config and keys -------------------------------------------------------------------------------

def test_the_config_map_is_the_table_the_gateway_loads(objects: list[Obj], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = find(objects, "Deployment", "gateway")
    c = container(deployment, "gateway")
    config_path = PurePosixPath(env(c)["GATEWAY_CONFIG"])
    # mounted where GATEWAY_CONFIG points, under the key it names
    (mount,) = [m for m in c["volumeMounts"] if PurePosixPath(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    config_map = find(objects, "ConfigMap", "gateway-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    text = config_map["data"][config_path.name]
    assert text == (ROOT / "config" / "gateway.yaml").read_text(), \
        "deploy/k8s/gateway.yaml differs from config/gateway.yaml: copy it over"
    (tmp_path / "gateway.yaml").write_text(text)
    # no keys at all: every provider disabled, still a valid table
    secret = find(objects, "Secret", "gateway-keys")
    for name in secret["stringData"]:
        monkeypatch.delenv(name, raising=False)
    config = load(tmp_path / "gateway.yaml")
    assert config.providers and config.models
    assert not any(p.enabled for p in config.providers.values())
    # the Secret's names are the table's variables: with them all set, every provider is enabled
    for name in secret["stringData"]:
        monkeypatch.setenv(name, "sk-test")
    assert all(p.enabled for p in load(tmp_path / "gateway.yaml").providers.values())


def test_the_secret_carries_the_client_and_upstream_keys(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    secret = find(objects, "Secret", "gateway-keys")
    refs = [e["secretRef"]["name"] for e in container(deployment, "gateway").get("envFrom", []) if "secretRef" in e]
    assert refs == [secret["metadata"]["name"]]
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    variables = set(re.findall(r"\$\{(\w+)", (K8S / "gateway.yaml").read_text()))
    assert {"POWERTOKENS_API_KEY", "TOKEN360_API_KEY", "SILICONFLOW_API_KEY", "TOAPIS_API_KEY",
            "MAXTOKEN_API_KEY"} <= variables
    wanted = {"GATEWAY_API_KEYS"} | variables
    assert wanted <= keys, f"missing from the Secret: {sorted(wanted - keys)}"
    # no key is committed: the file is a form to fill in
    assert not any(secret.get("stringData", {}).values()), "a key is written in gateway-secret.yaml"


# --- Service, PDB, HPA -----------------------------------------------------------------------------

def test_the_service_reaches_the_gateway_pods(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    service = find(objects, "Service", "gateway")
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    assert not selects(service["spec"]["selector"], pod_labels(find(objects, "Deployment", "redis")))
    (port,) = service["spec"]["ports"]
    assert port_number(container(deployment, "gateway"), port["targetPort"]) == 8000


def test_the_disruption_budget_keeps_two_serving(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    pdb = find(objects, "PodDisruptionBudget", "gateway")["spec"]
    assert selects(pdb["selector"]["matchLabels"], pod_labels(deployment))
    replicas = deployment["spec"]["replicas"]
    if "maxUnavailable" in pdb:
        assert pdb["maxUnavailable"] == 1
    else:
        assert 2 <= pdb["minAvailable"] < replicas, "minAvailable must leave one pod to drain"


def test_the_autoscaler_scales_the_gateway_on_cpu(objects: list[Obj]) -> None:
    deployment = find(objects, "Deployment", "gateway")
    hpa = find(objects, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": deployment["metadata"]["name"]}
    assert spec["minReplicas"] == deployment["spec"]["replicas"] == 3
    assert spec["maxReplicas"] > spec["minReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # utilisation is of the request: the gateway container must request CPU
    assert "cpu" in container(deployment, "gateway")["resources"]["requests"]


# --- Redis -----------------------------------------------------------------------------------------

def test_gateway_redis_url_points_at_the_redis_service(objects: list[Obj]) -> None:
    url = urlsplit(env(container(find(objects, "Deployment", "gateway"), "gateway"))["GATEWAY_REDIS_URL"])
    assert url.scheme == "redis"
    service = find(objects, "Service", url.hostname or "")
    redis = find(objects, "Deployment", "redis")
    assert selects(service["spec"]["selector"], pod_labels(redis))
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == (url.port or 6379)]
    assert port_number(container(redis, "redis"), port["targetPort"]) == 6379


def test_redis_keeps_budgets_across_a_restart(objects: list[Obj]) -> None:
    redis = find(objects, "Deployment", "redis")
    assert redis["spec"]["replicas"] == 1
    assert redis["spec"]["strategy"]["type"] == "Recreate", "a ReadWriteOnce volume cannot be held by two pods"
    c = container(redis, "redis")
    args = c.get("command", []) + c.get("args", [])
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1] if "--dir" in args else "/data"
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in redis["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claim = find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # a full Redis must refuse writes, not be OOM-killed: maxmemory below the container's limit
    maxmemory = args[args.index("--maxmemory") + 1]
    assert re.fullmatch(r"\d+mb", maxmemory), maxmemory
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(maxmemory[:-2]) * 10**6 < int(limit[:-2]) * 2**20 * 0.8, (maxmemory, limit)
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
