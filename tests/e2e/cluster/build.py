"""Build the e2e cluster's binaries from the Go module proxy, once per version.

    python3 tests/e2e/cluster/build.py [--print-dir] [--skaffold]

Nothing is downloaded from GitHub or a registry: Kubernetes, etcd and helm come from the
Go module proxy as source and are compiled here. Results live under
`$VDC_CACHE_DIR/k8s/<versions>/bin` with a stamp; a second run with the stamp present does
nothing. Go's module and build caches live beside them, so a rebuild after a version bump
recompiles only what changed.

skaffold (for skaffold.yaml's tests, not the cluster) is built the same way on request,
`--skaffold` or `build_skaffold()`, into `$VDC_CACHE_DIR/k8s/skaffold-<version>/bin`: a set
of its own, so bumping it rebuilds nothing else and the cluster's `up` never waits for it.

Why the wrappers: `k8s.io/kubernetes` maps its staging modules with `replace` directives,
which Go honours only in the main module, so `go install k8s.io/kubernetes/cmd/...@v` is
refused. A generated main module requires it and replaces each staging module with its
published `v0.M.P` twin. etcd's server module has local-path replaces too, so it gets a
(simpler) wrapper of its own, which also keeps its newer dependencies from moving
Kubernetes' ones. skaffold's go.mod has `replace` (and `exclude`) directives as well, which a
third wrapper copies.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.prereqs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.prereqs import atomic

KUBERNETES = "v1.34.4"
ETCD = "v3.6.16"
HELM = "v3.22.0"
# v2.19.0 is on the proxy, but sum.golang.org has no entry for it: go refuses it, rightly.
SKAFFOLD = "v2.16.1"
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2"
KUBE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
ALL_BINARIES = (*KUBE_BINARIES, "etcd", "helm")


def cache_root() -> Path:
    return Path(os.environ.get("VDC_CACHE_DIR", "/var/cache/vdc"))


def bin_dir() -> Path:
    return cache_root() / "k8s" / f"kubernetes-{KUBERNETES}_etcd-{ETCD}_helm-{HELM}" / "bin"


def skaffold_dir() -> Path:
    return cache_root() / "k8s" / f"skaffold-{SKAFFOLD}" / "bin"


def skaffold_path() -> Path:
    return skaffold_dir() / "skaffold"


def go_env() -> dict[str, str]:
    root = cache_root() / "go"
    return os.environ | {
        "GOMODCACHE": str(root / "mod"),
        "GOCACHE": str(root / "build"),
        "GOFLAGS": "-modcacherw -mod=mod",
        # Fail at once on a go.mod wanting a newer Go instead of fetching a toolchain.
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }


Progress = Callable[[str], None]


def run(
    argv: list[str],
    cwd: Path,
    what: str,
    env: dict[str, str] | None = None,
    progress: Progress = print,
) -> str:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=go_env() | (env or {}), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"build.py: {what} failed (exit {done.returncode})")
    progress(f"build.py: {what}: {time.monotonic() - started:.0f} s")
    return done.stdout


def kubernetes_wrapper(upstream_mod: str, version: str) -> str:
    """The main module that builds `k8s.io/kubernetes` at `version` (pure, for tests)."""
    go_line = re.search(r"^go (\S+)$", upstream_mod, re.M)
    godebug = re.search(r"^godebug (.+)$", upstream_mod, re.M)
    staging = re.findall(r"^\s*(k8s\.io/\S+) => \./staging/src/\S+$", upstream_mod, re.M)
    if go_line is None or not staging:
        raise ValueError("unexpected go.mod for k8s.io/kubernetes: no go line or no staging")
    twin = "v0." + version.removeprefix("v1.")
    lines = ["module vdc.invalid/k8sbuild", "", f"go {go_line.group(1)}"]
    if godebug:  # only the main module's godebug line counts; keep the branch's defaults
        lines.append(f"godebug {godebug.group(1)}")
    lines += ["", f"require k8s.io/kubernetes {version}", "", "replace ("]
    lines += [f"\t{name} => {name} {twin}" for name in staging]
    lines += [")", ""]
    return "\n".join(lines)


def _directives(upstream_mod: str, verb: str) -> list[str]:
    """The operands of each `verb` directive, single-line or block, comments dropped."""
    found: list[str] = []
    block = False
    for raw in upstream_mod.splitlines():
        line = raw.split("//", 1)[0].strip()
        if block:
            if line == ")":
                block = False
            elif line:
                found.append(" ".join(line.split()))
        elif line == f"{verb} (":
            block = True
        elif line.startswith(f"{verb} "):
            found.append(" ".join(line[len(verb) :].split()))
    return found


def skaffold_wrapper(upstream_mod: str, version: str) -> str:
    """The main module that builds skaffold at `version` (pure, for tests): it requires
    skaffold and repeats its go line, godebug, `exclude`s and `replace`s, which Go reads from
    the main module only."""
    go_line = re.search(r"^go (\S+)$", upstream_mod, re.M)
    if go_line is None:
        raise ValueError("unexpected go.mod for skaffold: no go line")
    godebug = re.search(r"^godebug (.+)$", upstream_mod, re.M)
    replaces = _directives(upstream_mod, "replace")
    for replace in replaces:
        target = replace.split("=>", 1)[1].split()
        if len(target) != 2:  # a local path: there is no such directory here
            raise ValueError(f"skaffold replaces with a local path: {replace}")
    lines = ["module vdc.invalid/skaffoldbuild", "", f"go {go_line.group(1)}"]
    if godebug:
        lines.append(f"godebug {godebug.group(1)}")
    lines += ["", f"require {SKAFFOLD_MODULE} {version}", ""]
    excludes = _directives(upstream_mod, "exclude")
    for verb, operands in (("exclude", excludes), ("replace", replaces)):
        if operands:
            lines += [f"{verb} (", *(f"\t{o}" for o in operands), ")", ""]
    return "\n".join(lines)


def skaffold_ldflags(version: str, info: dict[str, object]) -> str:
    """Version stamps as skaffold's Makefile sets them, from the proxy's `.info` (pure)."""
    pkg = f"{SKAFFOLD_MODULE}/pkg/skaffold/version"
    origin = info.get("Origin")
    commit = origin.get("Hash") if isinstance(origin, dict) else None
    pairs = {
        "version": version,
        "buildDate": info.get("Time") or "unknown",
        "gitCommit": commit or "unknown",
    }
    return "-s -w " + " ".join(f"-X {pkg}.{key}={value}" for key, value in pairs.items())


def version_ldflags(version: str) -> str:
    major, minor = version.removeprefix("v").split(".")[:2]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    pkg = "k8s.io/component-base/version"
    pairs = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": now,
    }
    return "-s -w " + " ".join(f"-X {pkg}.{key}={value}" for key, value in pairs.items())


def build_kubernetes(work: Path, out: Path, progress: Progress) -> None:
    src = work / "kubernetes"
    src.mkdir(parents=True, exist_ok=True)
    info = json.loads(
        run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES}"],
            src,
            "fetch",
            progress=progress,
        )
    )
    (src / "go.mod").write_text(kubernetes_wrapper(Path(info["GoMod"]).read_text(), KUBERNETES))
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in KUBE_BINARIES]
    # One invocation, so the packages the binaries share are compiled once.
    run(
        ["go", "build", "-p", "2", "-trimpath", "-tags", "selinux,notest",
         "-ldflags", version_ldflags(KUBERNETES), "-o", str(out) + "/", *packages],
        src,
        f"kubernetes {KUBERNETES}",
        progress=progress,
    )  # fmt: skip


def build_etcd(work: Path, out: Path, progress: Progress) -> None:
    src = work / "etcd"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        f"module vdc.invalid/etcdbuild\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {ETCD}\n"
    )
    run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"),
         "go.etcd.io/etcd/server/v3"],
        src,
        f"etcd {ETCD}",
        progress=progress,
    )  # fmt: skip


def build_helm(work: Path, out: Path, progress: Progress) -> None:
    # helm's go.mod has no replace directives: a plain `go install`, straight into `out`.
    run(
        ["go", "install", "-trimpath", "-ldflags", "-s -w", f"helm.sh/helm/v3/cmd/helm@{HELM}"],
        work,
        f"helm {HELM}",
        env={"GOBIN": str(out), "GOFLAGS": "-modcacherw"},
        progress=progress,
    )


def cluster_built() -> bool:
    """The cluster's binaries are a complete, published set (no build needed)."""
    return atomic.verify(bin_dir(), required=ALL_BINARIES)


