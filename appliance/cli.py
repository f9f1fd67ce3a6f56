"""The `appliance` command."""
from __future__ import annotations

import argparse
import asyncio
import sys

from . import __version__, logs, runner
from .config import EMBEDDED, ConfigError, default_path, load_config, summary
from .config.values import Invalid, parse_seconds
from .reload import ConfigSource

EXIT_CONFIG = 2


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the TOML configuration (default: the one the image's boot step chose in /run/appliance/appliance.toml, "
             "else /etc/appliance/appliance.toml, else the embedded default)",
    )


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format on stderr")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")


def _seconds(text: str) -> float:
    try:
        return parse_seconds(float(text))
    except (ValueError, Invalid) as e:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, not {text!r}") from e


def _load(path: str | None):
    """The configuration, or None after printing every problem in it."""
    path = path or default_path()
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"appliance: the configuration {e.source} has {len(e.problems)} problem(s):", file=sys.stderr)
        print(e, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from .workers import plan

    worker = plan.from_environment()
    logs.configure(args.log_format, args.log_level, None if worker is None else worker.index)
    source = ConfigSource(args.config or default_path(), args.drain_time, worker)
    config = _load(source.path)
    if config is None:
        return EXIT_CONFIG
    if worker is None and plan.processes(config) > 1:
        return _supervise(args, source, config)
    return runner.run(runner.assemble(source.over(config), source))


def _supervise(args: argparse.Namespace, source: ConfigSource, config) -> int:
    """The box as worker processes (appliance/workers/), each `appliance run` on the same file."""
    from .workers.supervisor import Supervisor

    if source.path is None:
        print("appliance: workers read the configuration file again, and there is none: "
              "set [sfu] workers and [turn] workers to 1", file=sys.stderr)
        return EXIT_CONFIG
    argv = ["run", "--config", source.path, "--log-format", args.log_format, "--log-level", args.log_level]
    if args.drain_time is not None:
        argv += ["--drain-time", str(args.drain_time)]
    runner.raise_open_files_limit()
    return runner.run_loop(Supervisor(source.over(config), argv).run())


def cmd_net(args: argparse.Namespace) -> int:
    from .netcli import bird_conf, net_apply, net_show

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    return {"apply": net_apply, "show": net_show, "bird-conf": bird_conf}[args.action](config)


def cmd_drain(args: argparse.Namespace) -> int:
    from . import control

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        answer = control.request(config, args.command)
    except control.Untrusted as e:
        print(f"appliance: refusing the control socket: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"appliance: no box answers on its control socket {control.socket_path(config)}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print("draining" if answer.get("draining") else "serving")
    return 0 if answer.get("ok") else 1


def cmd_reload(args: argparse.Namespace) -> int:
    from . import control, reload

    config = _load(args.config)
    if config is None:
        print("appliance: not reloaded, nothing changed", file=sys.stderr)
        return EXIT_CONFIG
    try:
        answer = control.request(config, "reload", timeout=reload.ANSWER_TIMEOUT)
    except control.Untrusted as e:
        print(f"appliance: refusing the control socket: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"appliance: no box answers on its control socket {control.socket_path(config)}: {e.strerror or e} "
              "(the box is found by [api] listen: a changed one needs a restart)", file=sys.stderr)
        return 1
    print("\n".join(reload.describe(answer)), file=sys.stdout if answer.get("ok") else sys.stderr)
    return 0 if answer.get("ok") else EXIT_CONFIG


def cmd_status(args: argparse.Namespace) -> int:
    from . import control, status
    from netconfig.bgp_state import read_bgp

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    box, error = None, None
    try:
        box = control.request(config, "status")
    except control.Untrusted as e:
        error = f"refusing the control socket: {e}"
    except OSError as e:
        error = f"control socket {control.socket_path(config)}: {e.strerror or e}"
    print(status.render(box, error, read_bgp(config) if config.bgp else None))
    return 0 if box is not None else 1


def cmd_announce(args: argparse.Namespace) -> int:
    from .announce import agent

    logs.configure(args.log_format, args.log_level)
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.bgp is None:
        print("appliance: announce needs a [bgp] table in the configuration", file=sys.stderr)
        return EXIT_CONFIG
    if args.withdraw:
        return agent.withdraw(config)
    return asyncio.run(agent.serve(config))


def cmd_check_config(args: argparse.Namespace) -> int:
    from .workers import plan

    config = _load(args.file)
    if config is None:
        return EXIT_CONFIG
    print(f"{args.file or EMBEDDED}: OK")
    for line in summary(config):
        print(f"  {line}")
    # On this machine: one per core (the default) depends on where it runs.
    sfu, turn = plan.counts(config)
    print(f"  processes here: {plan.processes(config)} (SFU in {sfu}, TURN in {turn})")
    return 0


def cmd_boot(args: argparse.Namespace) -> int:
    from . import boot

    return boot.command(args)


def cmd_update(args: argparse.Namespace) -> int:
    from .update import command

    return command.update(args)


def cmd_reboot(args: argparse.Namespace) -> int:
    from .update import command

    return command.reboot(args)


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="appliance", description="Edgecall: WebRTC SFU and TURN on anycast.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the box in the foreground")
    _add_config_option(run)
    _add_log_options(run)
    run.add_argument("--drain-time", type=_seconds, metavar="SECONDS",
                     help="on SIGTERM, report draining and keep serving this long (overrides [drain] time)")
    run.set_defaults(func=cmd_run)

    net = sub.add_parser("net", help="the host's network state and BIRD's configuration")
    net.add_argument("action", choices=("apply", "show", "bird-conf"),
                     help="apply: make the kernel match the config; show: wanted, actual and the difference; "
                          "bird-conf: print bird.conf")
    _add_config_option(net)
    net.set_defaults(func=cmd_net)

    for name, text in (("drain", "report draining (the agent withdraws the prefixes) and keep serving"),
                       ("undrain", "stop draining")):
        toggle = sub.add_parser(name, help=text)
        _add_config_option(toggle)
        toggle.set_defaults(func=cmd_drain)

    reload = sub.add_parser("reload", help="make the running box re-read its configuration file and apply what can "
                                           "change live (the same as SIGHUP); say which changed keys need a restart")
    _add_config_option(reload)
    reload.set_defaults(func=cmd_reload)

    show = sub.add_parser("status", help="BGP sessions, announced prefixes, service health and drain state")
    _add_config_option(show)
    show.set_defaults(func=cmd_status)

    announce = sub.add_parser("announce", help="run the health agent that announces the prefixes while the box is healthy")
    _add_config_option(announce)
    announce.add_argument("--withdraw", action="store_true", help="withdraw the prefixes once and exit")
    _add_log_options(announce)
    announce.set_defaults(func=cmd_announce)

    check = sub.add_parser("check-config", help="validate a configuration file and summarize it")
    check.add_argument("file", metavar="FILE", nargs="?", help="the file (default: as for --config)")
    check.set_defaults(func=cmd_check_config)

    boot = sub.add_parser("boot", help="on the image: choose the configuration the services start with, and say it on the console")
    boot.add_argument("action", choices=("config", "stage"),
                      help="config: at boot; stage: the operator's edited file for a reload, when it validates")
    boot.set_defaults(func=cmd_boot)

    update = sub.add_parser("update", help="on the image: write a signed update bundle to the other root slot, "
                                           "boot it once, keep it once healthy (else the box goes back by itself)")
    update.add_argument("source", metavar="FILE|URL", nargs="?", help="the bundle (build/edgecall-VERSION.update)")
    update.add_argument("--no-reboot", action="store_true", help="write and arm the slot, reboot later")
    update.add_argument("--status", action="store_true", help="both slots, their versions, which is booted and "
                                                              "which is marked good, and what happened last")
    update.add_argument("--confirm", action="store_true", help="at boot (appliance-update-confirm.service): mark a "
                                                               "slot on trial good once healthy, else reboot back")
    update.add_argument("--deadline", type=_seconds, default=300.0, metavar="SECONDS",
                        help="with --confirm: how long the slot on trial has to become healthy (default 300)")
    _add_config_option(update)
    update.set_defaults(func=cmd_update)

    reboot = sub.add_parser("reboot", help="drain (the prefixes are withdrawn, [drain] time passes), then reboot")
    _add_config_option(reboot)
    reboot.set_defaults(func=cmd_reboot)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
