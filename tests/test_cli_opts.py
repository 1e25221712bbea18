"""``--opts`` may be given more than once in every command that takes it: later ones add, never replace."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from ovseg.cli import build_parser
from ovseg.cli import demo as cli_demo

REPO = Path(__file__).resolve().parents[1]
TWICE = ["--opts", "a=1", "--opts", "b=2", "c=3"]
EXPECTED = ["a=1", "b=2", "c=3"]
KNOWN = {"demo", "eval", "train", "quickstart"}  # at least these take --opts


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _with_opts() -> list[str]:
    return sorted(n for n, p in _subparsers().items() if "--opts" in p._option_string_actions)


def _required(p: argparse.ArgumentParser) -> list[str]:
    """A value for every required option and positional, so that parsing gets as far as --opts."""
    argv = []
    for action in p._actions:
        if action.option_strings and action.required:
            argv += [action.option_strings[0], "x"]
        elif not action.option_strings and action.nargs is None:
            argv.append("x")
    return argv


def test_every_known_command_takes_opts():
    assert set(_with_opts()) >= KNOWN


@pytest.mark.parametrize("command", _with_opts())
def test_opts_given_twice_keeps_both(command):
    argv = [command, *_required(_subparsers()[command]), *TWICE]
    assert build_parser().parse_args(argv).opts == EXPECTED
    assert build_parser().parse_args(argv[:-5]).opts == []  # the default list is not shared between parses


def test_main_demo_keeps_both(monkeypatch):
    seen = []
    monkeypatch.setattr(cli_demo, "run", lambda args: seen.append(args.opts) or 0)
    assert cli_demo.main(TWICE) == 0 and seen == [EXPECTED]


def test_main_seg_keeps_both_and_passes_them_on(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    main_seg = importlib.import_module("main_seg")
    args = main_seg.parse_args(["--cfg", "c.yml", "--resume", "r.pth", *TWICE])
    assert args.opts == EXPECTED
    assert build_parser().parse_args(main_seg.to_eval_argv(args)).opts == EXPECTED
