"""`placemat2` and `pmctl2`: Placemat v2's commands, so its users' scripts run unchanged.

Both take Placemat v2.4.11's flags and arguments (cmd/placemat2, cmd/pmctl2) and answer
as it does: the same output formats (Go's JSON encoding of Placemat's structs, the same
plain lines), exit code 1 for every failure, and `placemat2` named so that
`pgrep --exact placemat2` finds it. Underneath, `placemat2` is `vdc run` with Placemat's
defaults and `pmctl2` talks to its REST API. What vdc adds (more node actions, forwards
served by the run itself instead of systemd units and socat) is listed in the README.

`pmctl2` needs the standard library only, like vdc's other client commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from vdc_runtime import __version__
from vdc_runtime.client import ClientError, call

EXIT_FAILED = 1
"""Placemat's exit code for any failure, usage errors included (cobra and log.ErrorExit)."""

PLACEMAT_VERSION = "2.4.11"
"""The Placemat release whose interface these commands follow."""


def go_json(value: Any) -> str:
    """Go's encoding/json Encoder output: compact, map keys sorted, <, > and & escaped,
    a newline at the end."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):  # fmt: skip
        text = text.replace(char, escaped)
    return text + "\n"


def node_status(node: dict[str, Any]) -> dict[str, Any]:
    """Placemat's NodeStatus of a node vdc's API describes: its fields in its order (Go
    encodes a struct's fields in declaration order and a map's keys sorted); vdc's
    additions are left out, as Placemat's pmctl2 drops what its struct does not name."""
    smbios = node.get("smbios") or {}
    return {
        "name": node.get("name", ""),
        "taps": dict(sorted((node.get("taps") or {}).items())),
        "volumes": node.get("volumes") or [],
        "cpu": node.get("cpu") or 0,
        "memory": node.get("memory") or "",
        "uefi": bool(node.get("uefi")),
        "tpm": bool(node.get("tpm")),
        "smbios": {
            "manufacturer": smbios.get("manufacturer") or "",
            "product": smbios.get("product") or "",
            "serial": smbios.get("serial") or "",
        },
        "power_status": node.get("power_status") or "",
        "socket_path": node.get("socket_path") or "",
    }


def forward_setting(forward: dict[str, Any]) -> dict[str, Any]:
    """Placemat's ForwardSetting: the namespace is its `pod`."""
    return {
        "local_port": forward["local_port"],
        "pod": forward["netns"],
        "remote_host": forward["remote_host"],
        "remote_port": forward["remote_port"],
    }


