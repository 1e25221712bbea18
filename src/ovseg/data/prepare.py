"""``ovseg prepare``: a caption corpus (webdataset shards, CSV metafile + images, folder of images with
.txt captions) -> training shards with entities, a member index for random access and a pair index.

Output folder::

    prepare.json            the options; a rerun with other options is refused
    shard-000000.tar        KEY.jpg|png|webp, KEY.txt (caption), KEY.json {"entities": [...], "source": ...}
    shard-000000.idx.npy    member offsets (ovseg.data.tarindex): sequential and random access
    shard-000000.meta.json  sample count, skips, entity ids per sample
    pairs.npy               (N, K) partners: sample numbers sharing an entity with each sample (-1: none)
    pair_entities.npy       (N, K) the shared entity (index into the manifest's ``entities``)
    manifest.json           shards, counts, entity names; written last, it marks a finished run

How it scales and resumes: the input is cut into chunks (``shard_size`` rows of a CSV or folder; one
input shard each for webdataset input), and chunk c becomes output shard c, a pure function of that
chunk's input. Chunks run in parallel processes; the main process only streams the input's rows, so
memory stays bounded. A shard's index and meta are written first and its tar last, each to a temporary
file renamed into place, so a kill leaves finished shards (never rewritten) and no half-written one; a
rerun skips the finished shards and produces byte-identical output. The pair index (spec §2.3: for each
sample K draws of one of its entities, then of a sample having that entity, possibly itself) is drawn
from (seed, N) alone once all shards exist.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from webdataset import TarWriter

from ..errors import OvsegError
from ..fileio import atomic_write
from .decode import verify_image
from .entities import EntityExtractor, EntityVocabulary
from .readers import (
    CHECK_ROWS,
    MANIFEST,
    PAIR_ENTITIES,
    PAIRS,
    ShardSource,
    check_captions,
    check_folder,
    check_images_present,
    index_path,
    iter_images,
    iter_metafile,
    meta_path,
    read_caption_file,
    read_file,
    resolve_shards,
)
from .samples import RawSample, SkippedSample, clean_caption
from .tarindex import scan_tar

log = logging.getLogger(__name__)
FORMAT = "ovseg-shards/1"
PAIR_ROWS_PER_DRAW = 1 << 20  # rows of the pair index drawn at once (bounds pass-2 memory)


@dataclass(frozen=True)
class Options:
    """Everything the output depends on (stored in prepare.json); ``workers`` and progress are not."""

    input: str
    kind: str
    image_root: str | None
    shard_size: int = 10_000
    pairs: int = 10
    seed: int = 0
    vocabulary: str | None = None
    legacy_entity_strip: bool = False
    require_entity: bool = False
    format: str = FORMAT


@dataclass
class Chunk:
    """Input of one output shard: ``records`` (image path, caption or None for its .txt, source name) of a
    CSV or folder, or the path of one input ``shard``."""

    number: int
    records: list[tuple[str, str | None, str]] | None = None
    shard: str | None = None


@dataclass
class PrepareReport:
    output: Path
    shards: int = 0
    samples: int = 0
    resumed: int = 0  # shards found finished and kept
    filtered: int = 0  # samples without entity dropped by require_entity
    skipped: Counter = field(default_factory=Counter)


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


# ------------------------------------------------------------------------------------------------- input
def detect_input(path: str) -> str:
    """'csv', 'webdataset' or 'folder' for ``--input``; OvsegError when it is none of them."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() in (".csv", ".tsv", ".tab"):
            return "csv"
        if p.suffix.lower() == ".tar":
            return "webdataset"
        raise OvsegError(f"{path}: expected a .csv/.tsv metafile, .tar shards or a folder of images")
    if p.is_dir():
        return "webdataset" if any(p.glob("*.tar")) else "folder"
    if "{" in path or "::" in path:
        return "webdataset"
    raise OvsegError(f"{path}: no such file or folder")


def iter_chunks(opts: Options) -> Iterator[Chunk]:
    """The input cut into chunks, streamed; bad input raises OvsegError here, before the first chunk."""
    if opts.kind == "webdataset":
        return iter([Chunk(i, shard=str(p)) for i, p in enumerate(resolve_shards(opts.input))])
    return _batched(_csv_records(opts) if opts.kind == "csv" else _folder_records(opts), opts.shard_size)


