"""`kubectl vdc`: a VirtualDataCenter's machines, from the user's kubectl.

Installed with the package as `kubectl-vdc`, which kubectl runs for `kubectl vdc ...`.
Everything goes through kubectl itself (its context, credentials and RBAC): node lists and
power actions are `vdc node ...` run by `kubectl exec` in the VDC's pod, against the
agent's REST API on the pod's loopback; a console is `kubectl exec -it`.

    kubectl vdc list                          # VDCs with phase and ready nodes
    kubectl vdc nodes VDC                     # its machines: power, state, BMC
    kubectl vdc power VDC ACTION NODE         # start|stop|restart|reset|shutdown|nmi
    kubectl vdc console VDC NODE              # the serial console (Ctrl-] leaves)
    kubectl vdc console-log VDC NODE [-f]
    kubectl vdc exec VDC [--group G] -- CMD...  # a command in the pod (ipmitool, curl, ...)
    kubectl vdc graph VDC [--format F] [-o OUT]  # its topology, machines coloured by state
    kubectl vdc dashboard VDC [--port P] [--open]  # the web view, through a port-forward

A VDC of several groups has a pod per group: commands about a node go to its group's pod,
`nodes` asks every pod, and `exec` goes to the first group's (or --group's). With automatic
groups (`placement.groups: auto`), each node's group is the one its status reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vdc_runtime.graph.model import Graph

ACTIONS = ("start", "stop", "restart", "reset", "shutdown", "nmi")
# The agent's REST API (and web view), on the pod's loopback; its token in its run dir.
AGENT_PORT = 10808
UI_TOKEN = "/run/vdc/ui-token"


class PluginError(RuntimeError):
    pass


def _kubectl(args: argparse.Namespace) -> list[str]:
    binary = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not binary:
        raise PluginError("kubectl is not on PATH (set KUBECTL to its path)")
    argv = [binary]
    for flag in ("kubeconfig", "context", "namespace"):
        value = getattr(args, flag, None)
        if value:
            argv.append(f"--{flag}={value}")
    return argv


Layout = tuple[dict[str | None, str], dict[str, str]]


def layout(args: argparse.Namespace) -> Layout:
    """The VDC's pods by group, the first group's first ({None: pod} for a VDC in one pod),
    and each node's group."""
    return vdc_layout(args.vdc, _vdc(args))


def _vdc(args: argparse.Namespace) -> dict[str, Any]:
    """The VirtualDataCenter as the API server returns it."""
    return json.loads(_run([*_kubectl(args), "get", "virtualdatacenters.vdc.dev", args.vdc,
                            "-o", "json"]))  # fmt: skip


def vdc_layout(name: str, vdc: dict[str, Any]) -> Layout:
    """`layout` of a VDC as the API server returns it: read from its spec, as the operator
    names the pods; with automatic groups, from its status (the operator's per-pod limit
    is not in the spec, so the plugin cannot repeat the packing): each node's `group` in
    status.nodes, which the operator merges from what each group's agent reports."""
    from vdc_operator.builders import pod_groups, pod_name
    from vdc_runtime.groups import group_of
    from vdc_runtime.packing import auto_number
    from vdc_runtime.resource import spec as cr

    spec = cr.parse(vdc.get("spec") or {})
    if spec.placement.groups != "auto":
        pods = {group: pod_name(name, group) for group in pod_groups(spec)}
        return pods, {n.name: group_of(n.group) for n in spec.nodes}
    status = vdc.get("status") or {}
    nodes = {n["name"]: n["group"] for n in status.get("nodes") or [] if n.get("group")}
    if not nodes:
        if status.get("groups"):  # several pods, whose agents have not reported yet
            raise PluginError(f"{name}'s automatic groups are not known yet (no node is"
                              " reported in its status); try again once they boot")  # fmt: skip
        return {None: pod_name(name)}, {}
    order = sorted(set(nodes.values()), key=lambda g: (auto_number(g) or 0, g))
    return {group: pod_name(name, group) for group in order}, nodes


def pod_for(args: argparse.Namespace, node: str | None = None) -> str:
    """The pod a command goes to: the one that runs `node`, or the group asked for with
    --group, or the first group's (where the runners are)."""
    pods, node_groups = layout(args)
    if len(pods) == 1:
        return next(iter(pods.values()))
    group = getattr(args, "group", None)
    if node is not None:
        if node not in node_groups:
            raise PluginError(f"{args.vdc} has no node {node}")
        group = node_groups[node]
    if group is None:
        return next(iter(pods.values()))
    if group not in pods:
        raise PluginError(f"{args.vdc} has no group {group} (groups: {', '.join(map(str, pods))})")
    return pods[group]


def _exec(
    args: argparse.Namespace, *command: str, tty: bool = False, pod: str | None = None
) -> list[str]:
    flags = ["-it"] if tty else ["-i"]
    pod = pod or pod_for(args, getattr(args, "node", None))
    return [*_kubectl(args), "exec", *flags, pod, "-c", "agent", "--", *command]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise PluginError((done.stderr or done.stdout).strip() or f"{argv[0]} failed")
    return done.stdout