# -- pmctl2 ------------------------------------------------------------------------------------


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 with cobra's `Error: ...` line, as Placemat's commands do."""

    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _one(values: list[str], missing: str) -> str:
    if not values:
        raise _Usage(missing)
    if len(values) > 1:
        raise _Usage("too many arguments")
    return values[0]


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Usage(f'strconv.Atoi: parsing "{text}": invalid syntax') from None


def _node_list(args: argparse.Namespace) -> None:
    nodes = [node_status(n) for n in call(args.endpoint, "GET", "/nodes")]
    if args.json:
        sys.stdout.write(go_json(nodes))
    else:
        for node in nodes:
            print(node["name"])


def _node_show(args: argparse.Namespace) -> None:
    name = _one(args.node, "node name not specified")
    sys.stdout.write(go_json(node_status(call(args.endpoint, "GET", f"/nodes/{name}"))))


def _node_action(args: argparse.Namespace) -> None:
    if not args.args:
        raise _Usage("action name not specified")
    if len(args.args) == 1:
        raise _Usage("node name not specified")
    if len(args.args) > 2:
        raise _Usage("too many arguments")
    action, name = args.args
    call(args.endpoint, "POST", f"/nodes/{name}/{action}")


def _node_enter(args: argparse.Namespace) -> None:
    from vdc_runtime.client import enter

    name = _one(args.node, "node name not specified")
    enter(Path(call(args.endpoint, "GET", f"/nodes/{name}")["socket_path"]), name)


def _forward_add(args: argparse.Namespace) -> None:
    if len(args.args) != 2:
        raise _Usage("wrong number of arguments")
    local_port = _port(args.args[0])
    remote = args.args[1].split(":")
    if len(remote) != 3:
        raise _Usage("remote spec must be POD:REMOTE_HOST:REMOTE_PORT")
    body = {"local_port": local_port, "netns": remote[0], "remote_host": remote[1],
            "remote_port": _port(remote[2])}  # fmt: skip
    call(args.endpoint, "POST", "/forwards", body)


def _forward_list(args: argparse.Namespace) -> None:
    forwards = [forward_setting(f) for f in call(args.endpoint, "GET", "/forwards")]
    if args.json:
        # Placemat's list is a nil slice when empty, which Go encodes as null.
        sys.stdout.write(go_json(forwards or None))
    else:
        for f in forwards:
            print(f"{f['local_port']} {f['pod']}:{f['remote_host']}:{f['remote_port']}")


def _forward_delete(args: argparse.Namespace) -> None:
    if len(args.args) != 1:
        raise _Usage("wrong number of arguments")
    call(args.endpoint, "DELETE", f"/forwards/{_port(args.args[0])}")


def _completion(args: argparse.Namespace) -> None:
    shell = _one(args.shell, "accepts 1 arg(s), received 0")
    if shell not in COMPLETIONS:
        raise _Usage(f'invalid argument "{shell}" for "pmctl2 completion"')
    sys.stdout.write(COMPLETIONS[shell])


def _pmctl2_parser() -> argparse.ArgumentParser:
    # Placemat's global flags may come before or after the subcommand (cobra's persistent
    # flags); SUPPRESS keeps a subcommand's unset copy from hiding the global one.
    def global_flags(parser: argparse.ArgumentParser, default: Any) -> None:
        parser.add_argument("--endpoint", default=default,
                            help="API endpoint of the target placemat")  # fmt: skip
        for flag, what in (("--logfile", "Log filename"), ("--logformat", "Log format"),
                           ("--loglevel", "Log level")):  # fmt: skip
            parser.add_argument(flag, default=argparse.SUPPRESS, help=f"{what} (accepted)")

    parser = _Parser(prog="pmctl2", description="control nodes and forwards of a data center")
    global_flags(parser, "http://localhost:10808")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(
        parent: Any, name: str, helptext: str, run: Callable[[argparse.Namespace], None] | None
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=helptext)
        global_flags(p, argparse.SUPPRESS)
        if run is not None:
            p.set_defaults(run=run)
        return p

    node = command(sub, "node", "node subcommand", None)
    nsub = node.add_subparsers(dest="node_command", required=True, parser_class=_Parser)
    p = command(nsub, "list", "show node list", _node_list)
    p.add_argument("--json", action="store_true", help="show in JSON")
    p = command(nsub, "show", "show node info", _node_show)
    p.add_argument("node", nargs="*")
    p = command(nsub, "action", "control nodes: start, stop, restart (and vdc's others)",
                _node_action)  # fmt: skip
    p.add_argument("args", nargs="*", metavar="ACTION NODE")
    p = command(nsub, "enter", "connect to the node's serial console (leave: Ctrl-])",
                _node_enter)  # fmt: skip
    p.add_argument("node", nargs="*")
    forward = command(sub, "forward", "forward subcommand", None)
    fsub = forward.add_subparsers(dest="forward_command", required=True, parser_class=_Parser)
    p = command(fsub, "add", "add forward setting", _forward_add)
    p.add_argument("args", nargs="*", metavar="LOCAL_PORT POD:REMOTE_HOST:REMOTE_PORT")
    p = command(fsub, "list", "show forward list", _forward_list)
    p.add_argument("--json", action="store_true", help="show in JSON")
    p = command(fsub, "delete", "delete forward setting", _forward_delete)
    p.add_argument("args", nargs="*", metavar="LOCAL_PORT")
    p = command(sub, "completion", "generate a shell completion script", _completion)
    p.add_argument("shell", nargs="*", metavar="bash|zsh|fish|powershell")
    return parser


def pmctl2(argv: list[str] | None = None) -> int:
    try:
        args = _pmctl2_parser().parse_args(argv)
        args.run(args)
    except _Usage as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as exc:
        print(f"pmctl2 error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    return 0


_WORDS = {
    "root": "node forward completion",
    "node": "list show action enter",
    "forward": "add list delete",
    "action": "start stop restart reset shutdown nmi",
    "completion": "bash zsh fish powershell",
}

_TEMPLATES = {
    "bash": """# bash completion for pmctl2 (vdc)
_pmctl2() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} words
    case "$prev" in
        pmctl2) words="%(root)s" ;;
        node) words="%(node)s" ;;
        forward) words="%(forward)s" ;;
        action) words="%(action)s" ;;
        completion) words="%(completion)s" ;;
        *) words="--endpoint --json" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _pmctl2 pmctl2
""",
    "zsh": """#compdef pmctl2
# zsh completion for pmctl2 (vdc), through bash's
autoload -U +X bashcompinit && bashcompinit
source <(pmctl2 completion bash)
""",
    "fish": """# fish completion for pmctl2 (vdc)