def _batched(records: Iterator[tuple[str, str | None, str]], size: int) -> Iterator[Chunk]:
    number = 0
    while batch := list(islice(records, size)):
        yield Chunk(number, records=batch)
        number += 1


def _csv_records(opts: Options) -> Iterator[tuple[str, str | None, str]]:
    """(image path, caption, image_id) of every row, after checking the first rows."""
    path = Path(opts.input)
    root = Path(opts.image_root) if opts.image_root else path.parent
    if not root.is_dir():
        raise OvsegError(f"{root}: no such image folder (--image-root)")
    rows = iter_metafile(path)
    head = list(islice(rows, 1000))
    if not head:
        raise OvsegError(f"{path}: no rows (empty input)")
    check_captions(path, [r["caption"] for r in head])
    check_images_present([root / (r["image_id"] or "") for r in head[:CHECK_ROWS]], str(path),
                         f"check --image-root ({root})")
    return ((str(root / (r["image_id"] or "")), r["caption"] or "", r["image_id"] or "") for r in chain(head, rows))


def _folder_records(opts: Options) -> Iterator[tuple[str, str | None, str]]:
    """(image path, None: caption from its .txt, path relative to the folder) of every image."""
    root = Path(opts.input)
    images = iter_images(root)
    head = list(islice(images, CHECK_ROWS))
    check_folder(root, head)
    return ((str(p), None, str(p.relative_to(root))) for p in chain(head, images))


# -------------------------------------------------------------------------------------------- one shard
@lru_cache(maxsize=4)
def _extractor(vocabulary: str | None, legacy: bool) -> EntityExtractor:
    return EntityExtractor(EntityVocabulary.load(vocabulary), legacy_strip=legacy)


def _chunk_samples(chunk: Chunk) -> Iterator[RawSample | SkippedSample]:
    """The chunk's samples in input order, or the reason each one cannot be used."""
    if chunk.shard is not None:
        source = ShardSource(chunk.shard)
        for i in range(len(source)):
            try:
                yield source.read(i)
            except SkippedSample as e:
                yield e
        return
    for image_path, caption, name in chunk.records:
        try:
            text = read_caption_file(Path(image_path)) if caption is None else clean_caption(caption, name)
            yield RawSample(0, read_file(Path(image_path)), text, None, name)
        except SkippedSample as e:
            yield e


def write_chunk(chunk: Chunk, opts: Options, output: str) -> dict:
    """Write output shard ``chunk.number`` (index and meta first, the tar last); returns its meta."""
    shard = Path(output) / shard_name(chunk.number)
    extractor = _extractor(opts.vocabulary, opts.legacy_entity_strip)
    ids = {name: i for i, name in enumerate(extractor.vocabulary.entities)}
    meta = {"count": 0, "filtered": 0, "skipped": Counter(), "entities": []}

    def write_tar(tmp: str) -> None:
        with TarWriter(tmp, mtime=0, encoder=False) as tar:
            for sample in _chunk_samples(chunk):
                _write_sample(tar, sample, chunk.number, meta, extractor, ids, opts)
        table = scan_tar(tmp).table
        atomic_write(index_path(shard), lambda t: _save_npy(t, table))
        meta["skipped"] = dict(sorted(meta["skipped"].items()))
        atomic_write(meta_path(shard), lambda t: Path(t).write_text(json.dumps(meta, sort_keys=True)))

    atomic_write(shard, write_tar)
    return meta


def _write_sample(tar: TarWriter, sample: RawSample | SkippedSample, number: int, meta: dict,
                  extractor: EntityExtractor, ids: dict[str, int], opts: Options) -> None:
    if isinstance(sample, SkippedSample):
        meta["skipped"][sample.reason] += 1
        return
    try:
        ext = verify_image(sample.image, sample.key)
    except SkippedSample as e:
        meta["skipped"][e.reason] += 1
        return
    entities = extractor.entities(sample.caption)
    if opts.require_entity and not entities:
        meta["filtered"] += 1
        return
    key = f"{number:06d}_{meta['count']:06d}"
    info = json.dumps({"entities": entities, "source": sample.key}, sort_keys=True)
    tar.write({"__key__": key, ext: sample.image, "txt": sample.caption.encode("utf-8"),
               "json": info.encode("utf-8")})
    meta["entities"].append([ids[e] for e in entities])
    meta["count"] += 1


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
        np.save(f, array)


