"""skaffold.yaml, checked with skaffold itself: it loads with both artifacts, tags both
images, and renders the Helm chart with them. No cluster, Docker daemon or registry: the
build is a dry run and the render is offline from its tags.

skaffold is the one `make deps-e2e` compiles from the Go module proxy
(tests/e2e/cluster/build.py), helm the e2e cluster's. If either is missing the tests fail,
naming that target (a skip would read as a pass). skaffold runs with a
throw-away HOME whose global config turns off metrics and the update check, so nothing is
written to the user's ~/.skaffold and nothing is sent anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_helm_chart import CHART_KINDS
from tests.e2e.cluster import build
from tests.prereqs import require

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "skaffold.yaml"
OPERATOR = "vdc.local/vdc-operator"
RUNTIME = "vdc.local/vdc-runtime"
NAMESPACE = "vdc-system"
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Skaffold:
    binary: Path
    env: dict[str, str]

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.binary), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"skaffold {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "collect-metrics" not in done.stderr, done.stderr  # no prompt: the config held
        return done.stdout


@pytest.fixture(scope="module")
def skaffold(tmp_path_factory: pytest.TempPathFactory) -> Skaffold:
    binary = require.skaffold()
    helm = require.helm()
    home = tmp_path_factory.mktemp("skaffold-home")
    (home / ".skaffold").mkdir()
    (home / ".skaffold" / "config").write_text(
        "global:\n  collect-metrics: false\n  update-check: false\n"
    )
    env = {
        "HOME": str(home),
        "PATH": f"{helm.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "SKAFFOLD_UPDATE_CHECK": "false",
        "KUBECONFIG": str(home / "no-kubeconfig"),  # never the developer's clusters
    }
    tool = Skaffold(binary, env)
    assert tool("version").strip() == build.SKAFFOLD
    return tool


@pytest.fixture(scope="module")
def builds(skaffold: Skaffold, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("skaffold-build") / "builds.json"
    skaffold("build", "-f", str(CONFIG), "--dry-run", f"--file-output={out}")
    return out


def tags_of(builds: Path) -> dict[str, str]:
    return {b["imageName"]: b["tag"] for b in json.loads(builds.read_text())["builds"]}


def render(skaffold: Skaffold, builds: Path) -> list[dict[str, Any]]:
    out = skaffold(
        "render", "-f", str(CONFIG), "--offline=true", "--digest-source=tag", "-a", str(builds)
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def runtime_image(docs: list[dict[str, Any]]) -> str:
    env = {e["name"]: e.get("value") for e in operator_container(docs)["env"]}
    return env["VDC_RUNTIME_IMAGE"]


def test_diagnose_loads_both_artifacts_and_the_chart(skaffold: Skaffold) -> None:
    # --yaml-only: the full diagnose also reads the base images' ONBUILD triggers from
    # docker.io (or a Docker daemon), which this offline test has neither of.
    config = yaml.safe_load(skaffold("diagnose", "-f", str(CONFIG), "--yaml-only"))
    assert config["apiVersion"] == "skaffold/v4beta13"
    assert config["metadata"]["name"] == "vdc"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {OPERATOR, RUNTIME}
    for image, containerfile in (
        (OPERATOR, "images/operator/Containerfile"),
        (RUNTIME, "images/runtime/Containerfile"),
    ):
        assert artifacts[image]["context"] == str(ROOT)
        assert artifacts[image]["docker"]["dockerfile"] == containerfile
        assert (ROOT / containerfile).is_file()
    (release,) = config["manifests"]["helm"]["releases"]
    assert release["name"] == "vdc"
    assert release["chartPath"] == str(ROOT / "deploy" / "helm" / "vdc")
    assert release["namespace"] == NAMESPACE
    assert release["createNamespace"] is True
    assert "helm" in config["deploy"]


def test_build_dry_run_tags_both_images(builds: Path) -> None:
    tags = tags_of(builds)
    assert set(tags) == {OPERATOR, RUNTIME}
    for image, tag in tags.items():
        assert tag.startswith(f"{image}:") and len(tag) > len(image) + 1, tag


def test_render_installs_the_built_images(skaffold: Skaffold, builds: Path) -> None:
    tags = tags_of(builds)
    started = time.monotonic()
    docs = render(skaffold, builds)
    print(f"skaffold render: {time.monotonic() - started:.2f} s")
    assert sorted(d["kind"] for d in docs) == CHART_KINDS  # crds/ is helm install's business
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    assert operator_container(docs)["image"] == tags[OPERATOR]
    assert runtime_image(docs) == tags[RUNTIME]


def test_render_keeps_a_pushed_images_digest(skaffold: Skaffold, tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    pushed = {
        OPERATOR: f"registry.example:5000/ci/vdc-operator:v1@{digest}",
        RUNTIME: f"registry.example:5000/ci/vdc-runtime:v2@{digest}",
    }
    builds = tmp_path / "builds.json"
    builds.write_text(
        json.dumps({"builds": [{"imageName": k, "tag": v} for k, v in pushed.items()]})
    )
    docs = render(skaffold, builds)
    assert operator_container(docs)["image"] == pushed[OPERATOR]
    assert runtime_image(docs) == pushed[RUNTIME]
