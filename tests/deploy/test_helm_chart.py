"""The Helm chart in deploy/helm/vdc: it lints, renders what the operator needs, refuses
values its schema does not describe, and ships the current CRD. No cluster needed: `helm
template` renders offline. helm is the one `make deps-e2e` builds for the e2e cluster; if
it is missing the tests fail (a skip would read as a pass)."""

from __future__ import annotations

import base64
import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.prereqs import require
from vdc_operator.builders import Settings
from vdc_operator.crd import render as render_crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "vdc"
NAMESPACE = "vdc-system"
RELEASE = "vdc"
WEBHOOK_SVC = "vdc-webhook"
# helm built from source (no release ldflags) assumes Kubernetes v1.20 under `helm template`,
# which the chart's kubeVersion refuses; render for the e2e cluster's version.
KUBE_VERSION = "v1.34.4"
TEMPLATE = ("template", RELEASE, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION)

OPERATOR_RULES = [
    {
        "apiGroups": ["vdc.dev"],
        "resources": ["virtualdatacenters"],
        "verbs": ["get", "list", "watch", "patch", "delete"],
    },
    {
        "apiGroups": ["vdc.dev"],
        "resources": ["virtualdatacenters/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": ["vdc.dev"],
        "resources": ["virtualdatacentersnapshots"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": ["vdc.dev"],
        "resources": ["virtualdatacentersnapshots/status"],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]},
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create", "delete"]},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles", "rolebindings"],
        "verbs": ["get", "create", "delete"],
    },
    # The API server's escalation check of each Role and RoleBinding made reads every
    # RoleBinding of the namespace: with these it is not made (see rbac.yaml).
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["roles"],
        "verbs": ["escalate", "bind"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


CHART_KINDS = [
    "ClusterRole",
    "ClusterRoleBinding",
    "Deployment",
    "MutatingWebhookConfiguration",
    "Secret",
    "Service",
    "Service",
    "ServiceAccount",
    "ValidatingWebhookConfiguration",
]
"""What the chart makes with its default values (the CRD aside: Helm installs crds/)."""


def helm_binary() -> str:
    return str(require.helm())


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )


