"""Readers of caption corpora, the sources of ``StreamingCaptions``:

- ``ShardSource``: webdataset tar shards — ``ovseg prepare`` output (index, entities and pair index
  included) or shards as img2dataset writes them (``KEY.jpg``/``png``/``webp`` + ``KEY.txt`` [+ ``KEY.json``],
  indexed by scanning their headers when opened);
- ``CsvSource``: the original's metafile (spec §3): columns ``image_id`` (path relative to the image root)
  and ``caption``, optionally ``pairindex``/``pairentity`` (stage-2 partners; a row whose cells are malformed
  is a skipped sample, counted like a corrupt image); other columns are ignored;
- ``FolderSource``: image files with a same-name ``.txt`` caption, found recursively.

CSV and folder sources keep their rows in memory in packed form; for corpora of millions of samples,
``ovseg prepare`` them into shards first.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import os
import random
import time
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from webdataset.shardlists import expand_urls

from ..errors import ConfigError, OvsegError
from .pairs import PairIndex
from .samples import RawSample, SkippedSample, clean_caption
from .tarindex import IMAGE_EXTS, MemberReader, scan_tar

log = logging.getLogger(__name__)

# layout of an ``ovseg prepare`` output folder
MANIFEST = "manifest.json"
PAIRS, PAIR_ENTITIES = "pairs.npy", "pair_entities.npy"
CAPTIONS_LIMIT = 200_000  # captions() lists at most this many (the frozen-text cache encodes them all)
REQUIRED_COLUMNS = ("image_id", "caption")
CHECK_ROWS = 20  # rows whose image files are checked when a CSV or folder is opened
# skip reason of a row with malformed pairindex/pairentity cells (one of samples.REASONS)
MALFORMED_PAIRS = "malformed pairindex"


def index_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(".tar")] + ".idx.npy")


def meta_path(shard: Path) -> Path:
    return shard.with_name(shard.name[: -len(".tar")] + ".meta.json")


class PackedStrings:
    """An append-only list of strings in one byte buffer: no per-string Python objects, so millions of rows
    stay compact and forked DataLoader workers do not copy them page by page as reference counts change."""

    def __init__(self, strings: Iterable[str] = ()):
        self.data, self.ends = bytearray(), array("q")
        for s in strings:
            self.append(s)

    def append(self, text: str) -> None:
        self.data += text.encode("utf-8")
        self.ends.append(len(self.data))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        start = self.ends[i - 1] if i else 0
        return self.data[start: self.ends[i]].decode("utf-8")


# ------------------------------------------------------------------------------------------------ shards
def resolve_shards(spec: str) -> list[Path]:
    """Shard files from a folder (its ``*.tar``, sorted), a file, or brace patterns joined by ``::``."""
    if Path(spec).is_dir():
        paths = sorted(Path(spec).glob("*.tar"))
        if not paths:
            raise OvsegError(f"{spec}: no .tar shards in this folder (empty input)")
        return paths
    paths = [Path(p) for p in expand_urls(spec)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise OvsegError(f"{missing[0]}: no such shard" + (f" (and {len(missing) - 1} more)" if missing[1:] else ""))
    return paths


class ShardSource:
    """Samples of webdataset shards, numbered in shard order. Blocks are shards (read sequentially)."""

    def __init__(self, spec: str):
        root = Path(spec)
        if root.is_dir() and (root / "prepare.json").is_file() and not (root / MANIFEST).is_file():
            raise OvsegError(f"{root}: `ovseg prepare` has not finished here (no {MANIFEST}); rerun it")
        self.prepared = root.is_dir() and (root / MANIFEST).is_file()
        self.reader = MemberReader()
        self.root, self.has_pairs, self._pairs = root, False, None
        self.entity_names: list[str] = []
        if self.prepared:
            self._open_prepared(root)
        else:
            self._open_raw(spec)
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def _open_prepared(self, root: Path) -> None:
        manifest = json.loads((root / MANIFEST).read_text())
        self.paths = [root / s["name"] for s in manifest["shards"]]
        self.counts = np.asarray([s["count"] for s in manifest["shards"]], dtype=np.int64)
        self.tables: list[np.ndarray | None] = [None] * len(self.paths)  # loaded (memory-mapped) on first use
        self.keys = None
        self.entity_names = list(manifest["entities"])
        self.has_pairs = bool(manifest.get("pairs"))

    def __getstate__(self) -> dict:
        """Memory maps are reopened in the receiving process rather than pickled (spawned workers)."""
        state = dict(self.__dict__, _pairs=None)
        if self.prepared:
            state["tables"] = [None] * len(self.paths)
        return state

    def _pair_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(partners, shared entity ids), each (N, K), memory-mapped on first use."""
        if self._pairs is None:
            self._pairs = (np.load(self.root / PAIRS, mmap_mode="r"), np.load(self.root / PAIR_ENTITIES, mmap_mode="r"))
        return self._pairs

    def _open_raw(self, spec: str) -> None:
        self.paths = resolve_shards(spec)
        start = time.perf_counter()
        indexes = [scan_tar(p) for p in self.paths]
        self.tables = [ix.table for ix in indexes]
        self.keys = [ix.keys for ix in indexes]
        self.counts = np.asarray([len(ix) for ix in indexes], dtype=np.int64)
        log.log(logging.INFO if len(self.paths) > 1 else logging.DEBUG, "indexed %d shards (%d samples) in "
                "%.1f s; `ovseg prepare` stores this index", len(self.paths), self.counts.sum(),
                time.perf_counter() - start)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def block_lengths(self) -> np.ndarray:
        return self.counts

    def _locate(self, index: int) -> tuple[int, np.ndarray, str]:
        """(shard, index row, a name for messages) of sample ``index``."""
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = index - int(self.offsets[shard])
        if self.tables[shard] is None:
            self.tables[shard] = np.load(index_path(self.paths[shard]), mmap_mode="r")
        key = self.keys[shard][local] if self.keys else str(local)
        return shard, self.tables[shard][local], f"{self.paths[shard].name}:{key}"

    def _member(self, shard: int, row: np.ndarray, column: int, where: str) -> bytes | None:
        offset, size = int(row[column]), int(row[column + 1])
        if offset < 0:
            return None
        try:
            return self.reader.read(str(self.paths[shard]), offset, size)
        except OSError as e:
            raise SkippedSample("unreadable member", f"{where} ({e})") from e

    def read(self, index: int) -> RawSample:
        shard, row, where = self._locate(index)
        image = self._member(shard, row, 0, where)
        if image is None:
            raise SkippedSample("missing image", where)
        text = self._member(shard, row, 2, where)
        caption = clean_caption(None if text is None else text.decode("utf-8", errors="replace"), where)
        return RawSample(index, image, caption, self._entities(shard, row, where), where)

    def _entities(self, shard: int, row: np.ndarray, where: str) -> list[str] | None:
        """The ``entities`` list of the json member (prepared shards); None for other json."""
        if not self.prepared:
            return None
        raw = self._member(shard, row, 4, where)
        try:
            entities = json.loads(raw).get("entities") if raw else None
        except (ValueError, AttributeError):
            return None
        return list(entities) if isinstance(entities, list) else None

    def image(self, index: int) -> bytes:
        shard, row, where = self._locate(index)
        image = self._member(shard, row, 0, where)
        if image is None:
            raise SkippedSample("missing image", where)
        return image

    def partner(self, index: int, rng: random.Random) -> tuple[int, str] | None:
        """One of the sample's stored partners, uniformly (spec §2.3); None when it has no entity."""
        if not self.has_pairs:
            return None
        pairs, shared = self._pair_arrays()
        k = rng.randrange(pairs.shape[1])
        partner, entity = int(pairs[index, k]), int(shared[index, k])
        return (partner, self.entity_names[entity]) if partner >= 0 else None

    def captions(self) -> None:
        return None


