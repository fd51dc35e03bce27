"""The `vdc` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from vdc_runtime import __version__, logs
from vdc_runtime.spec import DataCenter, SpecErrors, load_files

log = logging.getLogger("vdc")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _load(files: list[Path]) -> DataCenter | None:
    try:
        return load_files(files)
    except SpecErrors as exc:
        print(str(exc), file=sys.stderr)
        count = len(exc.errors)
        print(f"{count} error{'s' if count != 1 else ''}; nothing was created", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    dc = _load(args.files)
    if dc is None:
        return EXIT_FAILED
    names = ", ".join(str(f) for f in args.files)
    print(f"{names}: valid ({dc.summary()})")
    return EXIT_OK


async def _run(dc: DataCenter, args: argparse.Namespace) -> int:
    from vdc_runtime import api
    from vdc_runtime.datacenter import DataCenterRun, RunOptions, StartupError

    try:
        api.parse_listen_addr(args.listen_addr)
    except ValueError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    run = DataCenterRun(
        dc,
        RunOptions(
            run_dir=args.run_dir.absolute(),
            data_dir=args.data_dir.absolute(),
            cache_dir=args.cache_dir.absolute(),
            force=args.force,
        ),
    )
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
        runner = await api.serve(run, args.listen_addr)
        log.info(
            "ready: API on http://%s (Ctrl-C or SIGTERM stops and removes everything)",
            args.listen_addr,
        )
        failed = asyncio.create_task(run.failed.wait())
        await asyncio.wait({stop_wait, failed}, return_when=asyncio.FIRST_COMPLETED)
        if run.failed.is_set():
            log.error("stopping: %s", run.failure)
            exit_code = EXIT_FAILED
        else:
            log.info("stopping")
        failed.cancel()
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


def cmd_run(args: argparse.Namespace) -> int:
    dc = _load(args.files)
    if dc is None:
        return EXIT_FAILED
    if dc.nodes:
        names = ", ".join(n.name for n in dc.nodes[:5])
        print(
            f"vdc run: this version builds networks and namespaces only; the file defines "
            f"Node resources ({names}), which a later release supports. Nothing was created.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return asyncio.run(_run(dc, args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vdc", description="Virtual data centers for CI.")
    parser.add_argument("--version", action="version", version=f"vdc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="build a data center from YAML files and run it until stopped")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
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
        help="downloaded images (default /var/cache/vdc)",
    )
    run.add_argument(
        "--listen-addr",
        default="127.0.0.1:10808",
        help="REST API address (default 127.0.0.1:10808)",
    )
    run.add_argument(
        "--force", action="store_true", help="first remove what a killed earlier run left behind"
    )
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check YAML files and report every error")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(verbose=args.verbose)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