complete -c pmctl2 -f -n __fish_use_subcommand -a '%(root)s'
complete -c pmctl2 -f -n '__fish_seen_subcommand_from node' -a '%(node)s'
complete -c pmctl2 -f -n '__fish_seen_subcommand_from forward' -a '%(forward)s'
complete -c pmctl2 -f -n '__fish_seen_subcommand_from action' -a '%(action)s'
complete -c pmctl2 -f -n '__fish_seen_subcommand_from completion' -a '%(completion)s'
complete -c pmctl2 -l endpoint -r -d 'API endpoint of the target placemat'
""",
    "powershell": """# powershell completion for pmctl2 (vdc)
Register-ArgumentCompleter -Native -CommandName pmctl2 -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $words = @{ '' = '%(root)s'; 'node' = '%(node)s'; 'forward' = '%(forward)s';
                'action' = '%(action)s'; 'completion' = '%(completion)s' }
    $elements = $commandAst.CommandElements | ForEach-Object { $_.ToString() }
    $prev = if ($wordToComplete) { $elements[-2] } else { $elements[-1] }
    $key = if ($prev -eq 'pmctl2') { '' } else { $prev }
    ($words[$key] -split ' ') | Where-Object { $_ -like "$wordToComplete*" } |
        ForEach-Object { [System.Management.Automation.CompletionResult]::new($_) }
}
""",
}
COMPLETIONS = {shell: template % _WORDS for shell, template in _TEMPLATES.items()}


# -- placemat2 ---------------------------------------------------------------------------------


def _name_process(name: str) -> None:
    """Set the process name (comm) that `pgrep --exact` matches, whatever started us
    (a console script is already named after itself; `python -m` is not)."""
    import ctypes
    import ctypes.util

    pr_set_name = 15
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)


def _placemat2_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="placemat2",
        description="Build a virtual data center from Placemat YAML files (vdc run with"
        " Placemat's flags and defaults).",
    )
    parser.add_argument("files", nargs="*", metavar="FILE")
    parser.add_argument("--run-dir", default="/tmp", help="run directory")
    parser.add_argument("--cache-dir", default="", help="directory for cache data")
    parser.add_argument("--data-dir", default="/var/scratch/placemat",
                        help="directory to store data")  # fmt: skip
    parser.add_argument("--listen-addr", default="127.0.0.1:10808", help="listen address")
    parser.add_argument(
        "--graphic", action="store_true", help="a graphical console (not supported: ignored)"
    )
    parser.add_argument("--debug", action="store_true", help="show QEMU's stdout and stderr")
    parser.add_argument("--force", action="store_true", help="force run with removal of garbage")
    for flag in ("--logfile", "--logformat", "--loglevel"):
        parser.add_argument(flag, default=None, help="accepted for compatibility")
    parser.add_argument("-v", "--version", action="store_true", help="version for placemat2")
    return parser


def placemat2_argv(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    """The `vdc run` command line for placemat2's arguments, with Placemat's defaults:
    the cache directory is ~SUDO_USER/placemat_data under sudo, else the data directory."""
    cache = args.cache_dir or (
        f"/home/{environ['SUDO_USER']}/placemat_data" if environ.get("SUDO_USER") else args.data_dir
    )
    argv = ["run", "--run-dir", args.run_dir, "--data-dir", args.data_dir, "--cache-dir", cache,
            "--listen-addr", args.listen_addr]  # fmt: skip
    if args.force:
        argv.append("--force")
    return [*argv, *args.files]


def placemat2(argv: list[str] | None = None) -> int:
    _name_process("placemat2")
    try:
        args = _placemat2_parser().parse_args(argv)
    except _Usage as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.version:
        print(f"placemat2 version {PLACEMAT_VERSION} (vdc {__version__})")
        return 0
    if not args.files:
        print("Error: no YAML files specified", file=sys.stderr)
        return EXIT_FAILED
    from vdc_runtime import cli

    if args.graphic:
        print("placemat2: --graphic is not supported by vdc; consoles are on the API and"
              " `pmctl2 node enter`", file=sys.stderr)  # fmt: skip
    verbose = ["-v"] if args.debug or (args.loglevel or "").lower() == "debug" else []
    cli.main([*verbose, *placemat2_argv(args, dict(os.environ))])
    # Placemat exits 1 whatever ends it: a failure, or the signal that stops it, which it
    # reports as an error too ("signaled").
    return EXIT_FAILED


__all__ = ["go_json", "node_status", "placemat2", "placemat2_argv", "pmctl2"]