# --------------------------------------------------------------------------------------------------- CSV
def iter_metafile(path: str | Path) -> Iterator[dict[str, str]]:
    """Rows of a CSV (or ``.tsv``) metafile as dicts; the header is checked before the first row."""
    path = Path(path)
    if not path.is_file():
        raise OvsegError(f"{path}: no such metafile")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a column name
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            check_columns(path, reader.fieldnames)
            yield from reader
        except UnicodeDecodeError as e:
            raise OvsegError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a block)") from e
        except csv.Error as e:
            raise OvsegError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from e


def check_columns(path: Path, columns: list[str] | None) -> None:
    if columns is None:
        raise OvsegError(f"{path}: empty file (expected a header with columns {', '.join(REQUIRED_COLUMNS)})")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise OvsegError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})")


def check_captions(path: Path, captions: list[str]) -> None:
    """Refuse a caption column that holds no text: all empty, or all numbers (a wrong column)."""
    texts = [c.strip() for c in captions if c and c.strip()]
    if not texts:
        raise OvsegError(f"{path}: column 'caption' is empty in the first {len(captions)} rows")
    if all(_is_number(t) for t in texts):
        raise OvsegError(f"{path}: column 'caption' holds numbers, not text (e.g. '{texts[0]}')")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_images_present(paths: list[Path], listing: str, hint: str) -> None:
    """An error when none of the first referenced images exists (a wrong image root, most likely)."""
    if paths and not any(p.is_file() for p in paths):
        raise OvsegError(f"{listing}: the images it references are absent (first: {paths[0]}); {hint}")


