"""The `appliance` command."""
from __future__ import annotations

import argparse
import sys

from . import __version__, logs, runner
from .config import EMBEDDED, ConfigError, default_path, load_config, summary

EXIT_CONFIG = 2


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the TOML configuration (default: /etc/appliance/appliance.toml when it exists, else the embedded default)",
    )


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
    logs.configure(args.log_format, args.log_level)
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    return runner.run(runner.assemble(config))


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return EXIT_CONFIG
    print(f"{args.file or EMBEDDED}: OK")
    for line in summary(config):
        print(f"  {line}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="appliance", description="Edgecall: WebRTC SFU and TURN on anycast.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the box in the foreground")
    _add_config_option(run)
    run.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format on stderr")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and summarize it")
    check.add_argument("file", metavar="FILE", nargs="?", help="the file (default: as for --config)")
    check.set_defaults(func=cmd_check_config)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
