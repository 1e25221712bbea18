"""Byte offsets of the members of webdataset tar shards, so samples can be read without unpacking.

A shard is a plain (uncompressed) tar; consecutive members sharing a key (the name up to the first dot of
its base name, as webdataset groups them) form one sample: an image (``jpg``/``png``/``webp``…), a caption
(``txt``) and optional metadata (``json``). The index of a shard is an (n, 6) int64 array, one row per
sample: offset and size of the image, caption and json member data, -1 where a member is absent. Sequential
streaming and stage 2's random access to partner images both read through it.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from webdataset.tariterators import base_plus_ext

log = logging.getLogger(__name__)

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
COLUMNS = {"image": 0, "txt": 2, "json": 4}  # column of each member's data offset; its size follows


@dataclass
class ShardIndex:
    """keys: one per sample; table: (n, 6) int64 offsets/sizes (see module docstring)."""

    keys: list[str]
    table: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def _member_kind(ext: str) -> str | None:
    ext = ext.lower()
    if ext in IMAGE_EXTS:
        return "image"
    return ext if ext in ("txt", "json") else None


def scan_tar(path: str | Path) -> ShardIndex:
    """Index a shard by reading its headers only. A truncated shard keeps the samples before the break."""
    keys: list[str] = []
    rows: list[list[int]] = []
    size = os.path.getsize(path)
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if info.offset_data + info.size > size:
                    raise EOFError(f"{info.name} ends past the end of the file")
                _add_member(info, keys, rows)
            if size - tar.offset < 2 * tarfile.BLOCKSIZE:
                raise EOFError("no end-of-archive marker: the file is truncated")
    except (tarfile.TarError, OSError, EOFError) as e:
        log.warning("%s: unreadable after %d samples (%s); the rest of the shard is skipped", path, len(keys), e)
    return ShardIndex(keys, np.asarray(rows, dtype=np.int64).reshape(-1, 6))


def _add_member(info: tarfile.TarInfo, keys: list[str], rows: list[list[int]]) -> None:
    if not info.isreg():
        return
    key, ext = base_plus_ext(info.name)
    kind = _member_kind(ext) if key else None
    if kind is None or os.path.basename(key).startswith("__"):
        return
    if not keys or keys[-1] != key:
        keys.append(key)
        rows.append([-1] * 6)
    col = COLUMNS[kind]
    if rows[-1][col] < 0:  # the first image member of a sample wins
        rows[-1][col: col + 2] = [info.offset_data, info.size]


class MemberReader:
    """Reads byte ranges of tar files, keeping up to ``max_open`` open per process (safe across fork)."""

    def __init__(self, max_open: int = 32):
        self.max_open = max_open
        self._files: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def read(self, path: str, offset: int, size: int) -> bytes:
        """The bytes, or OSError when the range lies outside the file."""
        f = self._open(path)
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError(f"{path}: short read at byte {offset}")
        return data

    def _open(self, path: str):
        if self._pid != os.getpid():  # a forked worker: inherited handles share their position, drop them
            self._files, self._pid = OrderedDict(), os.getpid()
        f = self._files.pop(path, None) or open(path, "rb")  # noqa: SIM115 (kept open in the cache)
        self._files[path] = f
        while len(self._files) > self.max_open:
            self._files.popitem(last=False)[1].close()
        return f

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])