class CsvSource:
    """Rows of a metafile; blocks are single rows (full shuffle). Row numbers are kept as the sample
    indices, also for rows later skipped, so ``pairindex`` row positions stay valid."""

    def __init__(self, meta_file: str | Path, image_root: str | Path | None = None):
        self.path = Path(meta_file)
        self.root = Path(image_root) if image_root else self.path.parent
        if not self.root.is_dir():
            raise OvsegError(f"{self.root}: no such image folder (data.image_root)")
        self.image_ids, self.caption_list = PackedStrings(), PackedStrings()
        self.pair_cells: tuple[PackedStrings, PackedStrings] | None = None  # (pairindex, pairentity) as read
        head: list[dict[str, str]] = []
        for row in iter_metafile(self.path):
            self._append(row)
            if len(head) < 1000:
                head.append(row)
        if not head:
            raise OvsegError(f"{self.path}: no rows (empty input)")
        check_captions(self.path, [r["caption"] for r in head])
        check_images_present([self.root / (r["image_id"] or "") for r in head[:CHECK_ROWS]], str(self.path),
                             f"check data.image_root ({self.root})")
        self.pair_index: PairIndex | None = None
        self.has_pairs = self.pair_cells is not None

    def _append(self, row: dict[str, str]) -> None:
        self.image_ids.append(row["image_id"] or "")
        self.caption_list.append(row["caption"] or "")
        if len(self.image_ids) == 1 and "pairindex" in row and "pairentity" in row:
            self.pair_cells = PackedStrings(), PackedStrings()
        if self.pair_cells is not None:  # a cell missing from a short row is None: kept as "", malformed
            self.pair_cells[0].append(row.get("pairindex") or "")
            self.pair_cells[1].append(row.get("pairentity") or "")

    def __len__(self) -> int:
        return len(self.image_ids)

    def block_lengths(self) -> np.ndarray:
        return np.ones(len(self), dtype=np.int64)

    def image(self, index: int) -> bytes:
        return read_file(self.root / self.image_ids[index])

    def read(self, index: int) -> RawSample:
        where = f"{self.path.name} row {index}"
        caption = clean_caption(self.caption_list[index], where)
        return RawSample(index, self.image(index), caption, None, str(self.root / self.image_ids[index]))

    def set_pairs(self, pair_index: PairIndex) -> None:
        """Partners from entities extracted here (when the metafile has no pair columns)."""
        self.pair_index, self.has_pairs = pair_index, True

    def partner(self, index: int, rng: random.Random) -> tuple[int, str] | None:
        if self.pair_index is not None:
            return self.pair_index.partner(index, rng)
        if self.pair_cells is None:
            return None
        rows, entities = self.stored_pairs(index)
        if not rows:
            return None
        k = rng.randrange(len(rows))
        return rows[k], entities[k]

    def stored_pairs(self, index: int) -> tuple[list[int], list[str]]:
        """The row's partners and shared raw entity words; SkippedSample when its cells are malformed, so a
        bad cell costs one sample (counted) instead of the run."""
        try:
            return parse_pair_cells(self.pair_cells[0][index], self.pair_cells[1][index], len(self))
        except ValueError as e:
            raise SkippedSample(MALFORMED_PAIRS, f"{self.path.name} row {index}: {e}") from None

    def captions(self) -> list[str] | None:
        if len(self) > CAPTIONS_LIMIT:
            return None
        return [c for c in map(self.caption_at, range(len(self))) if c]

    def caption_at(self, index: int) -> str:
        """The caption, "" when it is empty."""
        return self.caption_list[index].strip()