@functools.cache
def _template(sets: tuple[str, ...], json_sets: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    args = [*TEMPLATE, str(CHART)]
    for item in sets:
        args += ["--set", item]
    for item in json_sets:
        args += ["--set-json", item]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def template(*sets: str, json: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Render with `--set` for each of sets and `--set-json` for each of json (`--set`
    reads 2.5 as a string)."""
    return list(_template(sets, json))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return only


def env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"]}


def test_lint_strict() -> None:
    result = run_helm("lint", "--strict", str(CHART))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "[WARNING]" not in out and "[ERROR]" not in out, out
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_default_objects() -> None:
    docs = template()
    assert kinds(docs) == CHART_KINDS
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "vdc"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "vdc-0.1.0"


def test_deployment() -> None:
    docs = template()
    deployment = find(docs, "Deployment", "vdc")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vdc"
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["image"] == "vdc.local/vdc-operator:dev"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == [
        "python3",
        "-m",
        "kopf",
        "run",
        "--standalone",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8081/healthz",
        "-m",
        "vdc_operator.handlers",
    ]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081, "webhook": 9443}
    assert env(docs) == {
        "VDC_RUNTIME_IMAGE": "vdc.local/vdc-runtime:dev",
        "VDC_IMAGE_PULL_POLICY": "IfNotPresent",
        "VDC_KVM_RESOURCE": "",
        "VDC_TUN_RESOURCE": "",
        "VDC_CPU_ALLOCATION_RATIO": "10",
        "VDC_CPU_OVERHEAD_MILLI": "100",
        "VDC_MEMORY_OVERHEAD_MIB": "192",
        "VDC_NODE_MEMORY_OVERHEAD_MIB": "64",
        "VDC_TERMINATION_GRACE_SECONDS": "60",
        "VDC_POD_LIMIT_CPU": "",
        "VDC_POD_LIMIT_MEMORY": "",
        "VDC_SNAPSHOT_CLAIM": "",
        "VDC_NAMESPACES": "",
        "VDC_METRICS_PORT": "8080",
        "MALLOC_ARENA_MAX": "2",
        "VDC_WEBHOOK_CERT": "/etc/vdc/webhook/tls.crt",
        "VDC_WEBHOOK_KEY": "/etc/vdc/webhook/tls.key",
        "VDC_WEBHOOK_PORT": "9443",
    }
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "webhook-tls": "/etc/vdc/webhook"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {}
    assert volumes["webhook-tls"]["secret"]["secretName"] == "vdc-webhook-tls"


def test_settings_read_the_rendered_env() -> None:
    rendered = Settings.from_env(
        env(
            template(
                "runtime.devices.kvmResource=a.b/kvm", json=("runtime.cpuAllocationRatio=2.5",)
            )
        )
    )
    assert rendered.cpu_allocation_ratio == 2.5
    assert rendered.kvm_resource == "a.b/kvm"
    assert Settings.from_env(env(template())) == Settings()
    # A per-pod limit for automatic groups; `--set` reads 16 as a number.
    limited = Settings.from_env(
        env(template("runtime.podLimit.cpu=16", "runtime.podLimit.memory=60Gi"))
    )
    assert (limited.pod_limit_cpu, limited.pod_limit_memory) == ("16", "60Gi")


def test_cluster_role_is_exactly_the_operators_rights() -> None:
    docs = template()
    role = find(docs, "ClusterRole", "vdc")
    assert role["rules"] == OPERATOR_RULES
    binding = find(docs, "ClusterRoleBinding", "vdc")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "vdc",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vdc", "namespace": NAMESPACE}
    ]
    assert find(docs, "ServiceAccount", "vdc")["metadata"]["namespace"] == NAMESPACE


def test_metrics_service() -> None:
    svc = find(template(), "Service", "vdc-metrics")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "vdc",
        "app.kubernetes.io/instance": RELEASE,
    }
    assert "Service" not in {
        d["kind"] for d in template("metrics.service.enabled=false", "webhook.enabled=false")
    }


def _verify_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(
            cert.signature,
            cert.tbs_certificate_bytes,
            padding.PKCS1v15(),
            cert.signature_hash_algorithm,
        )
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )


def test_webhook_certificate_matches_ca_bundle() -> None:
    docs = template()
    config = find(docs, "ValidatingWebhookConfiguration", "vdc")
    (hook,) = config["webhooks"]
    assert hook["name"] == "vdc-spec.vdc.dev"
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    secret = find(docs, "Secret", "vdc-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["namespace"] == NAMESPACE
    crt_pem = base64.b64decode(secret["data"]["tls.crt"])
    cert = x509.load_pem_x509_certificate(crt_pem)
    assert base64.b64decode(secret["data"]["ca.crt"]) == base64.b64decode(
        hook["clientConfig"]["caBundle"]
    )

    assert cert.issuer == ca.subject
    _verify_signed_by(cert, ca)
    _verify_signed_by(ca, ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    svc = f"{WEBHOOK_SVC}.{NAMESPACE}"
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(
        [WEBHOOK_SVC, svc, f"{svc}.svc", f"{svc}.svc.cluster.local"]
    )
    # The key the operator serves with belongs to the certificate.
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()

    # A new certificate rolls the operator's pod.
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/webhook-tls"] == hashlib.sha256(crt_pem).hexdigest()


def test_webhook_configuration() -> None:
    docs = template()
    (hook,) = find(docs, "ValidatingWebhookConfiguration", "vdc")["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": WEBHOOK_SVC,
        "namespace": NAMESPACE,
        "path": "/vdc-spec",
        "port": 443,
    }
    assert hook["rules"] == [
        {
            "apiGroups": ["vdc.dev"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["virtualdatacenters"],
            "scope": "Namespaced",
        }
    ]
    # The operator's own updates (finalizer, annotations) leave the spec alone: not asked.
    spec_changed = "request.operation == 'CREATE' || object.spec != oldObject.spec"
    assert hook["matchConditions"] == [{"name": "spec-changed", "expression": spec_changed}]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["matchPolicy"] == "Equivalent"
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert "namespaceSelector" not in hook
    svc = find(docs, "Service", WEBHOOK_SVC)
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": 9443, "protocol": "TCP"}
    ]
    ignore = template("webhook.failurePolicy=Ignore", "webhook.timeoutSeconds=5")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        (hook,) = find(ignore, kind)["webhooks"]
        assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 5)


def test_the_finalizer_webhook() -> None:
    docs = template()
    (hook,) = find(docs, "MutatingWebhookConfiguration", "vdc")["webhooks"]
    (spec,) = find(docs, "ValidatingWebhookConfiguration", "vdc")["webhooks"]
    assert hook["name"] == "vdc-finalizer.vdc.dev"
    assert hook["clientConfig"] == {
        **spec["clientConfig"],
        "service": {**spec["clientConfig"]["service"], "path": "/vdc-finalizer"},
    }
    # Only at creation: a VDC's finalizer is never added to one that exists.
    assert hook["rules"] == [{**spec["rules"][0], "operations": ["CREATE"]}]
    assert "matchConditions" not in hook and hook["reinvocationPolicy"] == "Never"
    same = ("admissionReviewVersions", "sideEffects", "matchPolicy", "failurePolicy",
            "timeoutSeconds")  # fmt: skip
    assert {k: hook[k] for k in same} == {k: spec[k] for k in same}


def test_no_webhook_some_namespaces_device_plugins() -> None:
    docs = template(
        "webhook.enabled=false",
        "watch.namespaces={a,b}",
        "runtime.devices.kvmResource=devices.kubevirt.io/kvm",
        "runtime.devices.tunResource=devices.kubevirt.io/tun",
    )
    assert kinds(docs) == [
        "ClusterRole",
        "Deployment",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    c = container(docs)
    assert "--all-namespaces" not in c["command"]
    assert c["command"][5:7] == ["--namespace=a", "--namespace=b"]
    rendered_env = env(docs)
    assert rendered_env["VDC_NAMESPACES"] == "a,b"  # the pods' own watch: the same
    assert not [k for k in rendered_env if k.startswith("VDC_WEBHOOK_")]
    assert rendered_env["VDC_KVM_RESOURCE"] == "devices.kubevirt.io/kvm"
    assert rendered_env["VDC_TUN_RESOURCE"] == "devices.kubevirt.io/tun"
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp"]
    assert "webhook" not in {p["name"] for p in c["ports"]}
    annotations = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/webhook-tls" not in annotations
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "ClusterRole"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "vdc", "namespace": NAMESPACE}
        ]
    assert find(docs, "ClusterRole")["rules"] == OPERATOR_RULES


def test_webhook_limited_to_watched_namespaces() -> None:
    docs = template("watch.namespaces={a,b}")
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        (hook,) = find(docs, kind)["webhooks"]
        assert hook["namespaceSelector"] == {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
            ]
        }


def test_scheduling_values() -> None:
    docs = template(
        "nodeSelector.role=ci",
        "tolerations[0].key=ci",
        "tolerations[0].operator=Exists",
        "priorityClassName=system-cluster-critical",
        "podAnnotations.team=ci",
        "image.tag=1.2.3",
        "image.pullPolicy=Always",
    )
    pod = find(docs, "Deployment")["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"role": "ci"}
    assert pod["spec"]["tolerations"] == [{"key": "ci", "operator": "Exists"}]
    assert pod["spec"]["priorityClassName"] == "system-cluster-critical"
    assert pod["metadata"]["annotations"]["team"] == "ci"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"
    assert container(docs)["image"] == "vdc.local/vdc-operator:1.2.3"
    assert container(docs)["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(
    "bad",
    [
        "webhook.failurePolicy=Sometimes",
        "unknownKey=1",
        "webhook.enabeld=false",
        "image.pullPolicy=Sometimes",
        "runtime.image.pullPolicy=Sometimes",
        "metrics.port=0",
        "webhook.port=70000",
        "runtime.cpuAllocationRatio=0",
        "runtime.memoryOverheadMiB=-1",
        "watch.namespaces={Not_A_Namespace}",
        "resources.limit.memory=1Gi",
        "runtime.podLimit.memory=60GB",
        "runtime.podLimit.disk=1Ti",
    ],
)
def test_schema_refuses(bad: str) -> None:
    result = run_helm(*TEMPLATE, str(CHART), "--set", bad)
    assert result.returncode != 0, f"{bad} was accepted"
    assert "schema" in result.stderr.lower(), result.stderr


def test_chart_crd_is_current() -> None:
    chart_copy = CHART / "crds" / "virtualdatacenters.vdc.dev.yaml"
    assert chart_copy.read_bytes() == render_crd().encode(), (
        "the chart's CRD is stale: python -m vdc_operator.crd > " + str(chart_copy)
    )
    # Helm installs crds/ as is: no templating there.
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [
        "virtualdatacenters.vdc.dev.yaml",
        "virtualdatacentersnapshots.vdc.dev.yaml",
    ]


def test_an_all_digit_image_tag_is_a_tag() -> None:
    """skaffold tags images with the commit's short hash and passes it with --set, which
    reads 4944851 as a number: the chart takes it as the tag it is."""
    docs = template("image.tag=4944851", "runtime.image.tag=4944851")
    deployment = find(docs, "Deployment", "vdc")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "vdc.local/vdc-operator:4944851"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VDC_RUNTIME_IMAGE"] == "vdc.local/vdc-runtime:4944851"
