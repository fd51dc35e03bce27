"""The cluster build's generated wrapper module, without building anything."""

from __future__ import annotations

import pytest

from tests.e2e.cluster.build import (
    kubernetes_wrapper,
    skaffold_ldflags,
    skaffold_wrapper,
    version_ldflags,
)

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


SKAFFOLD_UPSTREAM = """\
module github.com/GoogleContainerTools/skaffold/v2

go 1.24.1

// broken on Windows
exclude github.com/karrick/godirwalk v1.17.0

replace github.com/alessio/shellescape => github.com/alessio/shellescape v1.4.2

// pinned: newer ones break buildpacks
replace github.com/docker/docker => github.com/docker/docker v27.5.1+incompatible // why

replace (
\tgithub.com/spf13/viper v1.20.0 => github.com/spf13/viper v1.19.0
)

require (
\t4d63.com/tz v1.2.0
\tgithub.com/docker/docker v28.0.0+incompatible
)
"""


def test_skaffold_wrapper_repeats_every_replace_and_exclude() -> None:
    wrapper = skaffold_wrapper(SKAFFOLD_UPSTREAM, "v2.16.1")
    assert wrapper.splitlines() == [
        "module vdc.invalid/skaffoldbuild",
        "",
        "go 1.24.1",
        "",
        "require github.com/GoogleContainerTools/skaffold/v2 v2.16.1",
        "",
        "exclude (",
        "\tgithub.com/karrick/godirwalk v1.17.0",
        ")",
        "",
        "replace (",
        "\tgithub.com/alessio/shellescape => github.com/alessio/shellescape v1.4.2",
        "\tgithub.com/docker/docker => github.com/docker/docker v27.5.1+incompatible",
        "\tgithub.com/spf13/viper v1.20.0 => github.com/spf13/viper v1.19.0",
        ")",
    ]


def test_skaffold_wrapper_refuses_a_local_replace() -> None:
    with pytest.raises(ValueError, match="local path"):
        skaffold_wrapper(SKAFFOLD_UPSTREAM + "replace example.com/x => ./x\n", "v2.16.1")


def test_skaffold_is_stamped_from_the_proxy_info() -> None:
    info = {
        "Version": "v2.16.1",
        "Time": "2025-06-18T03:34:25Z",
        "Origin": {"VCS": "git", "Hash": "95fb592deb61a4e290edca4925bd7c9c2fa93f6c"},
    }
    pkg = "github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version"
    assert skaffold_ldflags("v2.16.1", info) == (
        f"-s -w -X {pkg}.version=v2.16.1 -X {pkg}.buildDate=2025-06-18T03:34:25Z"
        f" -X {pkg}.gitCommit=95fb592deb61a4e290edca4925bd7c9c2fa93f6c"
    )
    # A proxy without Origin (GOPROXY=file://...) still gives a working binary.
    assert skaffold_ldflags("v2.16.1", {}).endswith(
        f"-X {pkg}.buildDate=unknown -X {pkg}.gitCommit=unknown"
    )
