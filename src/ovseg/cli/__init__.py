"""The ``ovseg`` command line: a thin shell over the public API, one module per subcommand.

A user mistake (missing file, bad key, wrong checkpoint) ends with one line on stderr and exit status 2. Every
subcommand takes -v / -q and lists its defaults in --help; ``ovseg --version`` names the installed version.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import OvsegError
from .common import HelpFormatter, cli_logging, common_options, package_version

# subcommand -> module under ovseg.cli exposing HELP, EXAMPLE, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": "demo",
    "eval": "evaluate",
    "train": "train",
    "quickstart": "quickstart",
    "pretrain-ssl": "pretrain_ssl",
    "verify-reference": "verify_reference",
    "convert": "convert",
    "convert-coco-object": "convert_coco_object",
    "prepare": "prepare",
    "serve": "serve",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovseg", description="Open-vocabulary semantic segmentation "
                                     "learned from captions (OVSegmentor, CVPR 2023).")
    parser.add_argument("--version", action="version", version=f"ovseg {package_version()}")
    common = [common_options()]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module_name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=common,
                           epilog=f"example:\n  {module.EXAMPLE}", formatter_class=HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet and hasattr(args, "no_progress"):
        args.no_progress = True  # the subcommands with a progress bar take --no-progress
    try:
        with cli_logging(args.verbose, args.quiet):
            return int(args.run(args) or 0)
    except OvsegError as e:
        print(f"ovseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ovseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