# ------------------------------------------------------------------------------------------- the driver
def prepare(input: str, output: str | Path, image_root: str | None = None, shard_size: int = 10_000,
            pairs: int = 10, seed: int = 0, vocabulary: str | None = None, legacy_entity_strip: bool = False,
            require_entity: bool = False, workers: int | None = None, progress: bool = True) -> PrepareReport:
    """Prepare ``input`` into ``output`` (resuming a killed run there); see the module docstring."""
    if shard_size < 1 or pairs < 1:
        raise OvsegError("--shard-size and --pairs must be at least 1")
    opts = Options(str(input), detect_input(str(input)), image_root, shard_size, pairs, seed, vocabulary,
                   legacy_entity_strip, require_entity)
    _extractor(vocabulary, legacy_entity_strip)  # a bad vocabulary file fails here, in one line
    chunks = iter_chunks(opts)  # checks the input first: a bad one leaves no output folder behind
    output = Path(output)
    _claim_output(output, opts)
    report = PrepareReport(output)
    metas = _run_chunks(chunks, opts, output, workers, progress, report)
    if report.samples == 0:
        raise OvsegError(f"{input}: no usable samples (empty input; skipped: {_describe(report.skipped)})")
    _write_pairs(output, report, opts)
    _write_manifest(output, metas, opts, report)
    return report


def _claim_output(output: Path, opts: Options) -> None:
    """Create or reuse ``output``: refuse a foreign non-empty folder or one prepared with other options."""
    record = output / "prepare.json"
    if output.is_dir() and any(output.iterdir()) and not record.is_file():
        raise OvsegError(f"{output}: not empty and not an `ovseg prepare` output; choose a new folder")
    if record.is_file():
        old = json.loads(record.read_text())
        differ = sorted(k for k, v in asdict(opts).items() if old.get(k) != v)
        if differ:
            raise OvsegError(f"{output}: prepared with other options (differ: {', '.join(differ)}); "
                             "use the same options to resume, or a new --output")
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob(".*.tmp"):  # temporary files of a killed run
        stale.unlink()
    atomic_write(record, lambda t: Path(t).write_text(json.dumps(asdict(opts), indent=1, sort_keys=True)))


def _finished_meta(output: Path, number: int) -> dict | None:
    shard = output / shard_name(number)
    if not shard.is_file():
        return None
    if not meta_path(shard).is_file() or not index_path(shard).is_file():
        raise OvsegError(f"{shard}: exists without its index or meta file; delete the shard to redo it")
    return json.loads(meta_path(shard).read_text())


def _run_chunks(chunks: Iterator[Chunk], opts: Options, output: Path, workers: int | None, progress: bool,
                report: PrepareReport) -> list[dict]:
    """Write every missing shard (in parallel); the metas of all shards, in shard order."""
    workers = min(8, os.cpu_count() or 1) if workers is None else max(1, workers)
    total = len(resolve_shards(opts.input)) if opts.kind == "webdataset" else None
    metas: dict[int, dict] = {}
    bar = tqdm(total=total, desc="prepare", unit="shard", disable=not progress, dynamic_ncols=True)
    with bar:
        for number, meta, resumed in _results(chunks, opts, output, workers):
            metas[number] = {"count": meta["count"]}  # entity lists are read back from disk in pass 2
            report.resumed += resumed
            report.samples += meta["count"]
            report.filtered += meta.get("filtered", 0)
            report.skipped.update(meta["skipped"])
            bar.update()
            bar.set_postfix(samples=report.samples, skipped=sum(report.skipped.values()))
    report.shards = len(metas)
    return [metas[i] for i in range(len(metas))]


def _results(chunks: Iterator[Chunk], opts: Options, output: Path,
             workers: int) -> Iterator[tuple[int, dict, bool]]:
    """(shard number, meta, was already finished) for every chunk, as they complete."""
    if workers == 1:
        for chunk in chunks:
            done = _finished_meta(output, chunk.number)
            yield chunk.number, done or write_chunk(chunk, opts, str(output)), done is not None
        return
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: dict[cf.Future, int] = {}
        for chunk in chunks:
            done = _finished_meta(output, chunk.number)
            if done is not None:
                yield chunk.number, done, True
                continue
            pending[pool.submit(write_chunk, chunk, opts, str(output))] = chunk.number
            while len(pending) >= 2 * workers:  # bounded: at most 2 chunks per worker in flight
                yield from _collect(pending, cf.FIRST_COMPLETED)
        while pending:
            yield from _collect(pending, cf.ALL_COMPLETED)