def node_table(nodes: list[dict[str, Any]]) -> str:
    """The nodes as `vdc node list --json` gives them, as a kubectl-style table."""
    rows = [("NAME", "POWER", "STATE", "READY", "RESTARTS", "BMC")]
    for n in nodes:
        bmc = n.get("bmc") or {}
        address = bmc.get("address") or n.get("bmc_address") or "-"
        if bmc.get("state") and bmc["state"] != "listening":
            address += f" ({bmc['state']})"
        ready = n.get("ready")
        rows.append((
            n["name"], n.get("power_status", "?"), n.get("state", "?"),
            "-" if ready is None else str(bool(ready)).lower(), str(n.get("restarts", 0)), address,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_list(args: argparse.Namespace) -> int:
    argv = [*_kubectl(args), "get", "virtualdatacenters.vdc.dev"]
    if args.all_namespaces:
        argv.append("--all-namespaces")
    return subprocess.call(argv)


def cmd_nodes(args: argparse.Namespace) -> int:
    nodes = []
    pods, _ = layout(args)
    for pod in pods.values():  # each group's agent knows its own machines
        nodes += json.loads(_run(_exec(args, "vdc", "node", "list", "--json", pod=pod)))
    if args.output == "json":
        print(json.dumps(nodes, indent=2))
    else:
        print(node_table(nodes))
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    _run(_exec(args, "vdc", "node", "action", args.action, args.node))
    print(f"{args.node}: {args.action}")
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    return subprocess.call(_exec(args, "vdc", "node", "enter", args.node, tty=True))


def cmd_console_log(args: argparse.Namespace) -> int:
    extra = ["--follow"] if args.follow else []
    return subprocess.call(_exec(args, "vdc", "node", "console-log", args.node, *extra))


def cmd_exec(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise PluginError("give a command after --")
    return subprocess.call(_exec(args, *argv, tty=sys.stdin.isatty()))


def cmd_credentials(args: argparse.Namespace) -> int:
    """The BMCs' generated account, read from the Secret the VDC's status names."""
    import base64

    bmc = (_vdc(args).get("status") or {}).get("bmc") or {}
    name = bmc.get("secretName")
    if not name:
        raise PluginError(f"{args.vdc} has no generated BMC account: its spec names its"
                          " users (spec.bmc.users), or its agent has not reported yet")  # fmt: skip
    secret = json.loads(_run([*_kubectl(args), "get", "secret", name, "-o", "json"]))
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    if args.output == "json":
        print(json.dumps({"username": data["username"], "password": data["password"],
                          "secret": name}))  # fmt: skip
    else:
        print(f"{data['username']} {data['password']}")
    return 0


def fault_node(argv: list[str]) -> str | None:
    """The node or namespace a `vdc fault add` names first: its pod is asked."""
    if len(argv) >= 3 and argv[0] == "add" and argv[1] in ("link", "machine", "bmc"):
        return argv[2].partition(":")[0]
    return None


PLUGIN_OPTIONS = {"-n": "namespace", "--namespace": "namespace", "--context": "context",
                  "--kubeconfig": "kubeconfig"}  # fmt: skip


def take_plugin_options(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """`argv` without the plugin's own options (`kubectl vdc fault lab list -n ns`), which
    are set on `args` instead."""
    rest: list[str] = []
    words = iter(argv)
    for word in words:
        name, eq, value = word.partition("=")
        if name in PLUGIN_OPTIONS:
            setattr(args, PLUGIN_OPTIONS[name], value if eq else next(words, None))
        else:
            rest.append(word)
    return rest


def cmd_fault(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    argv = take_plugin_options(args, argv)
    if not argv:
        raise PluginError("give a fault command: add|list|clear (see `vdc fault --help`)")
    pods, node_groups = layout(args)
    node = fault_node(argv)
    # Namespaces are not in the layout: their faults go to the first group's pod.
    pod = pod_for(args, node) if node in node_groups or len(pods) == 1 else None
    return subprocess.call(_exec(args, "vdc", "fault", *argv, pod=pod))


def vdc_graph(name: str, vdc: dict[str, Any]) -> Graph:
    """The topology of a VDC as the API server returns it: drawn from its spec, as `vdc
    graph` draws a spec file, its machines coloured by the phase its status reports. With
    automatic groups, each node's group is the one its status reports (as for `layout`)
    and each namespace's follows by the packing's rule; until every node is reported, the
    VDC is drawn without its groups."""
    from vdc_runtime import packing
    from vdc_runtime.graph import topology
    from vdc_runtime.resource import spec as cr
    from vdc_runtime.spec import SpecErrors

    raw = vdc.get("spec") or {}
    try:
        spec = cr.parse(raw)
        dc = cr.load(raw, spec=spec)
    except SpecErrors as exc:
        raise PluginError(f"{name}'s spec cannot be drawn: {exc}") from None
    status = vdc.get("status") or {}
    nodes = [n for n in status.get("nodes") or [] if isinstance(n, dict) and n.get("name")]
    if spec.placement.groups == "auto" and not spec.groups:
        groups = {n["name"]: n["group"] for n in nodes if isinstance(n.get("group"), str)}
        with contextlib.suppress(ValueError):  # not every node reported yet
            dc = packing.apply(dc, packing.reported(dc, groups))
    states = {n["name"]: str(n["phase"]).lower() for n in nodes if n.get("phase")}
    return topology.build(dc, title=name, states=states)


def cmd_graph(args: argparse.Namespace) -> int:
    from vdc_runtime.graph import render

    text = render(vdc_graph(args.vdc, _vdc(args)), args.format)
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def forwarded_port(line: str) -> int | None:
    """The local port in kubectl port-forward's `Forwarding from 127.0.0.1:PORT -> 10808`."""
    words = line.split()
    if len(words) < 3 or words[:2] != ["Forwarding", "from"]:
        return None
    host, _, port = words[2].rpartition(":")
    return int(port) if port.isdigit() and host == "127.0.0.1" else None


def dashboard_url(port: int, token: str) -> str:
    """The page, with the token the page turns into its cookie (and drops from the URL)."""
    if not token or any(c not in _TOKEN_CHARS for c in token):
        raise PluginError(f"the agent's token ({UI_TOKEN}) is not a token: {token!r}")
    return f"http://127.0.0.1:{port}/ui/?token={token}"


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Forward a local port to the agent's API and print (or open) the web view's URL with
    the agent's token; runs until Ctrl-C, as kubectl port-forward does."""
    pod = pod_for(args)
    token = _run(_exec(args, "cat", UI_TOKEN, pod=pod)).strip()
    argv = [*_kubectl(args), "port-forward", f"pod/{pod}", f"{args.port or ''}:{AGENT_PORT}"]
    forward = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    # Stopped by a signal, the plugin still stops its port-forward (in `finally`).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert forward.stdout is not None
        port = None
        while port is None:
            line = forward.stdout.readline()
            if not line:
                raise PluginError(f"kubectl port-forward to {pod} exited ({forward.wait()})")
            port = forwarded_port(line)
        url = dashboard_url(port, token)
        print(f"web view of {args.vdc}: {url}\n(Ctrl-C stops the port-forward)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)
        # kubectl says a line per connection: read on, or its pipe fills and it blocks.
        for _ in forward.stdout:
            pass
        return forward.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if forward.poll() is None:
            forward.terminate()
            forward.wait()
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the VDC's namespace (default: kubectl's)")
    common.add_argument("--context", help="kubeconfig context")
    common.add_argument("--kubeconfig", help="kubeconfig file")
    parser = argparse.ArgumentParser(
        prog="kubectl vdc", description="VirtualDataCenters' machines, through kubectl."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", parents=[common], help="VDCs with their phase and ready nodes")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("nodes", parents=[common], help="a VDC's machines")
    p.add_argument("vdc")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_nodes)
    p = sub.add_parser("power", parents=[common], help="power a machine: " + ", ".join(ACTIONS))
    p.add_argument("vdc")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("node")
    p.set_defaults(func=cmd_power)
    p = sub.add_parser("console", parents=[common], help="attach to a machine's serial console")
    p.add_argument("vdc")
    p.add_argument("node")
    p.set_defaults(func=cmd_console)
    p = sub.add_parser("console-log", parents=[common], help="what a machine's console showed")
    p.add_argument("vdc")
    p.add_argument("node")
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=cmd_console_log)
    p = sub.add_parser(
        "credentials",
        parents=[common],
        help="the BMCs' generated account (USER PASSWORD), from its Secret",
    )
    p.add_argument("vdc")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_credentials)
    p = sub.add_parser("fault", parents=[common],
                       help="faults on demand, as `vdc fault` in the VDC's pod"
                            " (declare lasting ones in spec.faults)")  # fmt: skip
    p.add_argument("vdc")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="add|list|clear ...")
    p.set_defaults(func=cmd_fault)
    p = sub.add_parser("exec", parents=[common], help="run a command in the VDC's pod")
    p.add_argument("vdc")
    p.add_argument("--group", help="in this group's pod (default: the first group's)")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    p.set_defaults(func=cmd_exec)
    p = sub.add_parser("graph", parents=[common],
                       help="draw a VDC's topology, its machines coloured by state")  # fmt: skip
    p.add_argument("vdc")
    p.add_argument("--format", choices=("svg", "dot", "mermaid", "json"), default="svg")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="write here instead of standard output")  # fmt: skip
    p.set_defaults(func=cmd_graph)
    p = sub.add_parser("dashboard", parents=[common],
                       help="the VDC's web view, through a port-forward to its agent")  # fmt: skip
    p.add_argument("vdc")
    p.add_argument("--group", help="this group's pod (default: the first group's)")
    p.add_argument("--port", type=int, default=0, help="local port (default: a free one)")
    p.add_argument("--open", action="store_true", help="open it in a browser")
    p.set_defaults(func=cmd_dashboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PluginError as exc:
        print(f"kubectl vdc: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
