"""The `vdc` command."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from vdc_runtime import __version__, logs

Loaded = TypeVar("Loaded")

if TYPE_CHECKING:
    from vdc_runtime.agent.main import AgentOptions
    from vdc_runtime.options import GroupOptions
    from vdc_runtime.snapshot.store import SnapshotStore
    from vdc_runtime.spec import DataCenter, SpecError
    from vdc_runtime.spec.cache import Entry

log = logging.getLogger("vdc")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _reported(
    read: Callable[[list[SpecError] | None], Loaded], strict: bool, warn: Callable[[str], object]
) -> Loaded | None:
    """What `read` gives, reading leniently (what Placemat ignores is passed to `warn`) or
    `strict`ly; the errors printed and None when there are any."""
    from vdc_runtime.spec import SpecErrors

    warnings: list[SpecError] = []
    try:
        return read(None if strict else warnings)
    except SpecErrors as exc:
        print(str(exc), file=sys.stderr)
        count = len(exc.errors)
        print(f"{count} error{'s' if count != 1 else ''}; nothing was created", file=sys.stderr)
        return None
    finally:
        for warning in warnings:
            warn(str(warning))


def _load(files: list[Path], strict: bool, warn: Callable[[str], object]) -> DataCenter | None:
    """Read Placemat files as Placemat does, or `strict`ly (see `_reported`)."""
    # The spec's models are imported only by the commands that read one: `vdc runner` and
    # the API client commands run in runner containers with the standard library alone.
    from vdc_runtime.spec import load_files

    return _reported(lambda w: load_files(files, strict=strict, warnings=w), strict, warn)


def _load_cached(
    files: list[Path], strict: bool, warn: Callable[[str], object], cache_dir: Path
) -> Entry | None:
    """`_load`, reusing what the same bytes validated to before (`spec.cache`)."""
    from vdc_runtime.spec import cache

    return _reported(
        lambda w: cache.load(files, cache_dir, strict=strict, warnings=w), strict, warn
    )


def _warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _manifest_docs(path: Path) -> list[object] | None:
    """The file's documents if it holds Kubernetes objects, None for a Placemat file (or
    one that does not parse, which the Placemat loader then reports)."""
    import yaml

    from vdc_runtime.resource.manifests import is_kubernetes_object

    if not path.is_file():
        # A pipe (`/dev/stdin`) can be read once: the Placemat loader reads it.
        return None
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return docs if any(is_kubernetes_object(d) for d in docs) else None


def cmd_validate(args: argparse.Namespace) -> int:
    manifests = {path: docs for path in args.files if (docs := _manifest_docs(path)) is not None}
    placemat = [path for path in args.files if path not in manifests]
    status = EXIT_OK
    if manifests:
        from vdc_runtime.resource.manifests import check

        errors = 0
        for path, docs in manifests.items():
            report = check(str(path), docs)
            for line in report.valid:
                print(f"{path}: {line}: valid")
            if report.skipped:
                print(f"{path}: skipped (not a VirtualDataCenter): {', '.join(report.skipped)}")
            for error in report.errors:
                print(str(error), file=sys.stderr)
            errors += len(report.errors)
        if errors:
            print(f"{errors} error{'s' if errors != 1 else ''}", file=sys.stderr)
            status = EXIT_FAILED
    if placemat:
        dc = _load(placemat, args.strict, _warn_on_stderr)
        if dc is None:
            return EXIT_FAILED
        names = ", ".join(str(f) for f in placemat)
        print(f"{names}: valid ({dc.summary()})")
    return status


async def _run(loaded: Entry, args: argparse.Namespace, group: GroupOptions | None) -> int:
    # The API (aiohttp, slow to import) is loaded before anything is built: loaded once the
    # QEMUs had started, it took CPU from them while they set up and ran their firmware,
    # and the guests booted later for it (bench/boot.py shows both).
    from vdc_runtime import api
    from vdc_runtime.datacenter import DataCenterRun, RunOptions, StartupError
    from vdc_runtime.listen import parse_listen_addr

    try:
        parse_listen_addr(args.listen_addr)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    run = DataCenterRun(
        loaded.dc,
        RunOptions(
            run_dir=args.run_dir.absolute(),
            data_dir=args.data_dir.absolute(),
            cache_dir=args.cache_dir.absolute(),
            force=args.force,
            adopt=args.adopt,
            accel=args.accel,
            workdir=args.files[0].absolute().parent,
            recreate_volumes=args.recreate_volumes,
            group=group,
            restore=args.restore,
        ),
        canonical=loaded.canonical,
    )
    if args.restore is not None and args.adopt:
        log.error("--restore and --adopt: a run either takes over machines or restores them")
        return EXIT_USAGE
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    start = asyncio.create_task(run.start())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not start.done():
        log.warning("signal received during start-up: undoing what was built")
        start.cancel()
    try:
        await start
    except asyncio.CancelledError:
        return EXIT_OK
    except (StartupError, OSError, RuntimeError) as exc:
        log.error("start-up failed, everything created was removed: %s", exc)
        return EXIT_FAILED

    exit_code = EXIT_OK
    runner = None
    try:
        from vdc_runtime.ui import auth as ui_auth

        token = ui_auth.write_token(run.options.run_dir)
        runner = await api.serve(run, args.listen_addr, ui_token=token)
        log.info(
            "ready: API on http://%s (Ctrl-C or SIGTERM stops and removes everything)",
            args.listen_addr,
        )
        # The token lets whoever has this line act from the web view (it is also in
        # RUN_DIR/ui-token, for its owner).
        log.info("web view: http://%s/ui/?token=%s", args.listen_addr, token)
        failed = asyncio.create_task(run.failed.wait())
        requested = asyncio.create_task(run.stop_requested.wait())
        await asyncio.wait({stop_wait, failed, requested}, return_when=asyncio.FIRST_COMPLETED)
        if run.failed.is_set():
            log.error("stopping: %s", run.failure)
            exit_code = EXIT_FAILED
        elif run.stop_requested.is_set():
            log.info("stopping, as the snapshot asked")
        else:
            log.info("stopping")
        failed.cancel()
        requested.cancel()
    except OSError as exc:
        log.error("%s", exc)
        exit_code = EXIT_FAILED
    finally:
        stop_wait.cancel()
        if runner is not None:
            await runner.cleanup()
        problems = await run.teardown()
    if problems:
        log.error("teardown left %d problem(s); see warnings above", len(problems))
        return EXIT_FAILED
    log.info("removed everything this run created")
    return exit_code


SPEC_CACHE = "specs"
"""Under --cache-dir: the specs `vdc run` validated (`spec.cache`)."""


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load_cached(
        args.files,
        args.strict,
        lambda message: log.warning("%s", message),
        args.cache_dir.absolute() / SPEC_CACHE,
    )
    if loaded is None:
        return EXIT_FAILED
    try:
        group = _group_options(loaded.dc, args)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    return asyncio.run(_run(loaded, args, group))


def _group_options(dc: DataCenter, args: argparse.Namespace) -> GroupOptions | None:
    """`--group`, `--peer`, ... checked against the spec; ValueError says what is wrong."""
    from vdc_runtime import groups
    from vdc_runtime.options import GroupOptions

    if args.group is None:
        given = [flag for flag, value in (("--peer", args.peer),
                 ("--tunnel-address", args.tunnel_address)) if value]  # fmt: skip
        if given:
            raise ValueError(f"{' and '.join(given)} need --group")
        return None
    peers: dict[str, str] = {}
    for entry in args.peer:
        name, sep, address = entry.partition("=")
        if not sep or not name or not address:
            raise ValueError(f"--peer {entry}: write GROUP=ADDRESS")
        if name in peers:
            raise ValueError(f"--peer {name}: given twice")
        peers[name] = address
    problems = groups.run_problems(groups.layout(dc), args.group, peers)
    if args.tunnel_address is not None:
        try:
            ipaddress.ip_address(args.tunnel_address)
        except ValueError:
            problems.append(f"--tunnel-address {args.tunnel_address}: not an IP address")
    if not 1 <= args.vxlan_port <= 65535:
        problems.append(f"--vxlan-port {args.vxlan_port}: not a port")
    if problems:
        raise ValueError("; ".join(problems))
    return GroupOptions(args.group, peers, args.tunnel_address, args.vxlan_port)


def cmd_convert(args: argparse.Namespace) -> int:
    from vdc_runtime.resource.convert import convert, dump
    from vdc_runtime.spec import SpecErrors

    dc = _load(args.files, args.strict, _warn_on_stderr)
    if dc is None:
        return EXIT_FAILED
    try:
        conversion = convert(
            dc, args.name, args.namespace, configmap=args.configmap, inline_max=args.inline_max
        )
    except SpecErrors as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(dump(*conversion.documents))
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    from vdc_runtime.graph import model, render

    if bool(args.files) == (args.endpoint is not None):
        print("vdc graph: give spec FILEs or --endpoint URL (a running data center), not both",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.endpoint is not None:
        from vdc_runtime.client import call

        try:
            graph = model.from_json(call(args.endpoint, "GET", "/topology"))
        except model.GraphError as exc:
            print(f"vdc graph: {args.endpoint} answered with no graph: {exc}", file=sys.stderr)
            return EXIT_FAILED
        title = graph.title or args.endpoint
    else:
        from vdc_runtime.graph import topology

        dc = _load(args.files, args.strict, _warn_on_stderr)
        if dc is None:
            return EXIT_FAILED
        graph = topology.build(dc)
        title = ", ".join(f.name for f in args.files)
    graph = replace(graph, title=args.title if args.title is not None else title)
    text = render(graph, args.format)
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return EXIT_OK


def cmd_agent(args: argparse.Namespace) -> int:
    from vdc_runtime.agent.main import run_agent

    if not args.name or not args.namespace:
        print("vdc agent: --name and --namespace (or VDC_NAME, VDC_NAMESPACE) are required",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    options = agent_options(args)
    return asyncio.run(run_agent(options))


def agent_options(args: argparse.Namespace) -> AgentOptions:
    """What `vdc agent`'s flags and environment (the pod's, as the operator builds it) say."""
    from vdc_runtime.agent.main import AgentOptions

    return AgentOptions(
        namespace=args.namespace,
        name=args.name,
        pod=args.pod or None,
        pod_ip=args.pod_ip or None,
        group=args.group or None,
        group_assignment=args.group_assignment or None,
        run_dir=args.run_dir.absolute(),
        data_dir=args.data_dir.absolute(),
        cache_dir=args.cache_dir.absolute(),
        sources_dir=args.sources_dir,
        listen_addr=args.listen_addr,
        metrics_port=args.metrics_port,
        holder=args.holder,
        snapshots_dir=args.snapshots_dir,
        snapshots_claim=args.snapshots_claim or None,
        restore=args.restore or None,
        restore_dir=args.restore_dir,
        bmc_password_file=args.bmc_password_file,
        bmc_secret=args.bmc_secret or None,
    )


def cmd_holder(args: argparse.Namespace) -> int:
    from vdc_runtime.holder.server import run_holder

    return run_holder(args.socket.absolute())


def _add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse what Placemat ignores (unknown keys, keys of another volume kind, a"
        " bridge given its network address) instead of warning about it",
    )


def cmd_runner(args: argparse.Namespace) -> int:
    from vdc_runtime.runner import run_runner

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("vdc runner: no command; usage: vdc runner --name NAME -- COMMAND [ARGS...]",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if not args.name or "/" in args.name or args.name in (".", ".."):
        print(f"vdc runner: {args.name!r} cannot name a state file", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_runner(args.name, args.state_dir, command, args.kill_after))


def _client(args: argparse.Namespace, method: str, path: str, body: object = None) -> object:
    from vdc_runtime.client import call

    return call(args.endpoint, method, path, body)


def cmd_node_list(args: argparse.Namespace) -> int:
    return _list(args, "/nodes", lambda node: node["name"])


def cmd_node_show(args: argparse.Namespace) -> int:
    print(
        json.dumps(_client(args, "GET", f"/nodes/{args.node}"), indent=2 if args.pretty else None)
    )
    return EXIT_OK


def cmd_node_action(args: argparse.Namespace) -> int:
    _client(args, "POST", f"/nodes/{args.node}/{args.action}")
    return EXIT_OK


def cmd_node_enter(args: argparse.Namespace) -> int:
    from vdc_runtime.client import enter

    node = _client(args, "GET", f"/nodes/{args.node}")
    assert isinstance(node, dict)
    enter(Path(node["socket_path"]), args.node)
    return EXIT_OK


def cmd_node_console_log(args: argparse.Namespace) -> int:
    from vdc_runtime.client import fetch_log, show_log

    node = _client(args, "GET", f"/nodes/{args.node}")
    assert isinstance(node, dict)
    path = Path(node["console_log"])
    if path.exists():
        show_log(path, args.follow)
    else:  # another container of a VDC pod (a runner): the agent's files are not here
        fetch_log(args.endpoint, args.node, args.follow)
    return EXIT_OK


def cmd_keep(args: argparse.Namespace) -> int:
    answer = _client(args, "POST", "/keep", {"for": args.duration})
    assert isinstance(answer, dict)
    print(f"kept until {answer['keep_until']}")
    return EXIT_OK


def cmd_forward_add(args: argparse.Namespace) -> int:
    netns, sep, rest = args.target.partition(":")
    host, sep2, port = rest.rpartition(":")
    if not (sep and sep2 and port.isdigit() and host):
        print(f"vdc forward add: {args.target!r} is not NETNS:HOST:PORT", file=sys.stderr)
        return EXIT_USAGE
    body = {"local_port": args.local_port, "netns": netns, "remote_host": host,
            "remote_port": int(port), "bind": args.bind}  # fmt: skip
    _client(args, "POST", "/forwards", body)
    return EXIT_OK


def _list(args: argparse.Namespace, path: str, line: Callable[[dict[str, str]], str]) -> int:
    """GET `path`: the list as JSON with --json, else one `line` per item."""
    items = _client(args, "GET", path)
    assert isinstance(items, list)
    if args.json:
        print(json.dumps(items))
    else:
        for item in items:
            print(line(item))
    return EXIT_OK


def cmd_forward_list(args: argparse.Namespace) -> int:
    def line(f: dict[str, str]) -> str:
        return f"{f['local_port']} {f['netns']}:{f['remote_host']}:{f['remote_port']}"

    return _list(args, "/forwards", line)


def cmd_forward_delete(args: argparse.Namespace) -> int:
    _client(args, "DELETE", f"/forwards/{args.local_port}")
    return EXIT_OK


def fault_body(args: argparse.Namespace) -> dict[str, object]:
    """The JSON body of `POST /faults` for `vdc fault add ...`; the API checks it (this
    side may run with the standard library alone)."""
    body: dict[str, object] = {"kind": args.kind}
    if args.kind == "link":
        body["target"] = args.target
        if args.down:
            body["down"] = True
        for key in ("loss", "rate", "delay", "jitter", "direction"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
    elif args.kind == "partition":
        body["between"] = [n for n in args.between.split(",") if n]
        body["and"] = [n for n in args.and_.split(",") if n]
    elif args.kind == "machine":
        body["target"] = args.target
        if args.slow_disk is not None:
            body |= {"effect": "slow-disk", "volume": args.slow_disk}
            body |= {k: getattr(args, k) for k in ("iops", "bps") if getattr(args, k) is not None}
        else:
            body["effect"] = "power-loss" if args.power_loss else "hang"
    else:
        body["target"] = args.target
        if args.slow is not None:
            body |= {"effect": "slow"} | ({"delay": args.slow} if args.slow != "" else {})
        else:
            body["effect"] = "unresponsive" if args.unresponsive else "errors"
    if args.duration is not None:
        body["for"] = args.duration
    return body


def cmd_fault_add(args: argparse.Namespace) -> int:
    fault = _client(args, "POST", "/faults", fault_body(args))
    assert isinstance(fault, dict)
    print(f"{fault['id']} {fault['summary']}")
    return EXIT_OK


def cmd_fault_list(args: argparse.Namespace) -> int:
    return _list(args, "/faults", lambda fault: f"{fault['id']} {fault['summary']}")


def cmd_fault_clear(args: argparse.Namespace) -> int:
    if args.all == (args.id is not None):
        print("vdc fault clear: give one fault ID, or --all", file=sys.stderr)
        return EXIT_USAGE
    if args.all:
        cleared = _client(args, "DELETE", "/faults")
        assert isinstance(cleared, dict)
        print(f"cleared {len(cleared['cleared'])} faults")
    else:
        _client(args, "DELETE", f"/faults/{args.id}")
    return EXIT_OK


def _add_fault_commands(sub: argparse._SubParsersAction, endpoint: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    fault = sub.add_parser("fault", help="faults on demand: links, partitions, machines, BMCs")
    fsub = fault.add_subparsers(dest="fault_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False, parents=[endpoint])
    common.add_argument("--for", dest="duration", metavar="DURATION",
                        help="undo the fault by itself after this long (60s, 5m, 1h)")  # fmt: skip
    add = fsub.add_parser("add", help="apply a fault; prints its ID")
    kinds = add.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = kinds.add_parser("link", parents=[common],
                         help="NAME:ethI or NAME:NETWORK of a node or namespace")  # fmt: skip
    p.add_argument("target", metavar="NAME:INTERFACE")
    p.add_argument("--down", action="store_true", help="carrier lost, as a pulled cable")
    p.add_argument("--loss", metavar="PERCENT", help="frames dropped, e.g. 30%%")
    p.add_argument("--rate", help="rate limit in tc's units, e.g. 10mbit")
    p.add_argument("--delay", help="needs sch_netem in the kernel, e.g. 100ms")
    p.add_argument("--jitter", help="varies the delay, e.g. 10ms")
    p.add_argument("--direction", choices=("both", "in", "out"),
                   help="in: towards the node or namespace; out: what it sends")  # fmt: skip
    p = kinds.add_parser("partition", parents=[common],
                         help="no traffic between two sets of nodes and namespaces")  # fmt: skip
    p.add_argument("--between", required=True, metavar="A,B,...")
    p.add_argument("--and", dest="and_", required=True, metavar="C,D,...")
    p = kinds.add_parser("machine", parents=[common], help="a node loses power, hangs, or slows")
    p.add_argument("target", metavar="NODE")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--power-loss", action="store_true", help="QEMU gone; power on boots it")
    what.add_argument("--hang", action="store_true", help="vCPUs stopped, the BMC answers")
    what.add_argument("--slow-disk", metavar="VOLUME", help="throttle one volume's I/O")
    p.add_argument("--iops", type=int, help="with --slow-disk (default 10)")
    p.add_argument("--bps", type=int, help="with --slow-disk: bytes per second")
    p = kinds.add_parser("bmc", parents=[common], help="a node's BMC stops answering or fails")
    p.add_argument("target", metavar="NODE")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--unresponsive", action="store_true", help="no answer at all")
    what.add_argument("--slow", nargs="?", const="", metavar="DELAY",
                      help="answer after DELAY (default 5s)")  # fmt: skip
    what.add_argument("--errors", action="store_true",
                      help="IPMI Node Busy (0xC0), Redfish 503")  # fmt: skip
    for p in kinds.choices.values():
        p.set_defaults(func=cmd_fault_add)
    p = fsub.add_parser("list", parents=[endpoint], help="the active faults")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fault_list)
    p = fsub.add_parser("clear", parents=[endpoint], help="undo one fault, or --all")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_fault_clear)


NODE_ACTIONS = ("start", "stop", "restart", "reset", "shutdown", "nmi")


def _add_client_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument("--endpoint", default="http://localhost:10808",
                          help="vdc API (default http://localhost:10808)")  # fmt: skip

    node = sub.add_parser("node", help="machines of the running data center (like pmctl2 node)")
    nsub = node.add_subparsers(dest="node_command", required=True, metavar="COMMAND")
    p = nsub.add_parser("list", parents=[endpoint], help="node names, or --json for everything")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_node_list)
    p = nsub.add_parser("show", parents=[endpoint], help="one node's status as JSON")
    p.add_argument("node")
    p.add_argument("--pretty", action="store_true")
    p.set_defaults(func=cmd_node_show)
    p = nsub.add_parser(
        "action", parents=[endpoint], help="power a node: " + ", ".join(NODE_ACTIONS)
    )
    p.add_argument("action", choices=NODE_ACTIONS)
    p.add_argument("node")
    p.set_defaults(func=cmd_node_action)
    p = nsub.add_parser(
        "enter", parents=[endpoint], help="attach to the serial console (leave: Ctrl-])"
    )
    p.add_argument("node")
    p.set_defaults(func=cmd_node_enter)
    p = nsub.add_parser("console-log", parents=[endpoint], help="print what the console showed")
    p.add_argument("node")
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=cmd_node_console_log)

    p = sub.add_parser(
        "keep", parents=[endpoint],
        help="in a VDC's job: keep the VDC at least this long after now (e.g. 2h), to debug",
    )  # fmt: skip
    p.add_argument("duration", help="e.g. 30m, 2h, 1h30m")
    p.set_defaults(func=cmd_keep)

    fwd = sub.add_parser("forward", help="TCP forwards from the host into a namespace")
    fsub = fwd.add_subparsers(dest="forward_command", required=True, metavar="COMMAND")
    p = fsub.add_parser("add", parents=[endpoint], help="forward LOCAL_PORT to NETNS:HOST:PORT")
    p.add_argument("local_port", type=int)
    p.add_argument("target", metavar="NETNS:HOST:PORT")
    p.add_argument("--bind", default="127.0.0.1", help="host address to listen on")
    p.set_defaults(func=cmd_forward_add)
    p = fsub.add_parser("list", parents=[endpoint])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forward_list)
    p = fsub.add_parser("delete", parents=[endpoint])
    p.add_argument("local_port", type=int)
    p.set_defaults(func=cmd_forward_delete)

    _add_fault_commands(sub, endpoint)


def _snapshots(args: argparse.Namespace) -> SnapshotStore:
    from vdc_runtime.snapshot.store import SnapshotStore

    return SnapshotStore(args.data_dir.absolute() / "snapshots")


def _human_size(size: int) -> str:
    """As `ls -h` writes it: 1023B, 1.5K, 12M."""
    value, power = float(size), 0
    while value >= 1024 and power < 4:
        value, power = value / 1024, power + 1
    if power == 0:
        return f"{size}B"
    return f"{value:.{1 if value < 10 else 0}f}{'KMGT'[power - 1]}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_snapshot_save(args: argparse.Namespace) -> int:
    saved = _client(args, "POST", "/snapshots", {"name": args.name, "stop": args.stop})
    assert isinstance(saved, dict)
    print(f"snapshot {saved['name']}: {len(saved['machines'])} machines,"
          f" {saved['size'] / (1 << 20):.1f} MiB in {saved['duration_s']:.1f} s")  # fmt: skip
    return EXIT_OK


def cmd_snapshot_list(args: argparse.Namespace) -> int:
    import time

    manifests = _snapshots(args).list()
    if args.json:
        print(json.dumps([{"name": m.name, "created_at": m.created_at, "group": m.group,
                           "machines": sorted(m.machines), "size": m.size}
                          for m in manifests]))  # fmt: skip
        return EXIT_OK
    rows = [("NAME", "CREATED", "MACHINES", "SIZE")]
    rows += [
        (m.name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.created_at)),
         str(len(m.machines)), _human_size(m.size))
        for m in manifests
    ]  # fmt: skip
    print(_table(rows))
    return EXIT_OK


def cmd_snapshot_show(args: argparse.Namespace) -> int:
    import dataclasses

    manifest = _snapshots(args).show(args.name)
    print(json.dumps(dataclasses.asdict(manifest), indent=2 if args.pretty else None))
    return EXIT_OK


def cmd_snapshot_verify(args: argparse.Namespace) -> int:
    problems = _snapshots(args).verify(args.name)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return EXIT_FAILED
    print(f"snapshot {args.name}: every file as its manifest says")
    return EXIT_OK


def cmd_snapshot_delete(args: argparse.Namespace) -> int:
    _snapshots(args).delete(args.name)
    return EXIT_OK


def cmd_snapshot_export(args: argparse.Namespace) -> int:
    _snapshots(args).export(args.name, args.file)
    return EXIT_OK


def cmd_snapshot_import(args: argparse.Namespace) -> int:
    manifest = _snapshots(args).import_(args.file, args.name)
    print(manifest.name)
    return EXIT_OK


def _add_snapshot_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    # Commands that work on the files alone share --data-dir; one that needs the running
    # data center (taking a snapshot) takes --endpoint instead, beside them.
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data-dir", type=Path, default=Path("/var/lib/vdc"),
                          help="where snapshots are kept, in snapshots/ (default /var/lib/vdc,"
                               " as vdc run's)")  # fmt: skip

    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument("--endpoint", default="http://localhost:10808",
                          help="vdc API (default http://localhost:10808)")  # fmt: skip

    snap = sub.add_parser("snapshot", help="snapshots of a whole data center, kept in the data dir")
    ssub = snap.add_subparsers(dest="snapshot_command", required=True, metavar="COMMAND")
    p = ssub.add_parser(
        "save",
        parents=[endpoint],
        help="save the running data center: every machine paused at once, its RAM, devices,"
        " disks and UEFI variables saved, then resumed",
    )
    p.add_argument("name")
    p.add_argument("--stop", action="store_true",
                   help="leave the machines paused and end the run once saved")  # fmt: skip
    p.set_defaults(func=cmd_snapshot_save)
    p = ssub.add_parser("list", parents=[data_dir], help="every snapshot, oldest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_snapshot_list)
    p = ssub.add_parser("show", parents=[data_dir], help="a snapshot's manifest as JSON")
    p.add_argument("name")
    p.add_argument("--pretty", action="store_true")
    p.set_defaults(func=cmd_snapshot_show)
    p = ssub.add_parser(
        "verify",
        parents=[data_dir],
        help="check every file's size and checksum against its manifest",
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_snapshot_verify)
    p = ssub.add_parser("delete", parents=[data_dir])
    p.add_argument("name")
    p.set_defaults(func=cmd_snapshot_delete)
    p = ssub.add_parser("export", parents=[data_dir],
                        help="write a snapshot into one file (tar, zstd-compressed)")  # fmt: skip
    p.add_argument("name")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_snapshot_export)
    p = ssub.add_parser("import", parents=[data_dir],
                        help="take in a file export wrote; prints the snapshot's name")  # fmt: skip
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="keep it under this name instead of its own")
    p.set_defaults(func=cmd_snapshot_import)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdc", description="Virtual data centers for CI.")
    parser.add_argument("--version", action="version", version=f"vdc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="build a data center from YAML files and run it until stopped")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_strict(run)
    run.add_argument(
        "--run-dir",
        type=Path,
        default=Path("/run/vdc"),
        help="sockets, ledger and lock of this run (default /run/vdc)",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/var/lib/vdc"),
        help="volumes and NVRAM kept across runs (default /var/lib/vdc)",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("/var/cache/vdc"),
        help="downloaded images and validated specs (default /var/cache/vdc)",
    )
    run.add_argument(
        "--listen-addr",
        default="127.0.0.1:10808",
        help="REST API address (default 127.0.0.1:10808)",
    )
    after_kill = run.add_mutually_exclusive_group()
    after_kill.add_argument(
        "--force", action="store_true", help="first remove what a killed earlier run left behind"
    )
    after_kill.add_argument(
        "--adopt",
        action="store_true",
        help="take over the data center a killed earlier run with this run dir left running"
        " (same spec): its machines and apps keep running",
    )
    run.add_argument(
        "--restore",
        metavar="SNAPSHOT",
        help="start the machines from this snapshot (vdc snapshot save), where they were"
        " paused, instead of booting them; the network, init-scripts and apps start afresh",
    )
    run.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto uses KVM only where stock guests can run on it",
    )
    run.add_argument(
        "--recreate-volumes",
        action="store_true",
        help="rebuild volume files instead of reusing those of earlier runs",
    )
    group = run.add_argument_group(
        "groups", "build one group of a data center split in groups, on this host"
    )
    group.add_argument("--group", metavar="NAME", help="the group this host builds")
    group.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="GROUP=ADDRESS",
        help="another group's host: its stretched networks are tunnelled there (repeat for"
        " each group this one shares a network with)",
    )
    group.add_argument(
        "--tunnel-address",
        metavar="ADDRESS",
        help="this host's tunnel address (default: its source address toward the peers)",
    )
    group.add_argument(
        "--vxlan-port", type=int, default=4789, metavar="PORT", help="UDP port (default 4789)"
    )
    run.set_defaults(func=cmd_run)

    convert = sub.add_parser(
        "convert", help="print a VirtualDataCenter manifest for Placemat YAML files"
    )
    convert.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_strict(convert)
    convert.add_argument("--name", required=True, help="the VirtualDataCenter's name")
    convert.add_argument("--namespace", help="its namespace (default: kubectl's)")
    convert.add_argument(
        "--configmap",
        metavar="NAME",
        help="put files larger than --inline-max into a ConfigMap of this name (printed"
        " first) instead of inline",
    )
    convert.add_argument(
        "--inline-max",
        type=int,
        default=4096,
        metavar="BYTES",
        help="with --configmap, the largest file kept inline (default 4096)",
    )
    convert.set_defaults(func=cmd_convert)

    env = os.environ
    agent = sub.add_parser(
        "agent", help="run a VirtualDataCenter's data center in its pod and report its status"
    )
    agent.add_argument("--name", default=env.get("VDC_NAME"), help="the VDC (env VDC_NAME)")
    agent.add_argument("--namespace", default=env.get("VDC_NAMESPACE"),
                       help="its namespace (env VDC_NAMESPACE)")  # fmt: skip
    agent.add_argument("--pod", default=env.get("POD_NAME"), help="this pod (env POD_NAME)")
    agent.add_argument("--pod-ip", default=env.get("POD_IP"),
                       help="this pod's address, for published BMCs (env POD_IP)")  # fmt: skip
    agent.add_argument("--group", help="build this group of a VDC of several (its pod's)")
    agent.add_argument("--group-assignment", default=env.get("VDC_GROUP_ASSIGNMENT"),
                       help="every member's automatic group, as the operator packed them"
                            " (env VDC_GROUP_ASSIGNMENT)")  # fmt: skip
    agent.add_argument("--run-dir", type=Path, default=Path("/run/vdc"))
    agent.add_argument("--data-dir", type=Path, default=Path("/var/lib/vdc"))
    agent.add_argument("--cache-dir", type=Path, default=Path("/var/cache/vdc"))
    agent.add_argument("--sources-dir", type=Path,
                       default=Path(env.get("VDC_SOURCES_DIR", "/etc/vdc/sources")),
                       help="where the operator mounts ConfigMap and Secret keys")  # fmt: skip
    agent.add_argument("--listen-addr", default="127.0.0.1:10808", help="REST API address")
    agent.add_argument("--metrics-port", type=int,
                       default=int(env.get("VDC_METRICS_PORT", "9090")),
                       help="Prometheus metrics and /healthz (all addresses)")  # fmt: skip

    def env_path(name: str) -> Path | None:
        return Path(env[name]) if env.get(name) else None

    agent.add_argument("--holder", type=Path, default=env_path("VDC_HOLDER_SOCKET"),
                       help="the holder's socket (env VDC_HOLDER_SOCKET): machines and apps"
                            " are started there, and survive a restart of the agent")  # fmt: skip

    agent.add_argument("--snapshots-dir", type=Path, default=env_path("VDC_SNAPSHOTS_DIR"),
                       help="the namespace's snapshot claim, mounted (env VDC_SNAPSHOTS_DIR):"
                            " VirtualDataCenterSnapshots of this VDC are saved there")  # fmt: skip
    agent.add_argument(
        "--snapshots-claim",
        default=env.get("VDC_SNAPSHOTS_CLAIM", ""),
        help="that claim's name (env VDC_SNAPSHOTS_CLAIM)",
    )
    agent.add_argument(
        "--restore",
        default=env.get("VDC_RESTORE", ""),
        metavar="NAME",
        help="start the machines from this snapshot (env VDC_RESTORE)",
    )
    agent.add_argument(
        "--restore-dir",
        type=Path,
        default=env_path("VDC_RESTORE_DIR"),
        help="where snapshot NAME is (env VDC_RESTORE_DIR)",
    )
    agent.add_argument(
        "--bmc-password-file",
        type=Path,
        default=env_path("VDC_BMC_PASSWORD_FILE"),
        help="the BMCs' account 'admin' has this password when the spec names no users"
        " (env VDC_BMC_PASSWORD_FILE)",
    )
    agent.add_argument(
        "--bmc-secret",
        default=env.get("VDC_BMC_SECRET", ""),
        help="the Secret holding it, for the status (env VDC_BMC_SECRET)",
    )
    agent.set_defaults(func=cmd_agent)

    holder = sub.add_parser(
        "holder",
        help="start the agent's machines and apps and keep them, and its network namespaces,"
        " while the agent's container restarts (a container of its pod)",
    )
    holder.add_argument("--socket", type=Path, default=Path("/run/vdc/holder.sock"))
    holder.set_defaults(func=cmd_holder)

    runner = sub.add_parser(
        "runner", help="run a GitHub Actions runner and record its state for the agent"
    )
    runner.add_argument("--name", required=True, help="its state file is STATE_DIR/NAME.json")
    runner.add_argument("--state-dir", type=Path, default=Path("/run/vdc-runners"),
                        help="where the state file goes (default /run/vdc-runners)")  # fmt: skip
    runner.add_argument("--kill-after", type=float, default=25.0, metavar="SECONDS",
                        help="SIGKILL the runner this long after passing on SIGTERM")  # fmt: skip
    runner.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")
    runner.set_defaults(func=cmd_runner)

    validate = sub.add_parser(
        "validate",
        help="check Placemat YAML files or VirtualDataCenter manifests; report every error",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _add_strict(validate)
    validate.set_defaults(func=cmd_validate)
    graph = sub.add_parser(
        "graph",
        help="draw the topology: networks as buses, namespaces as routers, machines and their"
        " NICs, the BMC network and groups; from spec files or a running data center",
    )
    graph.add_argument("files", nargs="*", type=Path, metavar="FILE")
    _add_strict(graph)
    graph.add_argument("--endpoint", metavar="URL",
                       help="draw the running data center of this vdc API instead, its"
                            " machines coloured by state (http://localhost:10808)")  # fmt: skip
    graph.add_argument("--format", choices=("svg", "dot", "mermaid", "json"), default="svg",
                       help="svg (default, drawn by vdc itself), dot (graphviz), mermaid"
                            " (Markdown) or json")  # fmt: skip
    graph.add_argument("-o", "--output", type=Path, metavar="OUT",
                       help="write here instead of standard output")  # fmt: skip
    graph.add_argument("--title", help="the picture's title (default: the files or the URL)")
    graph.set_defaults(func=cmd_graph)
    _add_client_commands(sub)
    _add_snapshot_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(verbose=args.verbose)
    try:
        return int(args.func(args))
    except (OSError, ValueError, RuntimeError) as exc:
        # The client (urllib, http.client) is loaded by the commands that call an API, not
        # by `vdc run` on its way to its first answer; a ClientError comes only from those.
        client = sys.modules.get("vdc_runtime.client")
        if client is not None and isinstance(exc, client.ClientError):
            print(f"vdc: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if isinstance(exc, RuntimeError) or args.command != "snapshot":
            raise
        # A snapshot missing, damaged or in the way: said in one line, as the client's errors.
        print(f"vdc snapshot {args.snapshot_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