def parse_pair_cells(pairindex: str, pairentity: str, total: int) -> tuple[list[int], list[str]]:
    """The original's stringified lists, read strictly (nothing is evaluated): ``pairindex`` a JSON list of
    row numbers below ``total``, ``pairentity`` a Python list of as many strings. ValueError says why not."""
    try:
        rows = json.loads(pairindex)
    except (ValueError, RecursionError):  # ValueError: not JSON, or an integer too long to convert
        rows = None
    if not isinstance(rows, list) or not all(type(r) is int for r in rows):  # type: bools and floats are not rows
        raise ValueError(f"pairindex {_excerpt(pairindex)} is not a list of row numbers")
    outside = next((r for r in rows if not 0 <= r < total), None)
    if outside is not None:
        raise ValueError(f"pairindex {outside} is not a row of this metafile (0 to {total - 1})")
    try:
        entities = ast.literal_eval(pairentity)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        entities = None
    if not isinstance(entities, list) or len(entities) != len(rows) or not all(isinstance(e, str) for e in entities):
        raise ValueError(f"pairentity {_excerpt(pairentity)} is not a list of {len(rows)} strings (one per pairindex)")
    return rows, entities


def _excerpt(cell: str, limit: int = 40) -> str:
    return repr(cell if len(cell) <= limit else cell[:limit] + "…")


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise SkippedSample("missing image", str(path)) from e
    except OSError as e:
        raise SkippedSample("unreadable file", f"{path} ({e})") from e


# ------------------------------------------------------------------------------------------------ folder
def iter_images(root: Path) -> Iterator[Path]:
    """Image files under ``root`` in a stable order (sorted folders, sorted names), hidden ones skipped."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS:
                yield Path(folder) / name


def caption_file(image: Path) -> Path:
    return image.with_suffix(".txt")


def read_caption_file(image: Path) -> str:
    """The image's caption; SkippedSample when its .txt is missing or empty."""
    try:
        text = caption_file(image).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    return clean_caption(text, str(caption_file(image)))


def check_folder(root: Path, images: list[Path]) -> None:
    if not root.is_dir():
        raise OvsegError(f"{root}: no such image folder")
    if not images:
        raise OvsegError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) in this folder (empty input)")
    if not any(caption_file(p).is_file() for p in images[:CHECK_ROWS]):
        raise OvsegError(f"{root}: images have no same-name .txt caption (e.g. {images[0].name} needs "
                         f"{caption_file(images[0]).name})")


class FolderSource:
    """Image files with same-name ``.txt`` captions; blocks are single files (full shuffle)."""

    def __init__(self, image_root: str | Path):
        self.root = Path(image_root)
        images = list(iter_images(self.root)) if self.root.is_dir() else []
        check_folder(self.root, images)
        self.files = PackedStrings(str(p.relative_to(self.root)) for p in images)
        self.pair_index: PairIndex | None = None
        self.has_pairs = False

    def __len__(self) -> int:
        return len(self.files)

    def block_lengths(self) -> np.ndarray:
        return np.ones(len(self), dtype=np.int64)

    def image(self, index: int) -> bytes:
        return read_file(self.root / self.files[index])

    def read(self, index: int) -> RawSample:
        path = self.root / self.files[index]
        return RawSample(index, self.image(index), read_caption_file(path), None, str(path))

    def set_pairs(self, pair_index: PairIndex) -> None:
        self.pair_index, self.has_pairs = pair_index, True

    def partner(self, index: int, rng: random.Random) -> tuple[int, str] | None:
        return self.pair_index.partner(index, rng) if self.pair_index is not None else None

    def captions(self) -> list[str] | None:
        if len(self) > CAPTIONS_LIMIT:
            return None
        return [c for c in map(self.caption_at, range(len(self))) if c]

    def caption_at(self, index: int) -> str:
        """The caption, "" when it is missing or empty."""
        try:
            return read_caption_file(self.root / self.files[index])
        except SkippedSample:
            return ""


def open_source(kind: str, shards: str | None = None, meta_file: str | None = None,
                image_root: str | None = None):
    """The source for ``data.type`` ``kind`` (webdataset, csv or folder); ConfigError for missing keys."""
    needs = {"webdataset": ("data.shards", shards), "csv": ("data.meta_file", meta_file),
             "folder": ("data.image_root", image_root)}
    key, value = needs[kind]
    if not value:
        raise ConfigError(f"data.type {kind} needs {key}")
    if kind == "webdataset":
        source = ShardSource(shards)
        if len(source) == 0:
            raise OvsegError(f"{shards}: the shards hold no samples (empty input)")
        return source
    if kind == "csv":
        return CsvSource(meta_file, image_root)
    return FolderSource(image_root)
