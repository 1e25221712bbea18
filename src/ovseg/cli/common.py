"""Helpers shared by the subcommands: the options every subcommand takes (-v / -q), the help layout, the log
format, the device."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from ..errors import OvsegError


def resolve_device(name: str | None) -> str:
    """``auto``/None -> cuda when available, else cpu; a CUDA device asked for without CUDA is an error."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OvsegError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return name


def package_version() -> str:
    """The installed ovseg's version (its package metadata), "unknown" when run from an uninstalled tree."""
    try:
        return version("ovseg")
    except PackageNotFoundError:
        return "unknown"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The examples in the epilog keep their lines; each option's help ends with its default, unless it has none
    worth printing (None, False, empty) or its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or action.default in ([], ()) or "default" in text:
            return action.help
        return super()._get_help_string(action)


def common_options() -> argparse.ArgumentParser:
    """A parent parser of the options every subcommand takes: -v (debug messages of ovseg) or -q (warnings and
    errors only, no progress bar)."""
    parent = argparse.ArgumentParser(add_help=False)
    loudness = parent.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also print ovseg's debug messages")
    loudness.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors, no progress bar")
    return parent


class LevelPrefixFormatter(logging.Formatter):
    """Messages as they are, with ``warning: `` / ``error: `` / ``critical: `` before those levels' lines, so that
    a problem stands out among the progress messages."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname.lower()}: {text}" if record.levelno >= logging.WARNING else text


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (not the one at start-up), as
    ``logging.lastResort`` does, so redirections made later (tests, notebooks) see the messages."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(LevelPrefixFormatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns one; the property decides
        pass


@contextmanager
def cli_logging(verbose: bool = False, quiet: bool = False) -> Iterator[None]:
    """Within: INFO and above on stderr, warnings and errors prefixed with their level; ``quiet``: warnings and
    errors only; ``verbose``: ovseg's DEBUG messages too. Like ``logging.basicConfig`` it adds its handler
    only where no logging is set up yet (an application's or pytest's is left alone, ovseg's level excepted).
    The levels are restored on exit, so that calling ``main`` twice in one process starts afresh."""
    root, ovseg = logging.getLogger(), logging.getLogger("ovseg")
    saved = root.level, ovseg.level
    if not root.handlers:
        root.addHandler(StderrHandler())
    if any(isinstance(h, StderrHandler) for h in root.handlers):
        root.setLevel(logging.WARNING if quiet else logging.INFO)
    ovseg.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.NOTSET)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        ovseg.setLevel(saved[1])