def skaffold_built() -> bool:
    return atomic.verify(skaffold_dir(), required=("skaffold",))


def build_set(out: Path, required: tuple[str, ...], steps: Callable[[Path], None]) -> Path:
    """`out`, built by `steps(staging)` unless a complete set is there, all or nothing: a
    build killed at any point leaves no set that looks complete, and the next one starts
    over (Go's caches keep what was compiled)."""
    with atomic.locked(out):
        if atomic.verify(out, required=required):
            return out
        if shutil.which("go") is None:
            raise SystemExit("build.py: the Go toolchain is not installed")
        staging = atomic.partial(out)
        started = time.monotonic()
        steps(staging)
        atomic.publish(staging, out, info={"seconds": round(time.monotonic() - started)})
    return out


def build_skaffold(progress: Progress = print) -> Path:
    """The skaffold binary, built once per version (a set of its own)."""

    def steps(staging: Path) -> None:
        src = skaffold_dir().parent / "src"
        src.mkdir(parents=True, exist_ok=True)
        download = json.loads(
            run(
                ["go", "mod", "download", "-json", f"{SKAFFOLD_MODULE}@{SKAFFOLD}"],
                src,
                "fetch",
                progress=progress,
            )
        )
        (src / "go.mod").write_text(skaffold_wrapper(Path(download["GoMod"]).read_text(), SKAFFOLD))
        info = json.loads(Path(download["Info"]).read_text())
        run(
            ["go", "build", "-p", "2", "-trimpath", "-tags", "timetzdata osusergo netgo release",
             "-ldflags", skaffold_ldflags(SKAFFOLD, info), "-o", str(staging / "skaffold"),
             f"{SKAFFOLD_MODULE}/cmd/skaffold"],
            src,
            f"skaffold {SKAFFOLD}",
            progress=progress,
        )  # fmt: skip

    build_set(skaffold_dir(), ("skaffold",), steps)
    return skaffold_path()


def build(progress: Progress = print) -> Path:
    """Kubernetes, etcd and helm, built once per set of versions."""

    def steps(staging: Path) -> None:
        work = bin_dir().parent / "src"
        build_kubernetes(work, staging, progress)
        build_etcd(work, staging, progress)
        build_helm(work, staging, progress)

    return build_set(bin_dir(), ALL_BINARIES, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-dir", action="store_true", help="print the bin directory")
    parser.add_argument(
        "--skaffold", action="store_true", help="build skaffold instead of the cluster's set"
    )
    args = parser.parse_args()
    out = build_skaffold().parent if args.skaffold else build()
    if args.print_dir:
        print(out)


if __name__ == "__main__":
    main()
