"""The command line's habits: ``ovseg --version``, -v / -q on every subcommand, defaults in every --help, and
warnings and errors that say so on stderr while progress messages stay bare."""

from __future__ import annotations

import argparse
import logging

import pytest
from test_eval_datasets import write_voc

import ovseg
from ovseg.cli import COMMANDS, build_parser, main
from ovseg.cli.common import LevelPrefixFormatter

SMALL = ["evaluate.seg.short_side=224", "evaluate.seg.crop_size=224", "evaluate.seg.stride=224"]  # one window


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every registered subcommand whose module is present, by name."""
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def help_of(command: str, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "200")  # one option per line: "(default: …)" is never wrapped
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ovseg {ovseg.__version__}" == "ovseg 0.1.0"


def test_every_subcommand_takes_verbose_and_quiet(capsys, monkeypatch):
    names = set(subcommands())
    assert {"demo", "eval", "train", "serve", "convert"} <= names <= set(COMMANDS)
    for name in sorted(names):
        text = help_of(name, capsys, monkeypatch)
        assert "-v, --verbose" in text and "-q, --quiet" in text, name
        assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    eval_args = ["eval", "--resume", "x.pth"]
    assert build_parser().parse_args([*eval_args, "-q"]).quiet
    assert build_parser().parse_args([*eval_args, "--verbose"]).verbose
    with pytest.raises(SystemExit):
        build_parser().parse_args([*eval_args, "-v", "-q"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_help_lists_defaults(capsys, monkeypatch):
    assert "(default: mmseg)" in help_of("eval", capsys, monkeypatch)
    assert "images drawn by --save-overlays (default: 8)" in help_of("eval", capsys, monkeypatch)
    prepare = help_of("prepare", capsys, monkeypatch)
    assert "(default: 10000)" in prepare and "seed of the pair index (default: 0)" in prepare
    assert "(default: cpu)" in help_of("verify-reference", capsys, monkeypatch)
    assert "example:\n  ovseg serve" in help_of("serve", capsys, monkeypatch)  # the epilog keeps its lines


def test_warnings_and_errors_carry_their_level():
    formatter = LevelPrefixFormatter("%(message)s")

    def shown(level: int) -> str:
        return formatter.format(logging.LogRecord("ovseg.x", level, __file__, 1, "5 images found", None, None))

    assert shown(logging.INFO) == "5 images found"
    assert shown(logging.WARNING) == "warning: 5 images found"
    assert shown(logging.ERROR) == "error: 5 images found"


def set_logging_aside(monkeypatch) -> None:
    """The root logger as a fresh process has it: pytest's capture handlers (added per test phase) set aside."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)


@pytest.mark.parametrize("flag", [None, "-q"])
def test_eval_log_lines_on_stderr(flag, tmp_path, tiny_checkpoint, capsys, monkeypatch):
    root = write_voc(tmp_path / "VOC2012")  # 2 images: a warning (the standard set has 1449)
    argv = ["eval", "--dataset", "voc", "--data-root", str(tmp_path), "--resume", str(tiny_checkpoint),
            "--workers", "0", "--save-overlays", str(tmp_path / "show"), "--overlay-count", "1", "--opts", *SMALL]
    set_logging_aside(monkeypatch)
    assert main(argv + ([flag] if flag else [])) == 0
    err = capsys.readouterr().err
    assert "warning: voc: 2 images found; the standard validation set has 1449" in err.splitlines()
    assert (f"voc: using {root}" in err.splitlines()) == (flag is None)  # information: bare, and not under -q
    assert ("voc:" in err and "%|" in err) == (flag is None)  # the progress bar only without -q
    assert logging.getLogger("ovseg").level == logging.NOTSET  # levels restored after the command
    assert (tmp_path / "show" / "2007_000033.png").is_file() and not (tmp_path / "show" / "2007_000042.png").exists()
