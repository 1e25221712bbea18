"""The ``ovseg`` command line: a thin shell over the public API, one module per subcommand.

A user mistake (missing file, bad key, wrong checkpoint) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import OvsegError

# subcommand -> module under ovseg.cli exposing HELP, EXAMPLE, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": "demo",
    "eval": "evaluate",
    "train": "train",
    "quickstart": "quickstart",
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module_name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           epilog=f"example:\n  {module.EXAMPLE}", formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except OvsegError as e:
        print(f"ovseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ovseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
