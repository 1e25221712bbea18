"""Files written atomically: a killed run or a power cut never leaves a half-written output or checkpoint.

The temporary file is created the way any new file is (mode 0o666 filtered by the umask, or the folder's
default ACL), so outputs keep the permissions the user chose; tempfile.mkstemp would make them 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, make the data durable, then rename onto ``path``: readers see the old file
    or the whole new one, never a part. ``write`` writes by path (PIL, torch.save, safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what the OS gave a new file here (umask, default ACL)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)  # some writers (safetensors) make their file 0600 whatever the umask
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_json(path: str | Path, value: Any) -> Path:
    """``value`` as indented JSON text (UTF-8, ending with a newline), written by ``atomic_write``."""
    text = json.dumps(value, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return Path(path)


def _create_temporary(path: Path) -> Path:
    """A new, empty hidden file beside ``path``, created with O_EXCL (never an existing file or link)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def _fsync_path(path: Path) -> None:
    """Flush the file's data to disk: the rename must not become durable before the data it points to.
    The file is reopened because ``write`` wrote (and closed) it by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (some platforms and file systems refuse to sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
