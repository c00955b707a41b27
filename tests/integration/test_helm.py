"""The Helm chart: lint it, render it, and check what it renders against the gateway itself.

Each values file in charts/agora-gateway/ci/ is linted with ``helm lint --strict``
and rendered with ``helm template``. The gateway's configuration that the chart
renders must be accepted by ``gateway.config.Settings`` (with the environment the
pod gives it), OPA's configuration must be what ``agora opa-config`` prints, and
the pod must keep OPA and the bundle service on loopback, expose only the public
port through the Service, probe both containers and run without root.
Last, the rendered pod's two processes are run here on loopback, with their
rendered arguments and configuration, until both are ready.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from gateway.config import Settings, apply_env_overrides
from gateway.pinning.bundle import load_bundle
from gateway.policy.opa import opa_config
from tests.support import ROOT, TOOL_BIN, Process, free_port, python_module, wait_for_http

pytestmark = pytest.mark.integration

CHART = ROOT / "charts" / "agora-gateway"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# helm template assumes Kubernetes 1.20 without a cluster; the chart needs 1.29+
# (native sidecar containers).
KUBE_VERSION = "1.31.0"
RELEASE = "agora"
NAMESPACE = "agora-test"


@pytest.fixture(scope="session")
def helm() -> str:
    found = shutil.which("helm") or shutil.which(str(TOOL_BIN / "helm"))
    if found is None:
        if os.environ.get("AGORA_SKIP_HELM") == "1":
            pytest.skip("helm is not installed and AGORA_SKIP_HELM=1")
        pytest.fail(
            "helm is not installed (looked on PATH and in ~/.cache/agora/bin): "
            "run scripts/install-tools.sh helm, or set AGORA_SKIP_HELM=1 to skip the chart tests"
        )
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def lint(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *args)


POD = "agora-gateway-0"
"""The pod name the rendered manifests are read for."""


@dataclass
class Rendered:
    """The manifests ``helm template`` rendered for one values file."""

    name: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.name}: expected one {kind}, got {len(found)}"
        return found[0]

    @property
    def workload(self) -> dict[str, Any]:
        found = self.of_kind("Deployment") + self.of_kind("StatefulSet")
        assert len(found) == 1, f"{self.name}: expected one Deployment or StatefulSet"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.workload["spec"]["template"]["spec"]
        return spec

    @property
    def gateway(self) -> dict[str, Any]:
        return _named(self.pod["containers"], "gateway")

    @property
    def opa(self) -> dict[str, Any]:
        return _named(self.pod.get("initContainers", []), "opa")

    def config_map(self, suffix: str = "") -> dict[str, Any]:
        name = f"{RELEASE}-agora-gateway{suffix}"
        return next(cm for cm in self.of_kind("ConfigMap") if cm["metadata"]["name"] == name)

    @property
    def config_text(self) -> str:
        text: str = self.config_map()["data"]["agora.yaml"]
        return text

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load(self.config_text)
        return loaded

    @property
    def opa_config_text(self) -> str:
        text: str = self.config_map("-opa")["data"]["opa.yaml"]
        return text

    def mount_path(self, container: dict[str, Any], volume: str) -> Path:
        mount = _named(container["volumeMounts"], volume)
        return Path(mount["mountPath"])

    def env(self) -> dict[str, str]:
        """The gateway's environment, with a stand-in value for each secret and the pod's name
        (``POD``); ``$(VAR)`` references expanded as Kubernetes does."""
        env: dict[str, str] = {}
        for var in self.gateway.get("env", []):
            if "valueFrom" in var and "fieldRef" in var["valueFrom"]:
                assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                env[var["name"]] = POD
            elif "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] and ref["key"], f"{var['name']}: empty secret reference"
                env[var["name"]] = f"https://secret.example/{ref['name']}/{ref['key']}"
            else:
                env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        return env


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [item for item in items if item["name"] == name]
    assert len(found) == 1, f"expected one item named {name!r}, got {len(found)}"
    return found[0]


def render(helm: str, values: Path | None, *extra: str) -> Rendered:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", KUBE_VERSION, *extra]
    if values is not None:
        args += ["--values", str(values)]
    result = run_helm(helm, *args)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Rendered(values.name if values else "defaults", docs)


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda path: path.stem)
def rendered(request: pytest.FixtureRequest, helm: str) -> Rendered:
    return render(helm, request.param)


def validated_settings(r: Rendered, tmp_path: Path) -> Settings:
    """The rendered configuration as the gateway would load it in the pod.

    Environment overrides are applied as in ``load_settings``. Files that the pod
    mounts (the JWT public key, the bundle directory) do not exist here: after
    checking that they are on a mounted volume, they are pointed at stand-ins.
    """
    raw = r.config
    apply_env_overrides(raw, r.env())
    log_key_file = raw["transparency"]["key_file"]
    if log_key_file is not None:
        assert Path(log_key_file).parent == r.mount_path(r.gateway, "transparency-key")
        assert raw["transparency"]["origin"].endswith(f"/{POD}"), "one origin per replica"
    key_file = raw["auth"].get("public_key_file")
    if key_file is not None:
        assert Path(key_file).parent == r.mount_path(r.gateway, "auth-key")
        stand_in = tmp_path / "public.pem"
        stand_in.write_text("-----BEGIN PUBLIC KEY-----\n")
        raw["auth"]["public_key_file"] = str(stand_in)
    governance = raw.get("governance")
    if governance and governance.get("bundle_dir") is not None:
        assert Path(governance["bundle_dir"]) == r.mount_path(r.gateway, "governance-bundles")
        governance["bundle_dir"] = str(tmp_path)
    return Settings.model_validate(raw)


# --- lint -------------------------------------------------------------------------------------


def test_ci_values_cover_the_deployment_cases() -> None:
    names = {path.stem for path in CI_VALUES}
    assert {
        "default-values",
        "governance-rpc-values",
        "pinned-hs-secret-values",
        "decision-log-pvc-values",
    } <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.stem)
def test_lint_strict(helm: str, values: Path) -> None:
    result = lint(helm, "--values", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gateway.prot=8080", "'prot' not allowed"),
        ("policy.pinnedDigest=sha256:abc", "/policy/pinnedDigest"),
        ("policy.pinnedDigest=", "/policy/pinnedDigest"),
        ("governance.enabled=true", "/governance/registry"),
        ("headerAllowlist[0]=authorization", "/headerAllowlist"),
        ("decisionLog.durability=sometimes", "/decisionLog/durability"),
        ("upstreams[0].url=ftp://model", "/upstreams/0/url"),
        ("auth.algorithms[0]=none", "/auth/algorithms/0"),
        ("auth.jwksUrl=http://issuer.example/jwks", "/auth/jwksUrl"),
        ("decisionLog.callerHash=sha256", "/decisionLog/callerHash"),
        ("decisionLog.ship.url=http://logs.example", "/decisionLog/ship/url"),
        ("usage.onUnavailable=unlimited", "/usage/onUnavailable"),
        ("usage.redisUrl=redis://x", "/usage/redisUrl"),
        ("autoscaling.maxReplicas=0", "/autoscaling/maxReplicas"),
    ],
)
def test_schema_refuses_mistakes(helm: str, setting: str, message: str) -> None:
    result = lint(helm, "--set", setting)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


# Values that pass the auth and caller-hash checks, for cases about something else.
_ANONYMOUS_UNKEYED = ("auth.required=false", "decisionLog.callerHash=unkeyed")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["governance.enabled=true", "governance.registry=0x" + "11" * 20],
            "governance.enabled needs governance.rpcUrls or governance.rpcUrlSecret",
        ),
        (
            [
                "auth.jwksUrl=https://a.example/jwks",
                "auth.hmacSecret.name=s",
                "auth.hmacSecret.key=k",
            ],
            "set only one of auth.jwksUrl",
        ),
        (["policy.bundle.source=configMap"], "policy.bundle.configMap.name"),
        ([], "auth.required is true, so tokens must be verified"),
        (["auth.jwksUrl=https://a.example/jwks"], "auth.issuer and auth.audience are required"),
        (["auth.required=false"], "decisionLog.callerHashKeySecret is required"),
        (
            [*_ANONYMOUS_UNKEYED, "transparency.keySecret.name=k", "transparency.keySecret.key=k"],
            "transparency.origin is required with transparency.keySecret",
        ),
        (
            [*_ANONYMOUS_UNKEYED, "decisionLog.ship.enabled=true"],
            "decisionLog.ship.enabled needs decisionLog.ship.url",
        ),
        (
            [*_ANONYMOUS_UNKEYED, "transparency.anchor.contract=0x" + "ab" * 20],
            "transparency.anchor.contract needs transparency.anchor.rpcUrl",
        ),
        (
            [*_ANONYMOUS_UNKEYED, "gateway.adminPort=8080"],
            "gateway.adminPort and gateway.port are both 8080",
        ),
        (
            [*_ANONYMOUS_UNKEYED, "opa.diagnosticPort=8282"],
            "gateway.bundlePort and opa.diagnosticPort are both 8282",
        ),
        (
            [
                *_ANONYMOUS_UNKEYED,
                "autoscaling.enabled=true",
                "autoscaling.targetCPUUtilizationPercentage=0",
            ],
            "autoscaling.enabled needs a target",
        ),
        (
            [
                *_ANONYMOUS_UNKEYED,
                "autoscaling.enabled=true",
                "autoscaling.minReplicas=5",
                "autoscaling.maxReplicas=3",
            ],
            "autoscaling.minReplicas is above autoscaling.maxReplicas",
        ),
    ],
)
def test_template_refuses_inconsistent_values(helm: str, settings: list[str], message: str) -> None:
    args = ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for setting in settings:
        args += ["--set", setting]
    result = run_helm(helm, *args)
    assert result.returncode != 0
    assert message in result.stderr


# --- what the chart renders -------------------------------------------------------------------


def test_gateway_configuration_is_accepted_by_the_gateway(
    rendered: Rendered, tmp_path: Path
) -> None:
    settings = validated_settings(rendered, tmp_path)
    opa_port = int(settings.policy.opa_url.port or 0)
    assert settings.policy.opa == "external"
    assert str(settings.policy.opa_url) == f"http://127.0.0.1:{opa_port}/"
    assert settings.listen.host == "0.0.0.0"
    assert settings.listen.port == _named(rendered.gateway["ports"], "http")["containerPort"]
    assert settings.admin.listen.host == "0.0.0.0"
    assert settings.admin.listen.port == _named(rendered.gateway["ports"], "admin")["containerPort"]
    assert settings.bundle_service.listen.host == "127.0.0.1"
    assert settings.bundle_port not in [p["containerPort"] for p in rendered.gateway["ports"]]
    log_dir = rendered.mount_path(rendered.gateway, "decisions")
    assert settings.decision_log.path.parent == log_dir
    if settings.governance is None:
        assert settings.policy.pinned_digest is not None, "no chain: the bundle must be pinned"
    else:
        assert settings.governance.chain == "rpc"
        assert settings.governance.rpc_urls and settings.governance.registry
    if str(settings.policy.bundle).startswith("/opt/agora/bundle/"):
        assert settings.policy.bundle.parent == rendered.mount_path(
            rendered.gateway, "policy-bundle"
        )
    env = rendered.env()
    named_envs = [u.api_key_env for u in settings.upstreams]
    named_envs += [settings.auth.secret_env, settings.decision_log.caller_hash_key_env]
    if settings.decision_log.ship is not None:
        named_envs += list(settings.decision_log.ship.headers_env.values())
    for name in filter(None, named_envs):
        assert name in env, f"the configuration names {name}, the pod does not set it"


def test_every_configuration_key_is_rendered(rendered: Rendered) -> None:
    """The chart sets every key of gateway/config.py: a new key needs a value in the chart."""
    config = rendered.config
    _assert_same_keys(Settings, config, "")


def _assert_same_keys(model: type[BaseModel], node: Any, where: str) -> None:
    assert isinstance(node, dict), f"{where or 'top level'}: not a mapping"
    missing = set(model.model_fields) - set(node)
    assert not missing, f"keys of {model.__name__} the chart does not render: {sorted(missing)}"
    for name, field in model.model_fields.items():
        value = node[name]
        for sub in _models_in(field.annotation):
            if isinstance(value, list):
                for index, item in enumerate(value):
                    _assert_same_keys(sub, item, f"{where}{name}.{index}.")
            elif value is not None:
                _assert_same_keys(sub, value, f"{where}{name}.")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_opa_configuration_is_what_agora_opa_config_prints(rendered: Rendered) -> None:
    port = rendered.config["bundle_service"]["listen"]["port"]
    expected = opa_config(f"http://127.0.0.1:{port}")
    assert yaml.safe_load(rendered.opa_config_text) == expected
    assert "decision_logs" not in expected, "OPA's own decision logs stay off"
    # Byte for byte what `agora opa-config --gateway-url http://127.0.0.1:<port>` prints.
    assert rendered.opa_config_text == yaml.safe_dump(expected, sort_keys=False)
    config_mount = rendered.mount_path(rendered.opa, "opa-config")
    args = rendered.opa["args"]
    assert args[args.index("--config-file") + 1] == str(config_mount / "opa.yaml")


def test_two_containers_with_opa_as_a_native_sidecar(rendered: Rendered) -> None:
    pod = rendered.pod
    assert [c["name"] for c in pod["containers"]] == ["gateway"]
    assert [c["name"] for c in pod["initContainers"]] == ["opa"]
    opa = rendered.opa
    assert opa["restartPolicy"] == "Always", "OPA must outlive the gateway's drain"
    assert opa["image"] == "openpolicyagent/opa:1.22.2"
    assert rendered.gateway["image"] == "agora-gateway:0.1.0"
    assert rendered.gateway["args"] == [
        "serve", "--config", "/etc/agora/agora.yaml", "--log-level", "info",
    ]  # fmt: skip


def test_opa_listens_on_loopback_only(rendered: Rendered) -> None:
    args = rendered.opa["args"]
    opa_url = httpx.URL(rendered.config["policy"]["opa_url"])
    assert args[:2] == ["run", "--server"]
    assert args[args.index("--addr") + 1] == f"127.0.0.1:{opa_url.port}"
    for flag in ("--skip-version-check", "--shutdown-grace-period"):
        assert flag in args
    # Only the read-only diagnostic listener (/health, /metrics) is on the pod's address.
    diagnostic = args[args.index("--diagnostic-addr") + 1]
    diag_port = _named(rendered.opa["ports"], "opa-diag")["containerPort"]
    assert diagnostic == f"0.0.0.0:{diag_port}"
    assert [p["containerPort"] for p in rendered.opa["ports"]] == [diag_port]


def test_only_the_public_port_is_behind_the_service(rendered: Rendered) -> None:
    assert [p["name"] for p in rendered.gateway["ports"]] == ["http", "admin"]
    service = next(
        s for s in rendered.of_kind("Service") if not s["metadata"]["name"].endswith("-admin")
    )
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_probes(rendered: Rendered) -> None:
    gateway = rendered.gateway
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert gateway[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    opa = rendered.opa
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert opa[probe]["httpGet"]["port"] == "opa-diag"
        assert opa[probe]["httpGet"]["path"].startswith("/health")
    # Startup must not wait for a bundle: the bundle comes from the gateway, started after OPA.
    assert opa["startupProbe"]["httpGet"]["path"] == "/health"


def test_security_context_non_root(rendered: Rendered) -> None:
    pod = rendered.pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in (rendered.gateway, rendered.opa):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
    writable = {m["mountPath"] for m in rendered.gateway["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp", str(rendered.mount_path(rendered.gateway, "decisions"))}


def test_decision_log_storage(rendered: Rendered) -> None:
    storage = yaml.safe_load((CHART / "values.yaml").read_text())["decisionLog"]["storage"]
    overrides = yaml.safe_load((CHART / "ci" / rendered.name).read_text()) or {}
    kind = overrides.get("decisionLog", {}).get("storage", {}).get("type", storage["type"])
    workload = rendered.workload
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    if kind == "persistentVolumeClaim":
        assert workload["kind"] == "StatefulSet"
        assert "decisions" not in volumes
        claims = workload["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["decisions"]
        assert workload["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    else:
        assert workload["kind"] == "Deployment"
        assert "emptyDir" in volumes["decisions"]


def test_config_change_rolls_the_pods(helm: str) -> None:
    def checksum(*args: str) -> str:
        workload = render(helm, CHART / "ci" / "default-values.yaml", *args).workload
        value: str = workload["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum() != checksum("--set", "policy.timeoutMs=250")


def test_optional_resources(rendered: Rendered) -> None:
    overrides = yaml.safe_load((CHART / "ci" / rendered.name).read_text()) or {}
    monitors = rendered.of_kind("ServiceMonitor")
    admin_services = [
        s for s in rendered.of_kind("Service") if s["metadata"]["name"].endswith("-admin")
    ]
    monitored = int(overrides.get("serviceMonitor", {}).get("enabled", False))
    assert len(monitors) == len(admin_services) == monitored
    for monitor, admin in zip(monitors, admin_services, strict=True):
        # The monitor scrapes the admin port through the admin Service, and only that one.
        endpoint = monitor["spec"]["endpoints"][0]
        assert (endpoint["port"], endpoint["path"]) == ("admin", "/metrics")
        selected = [
            s["metadata"]["name"]
            for s in rendered.of_kind("Service")
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert selected == [admin["metadata"]["name"]]
        assert [p["targetPort"] for p in admin["spec"]["ports"]] == ["admin"]
        assert admin["spec"]["clusterIP"] == "None"
    policies = rendered.of_kind("NetworkPolicy")
    network_policy = overrides.get("networkPolicy", {})
    assert len(policies) == int(network_policy.get("enabled", False))
    for policy in policies:
        ingress = policy["spec"]["ingress"]
        assert ingress[0]["ports"] == [{"port": "http", "protocol": "TCP"}]
        admin_from = network_policy.get("adminFrom")
        assert len(ingress) == (2 if admin_from else 1)
        if admin_from:
            assert ingress[1] == {
                "ports": [{"port": "admin", "protocol": "TCP"}],
                "from": admin_from,
            }
    assert len(rendered.of_kind("PodDisruptionBudget")) == 1
    assert len(rendered.of_kind("ServiceAccount")) == 1


def test_autoscaling_and_shared_usage_counters(helm: str, tmp_path: Path) -> None:
    """An HPA owns the replicas: CPU always, in-flight requests only where an adapter serves
    custom metrics; the Redis URL comes from its Secret into the configuration."""
    values = CHART / "ci" / "default-values.yaml"
    shared = ["--set", "usage.redisUrl.name=redis", "--set", "usage.redisUrl.key=url"]
    plain = render(helm, values, "--set", "autoscaling.enabled=true", *shared)
    hpa = plain.one("HorizontalPodAutoscaler")
    assert "replicas" not in plain.workload["spec"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == plain.workload["kind"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == plain.workload["metadata"]["name"]
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    adapter = render(
        helm, values, "--set", "autoscaling.enabled=true",
        "--api-versions", "custom.metrics.k8s.io/v1beta1",
    )  # fmt: skip
    in_flight = adapter.one("HorizontalPodAutoscaler")["spec"]["metrics"][1]
    assert in_flight["pods"]["metric"]["name"] == "agora_requests_in_flight"
    env = {var["name"]: var for var in plain.gateway["env"]}
    assert env["AGORA__USAGE__REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis", "key": "url",
    }  # fmt: skip
    raw = plain.config
    apply_env_overrides(raw, {"AGORA__USAGE__REDIS_URL": "redis://:pw@redis.example:6379/0"})
    assert raw["usage"]["redis_url"] == "redis://:pw@redis.example:6379/0"
    assert raw["usage"]["on_unavailable"] == "fail_closed"
    assert not render(helm, values).of_kind("HorizontalPodAutoscaler")


def test_default_digest_is_the_default_bundle_in_the_image() -> None:
    """values.yaml pins the bundle that the Dockerfile copies into the image."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    digest = load_bundle(ROOT / "policies").digest
    assert values["policy"]["pinnedDigest"] == digest, (
        f"policies/ changed: set policy.pinnedDigest in {CHART / 'values.yaml'} to {digest}"
    )
    image_path = values["policy"]["bundle"]["imagePath"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^COPY .*policies/? {re.escape(image_path)}/?$", dockerfile, re.M)


# --- the rendered pod, run on loopback --------------------------------------------------------


@dataclass
class LocalPod:
    gateway_url: str
    admin_url: str
    opa_url: str
    diagnostic_url: str


@pytest.fixture(scope="module")
def local_pod(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPod]:
    """The default pod's processes, with their rendered arguments, configuration and environment.

    Only what a pod provides is replaced: the mounts become files here, the
    addresses on the pod's interface (0.0.0.0) become loopback, and the secrets
    in the environment get stand-in values.
    """
    opa_binary = shutil.which("opa") or shutil.which(str(TOOL_BIN / "opa"))
    if opa_binary is None:
        pytest.fail("opa is not installed: run scripts/install-tools.sh opa")
    gateway_port, admin_port, bundle_port = free_port(), free_port(), free_port()
    opa_port, diag_port = free_port(), free_port()
    r = render(
        helm,
        CHART / "ci" / "default-values.yaml",
        *("--set", f"gateway.port={gateway_port}"),
        *("--set", f"gateway.adminPort={admin_port}"),
        *("--set", f"gateway.bundlePort={bundle_port}"),
        *("--set", f"opa.port={opa_port}"),
        *("--set", f"opa.diagnosticPort={diag_port}"),
    )
    workdir = tmp_path_factory.mktemp("pod")
    config = r.config
    assert config["policy"]["bundle"] == "/opt/agora/policies"
    config["policy"]["bundle"] = str(ROOT / "policies")
    config["decision_log"]["path"] = str(workdir / "decisions.jsonl")
    config["listen"]["host"] = "127.0.0.1"
    config["admin"]["listen"]["host"] = "127.0.0.1"
    (workdir / "agora.yaml").write_text(yaml.safe_dump(config))
    (workdir / "opa.yaml").write_text(r.opa_config_text)

    replace = {
        "/config/opa.yaml": str(workdir / "opa.yaml"),
        f"0.0.0.0:{diag_port}": f"127.0.0.1:{diag_port}",
        "/etc/agora/agora.yaml": str(workdir / "agora.yaml"),
    }
    opa = Process([opa_binary, *(replace.get(a, a) for a in r.opa["args"])], workdir / "opa.log")
    gateway_args = [replace.get(a, a) for a in r.gateway["args"]]
    gateway = Process(python_module("gateway", *gateway_args), workdir / "gateway.log", r.env())
    pod = LocalPod(
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        admin_url=f"http://127.0.0.1:{admin_port}",
        opa_url=f"http://127.0.0.1:{opa_port}",
        diagnostic_url=f"http://127.0.0.1:{diag_port}",
    )
    try:
        wait_for_http(f"{pod.gateway_url}/readyz", timeout_s=60)
        wait_for_http(f"{pod.diagnostic_url}/health?bundles", timeout_s=30)
    except TimeoutError as exc:
        gateway.stop()
        opa.stop()
        raise AssertionError(
            f"the rendered pod did not become ready: {exc}\n"
            f"gateway:\n{gateway.output()}\nopa:\n{opa.output()}"
        ) from None
    yield pod
    gateway.stop()
    opa.stop()


def test_rendered_pod_becomes_ready(local_pod: LocalPod) -> None:
    assert httpx.get(f"{local_pod.gateway_url}/readyz", timeout=5).json() == {"ready": True}
    ready = httpx.get(f"{local_pod.admin_url}/readyz", timeout=5).json()
    digest = load_bundle(ROOT / "policies").digest
    assert ready["ready"] is True
    assert ready["policy"]["digest"] == digest
    assert ready["opa_enforces"] == ready["policy"]["version"]
    # The diagnostic listener serves health, never decisions.
    assert httpx.get(f"{local_pod.diagnostic_url}/v1/data", timeout=5).status_code == 404
    answer = httpx.post(
        f"{local_pod.opa_url}/v1/data/agora/main?provenance=true", json={"input": {}}, timeout=5
    ).json()
    assert digest in answer["provenance"]["bundles"]["agora"]["revision"]
