"""The cluster build's generated wrapper module, without building anything."""

from __future__ import annotations

from tests.e2e.cluster.build import kubernetes_wrapper, version_ldflags

UPSTREAM = """\
// This is a generated file. Do not edit directly.

module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiextensions-apiserver => ./staging/src/k8s.io/apiextensions-apiserver
\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet
)
"""


def test_every_staging_module_is_replaced_by_its_published_twin() -> None:
    wrapper = kubernetes_wrapper(UPSTREAM, "v1.34.4")
    assert wrapper.splitlines() == [
        "module vdc.invalid/k8sbuild",
        "",
        "go 1.24.0",
        "godebug default=go1.24",
        "",
        "require k8s.io/kubernetes v1.34.4",
        "",
        "replace (",
        "\tk8s.io/api => k8s.io/api v0.34.4",
        "\tk8s.io/apiextensions-apiserver => k8s.io/apiextensions-apiserver v0.34.4",
        "\tk8s.io/kubelet => k8s.io/kubelet v0.34.4",
        ")",
    ]


def test_version_is_stamped_as_kubernetes_release_builds_do() -> None:
    flags = version_ldflags("v1.34.4")
    for part in ("gitVersion=v1.34.4", "gitMajor=1", "gitMinor=34", "gitTreeState=clean"):
        assert f"-X k8s.io/component-base/version.{part}" in flags