def _collect(pending: dict[cf.Future, int], when: str) -> Iterator[tuple[int, dict, bool]]:
    finished, _ = cf.wait(pending, return_when=when)
    for future in finished:
        yield pending.pop(future), future.result(), False


def _describe(skipped: Counter | dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())) or "none"


# ------------------------------------------------------------------------------------- the pair index
def entity_table(output: Path, shards: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the samples' entity ids, read shard by shard from the meta files: (ptr (N+1,), ids (M,));
    sample i has ids[ptr[i]:ptr[i+1]]."""
    lengths, ids = [np.zeros(1, np.int64)], [np.zeros(0, np.int64)]
    for number in range(shards):
        entities = json.loads(meta_path(output / shard_name(number)).read_text())["entities"]
        lengths.append(np.asarray([len(e) for e in entities], dtype=np.int64))
        ids.append(np.asarray(list(chain.from_iterable(entities)), dtype=np.int64))
    return np.cumsum(np.concatenate(lengths)), np.concatenate(ids)


def draw_pairs(ptr: np.ndarray, ids: np.ndarray, k: int, seed: int, pairs: np.ndarray,
               shared: np.ndarray) -> None:
    """Fill ``pairs``/``shared`` (N, K): for each sample, K times an entity of its own drawn uniformly, then a
    sample having that entity (possibly itself); -1 for samples without entities."""
    n = len(ptr) - 1
    pairs[:], shared[:] = -1, -1
    if len(ids) == 0:
        return
    owner = np.repeat(np.arange(n), np.diff(ptr))
    order = np.argsort(ids, kind="stable")
    holders, starts = owner[order], np.searchsorted(ids[order], np.arange(ids.max() + 2))
    for c, a in enumerate(range(0, n, PAIR_ROWS_PER_DRAW)):
        b = min(n, a + PAIR_ROWS_PER_DRAW)
        rng = np.random.default_rng([seed, c])
        counts = np.diff(ptr[a: b + 1])
        pick = ptr[a:b, None] + (rng.random((b - a, k)) * counts[:, None]).astype(np.int64)
        entity = ids[np.minimum(pick, len(ids) - 1)]
        have = starts[entity + 1] - starts[entity]
        partner = holders[starts[entity] + (rng.random((b - a, k)) * have).astype(np.int64)]
        empty = counts == 0
        partner[empty], entity[empty] = -1, -1
        pairs[a:b], shared[a:b] = partner, entity


def _write_pairs(output: Path, report: PrepareReport, opts: Options) -> None:
    ptr, ids = entity_table(output, report.shards)
    n, entities = len(ptr) - 1, len(_extractor(opts.vocabulary, opts.legacy_entity_strip).vocabulary.entities)

    def write(tmp_pairs: str) -> None:
        pairs = np.lib.format.open_memmap(tmp_pairs, mode="w+", dtype=np.int32 if n < 2**31 else np.int64,
                                          shape=(n, opts.pairs))
        shared = np.empty((n, opts.pairs), dtype=np.int16 if entities < 2**15 else np.int32)
        draw_pairs(ptr, ids, opts.pairs, opts.seed, pairs, shared)
        pairs.flush()
        atomic_write(output / PAIR_ENTITIES, lambda t: _save_npy(t, shared))

    atomic_write(output / PAIRS, write)


def _write_manifest(output: Path, metas: list[dict], opts: Options, report: PrepareReport) -> None:
    names = list(_extractor(opts.vocabulary, opts.legacy_entity_strip).vocabulary.entities)
    manifest = {"format": FORMAT, "count": report.samples, "pairs": opts.pairs, "entities": names,
                "shards": [{"name": shard_name(i), "count": m["count"]} for i, m in enumerate(metas)],
                "skipped": dict(sorted(report.skipped.items())), "filtered": report.filtered}
    atomic_write(output / MANIFEST, lambda t: Path(t).write_text(json.dumps(manifest, indent=1, sort_keys=True)))
