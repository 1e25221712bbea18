"""atomic_write: whole files only, durable before they are published, with the user's permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ovseg.fileio import atomic_write


@pytest.fixture
def umask():
    """os.umask for one test; the process's umask is restored after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_permissions_of_a_normally_created_file(tmp_path, umask, mask, mode):
    """Not mkstemp's 0600: checkpoints and pictures are readable as the user's umask allows."""
    umask(mask)
    path = tmp_path / "out" / "a.txt"
    atomic_write(path, lambda tmp: Path(tmp).write_text("hello"))
    assert path.read_text() == "hello" and stat.S_IMODE(path.stat().st_mode) == mode
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(plain.stat().st_mode) == mode  # what any program would have created


def test_data_and_folder_synced_around_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else str(fd)))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "ckpt.bin"
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"\0" * 1000))
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    if Path("/proc/self/fd").is_dir():
        assert events[0][1].endswith(".tmp") and Path(events[0][1]).parent == tmp_path  # the data, before
        assert events[2][1] == str(tmp_path)  # the folder, after
    assert path.read_bytes() == b"\0" * 1000


def test_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half a fi")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt))
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_fsync_failure_publishes_nothing(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    path = tmp_path / "a.bin"
    with pytest.raises(OSError, match="I/O error"):
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"data"))
    assert list(tmp_path.iterdir()) == []


def test_writers_that_write_by_path_and_an_existing_link(tmp_path):
    """The temporary file is new (never an existing file or link), and a writer may recreate it."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    path = tmp_path / "a.txt"
    path.symlink_to(target)

    def recreate(tmp: str) -> None:
        os.unlink(tmp)
        Path(tmp).write_text("new")

    atomic_write(path, recreate)
    assert not path.is_symlink() and path.read_text() == "new" and target.read_text() == "keep"


def test_a_safetensors_checkpoint_gets_the_umask_permissions(tmp_path, umask):
    """safetensors' writer makes its file 0600 by itself; the published checkpoint still follows the umask."""
    import torch
    from safetensors.torch import save_file

    umask(0o022)
    path = tmp_path / "w.safetensors"
    atomic_write(path, lambda tmp: save_file({"w": torch.zeros(2)}, tmp))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
