"""Caption-corpus readers: webdataset shards, CSV metafile + images, folder of images; exact partitioning
over ranks × workers, shuffling per epoch, skipped samples counted, and batches from build_train_dataset."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.config import load_config
from ovseg.data import streaming
from ovseg.data.augment import TrainTransform
from ovseg.data.builder import build_collator, build_train_dataset
from ovseg.data.readers import MALFORMED_PAIRS, CsvSource, FolderSource, ShardSource, open_source
from ovseg.data.samples import SkippedSample
from ovseg.data.streaming import StreamingCaptions, iter_positions, part_bounds
from ovseg.errors import ConfigError, OvsegError

CAPTIONS = ["a dog on a sofa", "two cats and a man", "a red bus", "a plane in the sky", "people with umbrellas",
            "a catalog of dogmas", "a dog and a cat", "bikes near a house"]


def image_bytes(i: int, fmt: str = "JPEG", size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, first: int, count: int, bad: dict[int, str] = ()) -> None:
    """An img2dataset-style shard: KEY.jpg, KEY.txt, KEY.json; ``bad`` {i: 'image' | 'caption' | 'no-txt'}."""
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + count):
            key = f"{i:09d}"
            problem = dict(bad).get(i)
            add_member(tar, f"{key}.jpg", b"\xff\xd8 broken" if problem == "image" else image_bytes(i))
            if problem != "no-txt":
                add_member(tar, f"{key}.txt", b"  " if problem == "caption" else CAPTIONS[i % 8].encode())
            add_member(tar, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "00000.tar", 0, 7, bad={3: "image", 5: "caption"})
    write_shard(folder / "00001.tar", 7, 5, bad={9: "no-txt"})
    write_shard(folder / "00002.tar", 12, 6)
    return folder


def write_images(root: Path, n: int, captions: bool = True) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img{i:03d}." + ("png" if i % 3 == 0 else "jpg")
        (root / name).write_bytes(image_bytes(i, "PNG" if i % 3 == 0 else "JPEG"))
        if captions:
            (root / name).with_suffix(".txt").write_text(CAPTIONS[i % 8])
        names.append(name)
    return names


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cheap(data: bytes, where: str = "") -> torch.Tensor:
    """A stand-in transform that does not decode (partitioning tests)."""
    return torch.zeros(1)


def indices_of(ds: StreamingCaptions, monkeypatch, workers: int) -> list[list[int]]:
    """The indices each simulated DataLoader worker yields."""
    parts = []
    for w in range(workers):
        info = SimpleNamespace(id=w, num_workers=workers) if workers > 1 else None
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        parts.append([item["index"] for item in ds])
    return parts


# --------------------------------------------------------------------------------------- partitioning
def test_positions_cover_every_block_once_in_the_shuffled_order():
    lengths = np.array([3, 0, 4, 2])
    order = np.array([2, 0, 3, 1])
    assert list(iter_positions(lengths, order, 0, 9)) == [3, 4, 5, 6, 0, 1, 2, 7, 8]
    assert list(iter_positions(lengths, order, 2, 6)) == [5, 6, 0, 1]
    assert [part_bounds(10, 3, p) for p in range(3)] == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 3), (3, 2), (4, 1)])
def test_every_sample_exactly_once_per_epoch_over_ranks_and_workers(shards, monkeypatch, world, workers):
    source = ShardSource(str(shards))
    seen, orders = [], {}
    for epoch in (0, 1):
        per_epoch = []
        for rank in range(world):
            ds = StreamingCaptions(source, cheap, seed=3, shuffle_buffer=4, rank=rank, world_size=world)
            ds.set_epoch(epoch)
            parts = indices_of(ds, monkeypatch, workers)
            rank_indices = [i for p in parts for i in p]
            assert len(rank_indices) + sum(ds.skipped().values()) == len(ds)  # len(): this rank's share
            per_epoch += rank_indices
        usable = sorted(set(range(18)) - {3, 5, 9})  # corrupt image (decoded later), empty caption, no txt
        assert sorted(per_epoch) == sorted(set(usable) | {3})  # the image is only found bad when decoded
        orders[epoch] = per_epoch
        seen.append(sorted(per_epoch))
    assert seen[0] == seen[1] and orders[0] != orders[1]  # same samples, another order


def test_the_order_is_a_function_of_seed_and_epoch(shards, monkeypatch):
    source = ShardSource(str(shards))
    a, b = (StreamingCaptions(source, cheap, seed=1, rank=0, world_size=1) for _ in range(2))
    a.set_epoch(2), b.set_epoch(2)
    assert indices_of(a, monkeypatch, 2) == indices_of(b, monkeypatch, 2)


def test_dataloader_workers_see_set_epoch_and_report_skips(shards, caplog):
    """Real worker processes (persistent): epochs differ, skips are counted across processes and logged."""
    ds = StreamingCaptions(ShardSource(str(shards)), lambda d, w: torch.zeros(1), seed=0, shuffle_buffer=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    epochs = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        epochs.append([int(item["index"]) for item in loader])
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    assert len(epochs[0]) == 16 and len(ds) == 18
    assert ds.skipped()["empty caption"] == 2 and ds.skipped()["missing caption"] == 2  # both epochs


def test_batches_per_epoch_matches_what_the_dataloader_yields(tmp_path):
    write_shard(tmp_path / "a.tar", 0, 11)
    write_shard(tmp_path / "b.tar", 11, 6)
    source, counts = ShardSource(str(tmp_path)), []
    for rank in range(2):
        ds = StreamingCaptions(source, cheap, rank=rank, world_size=2, shuffle_buffer=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, drop_last=True,
                                             collate_fn=lambda items: len(items))
        counts.append(len(list(loader)))  # each worker batches its own part: 17 -> 4+4 | 4+5 samples
        assert ds.batches_per_epoch(2, 2) == min(counts[0], 4)
    assert counts == [4, 4] and len(ds) == 9


# ---------------------------------------------------------------------------------------------- shards
def test_raw_shards_are_indexed_and_bad_samples_skipped_and_counted(shards, caplog):
    source = ShardSource(str(shards))
    assert len(source) == 18 and list(source.block_lengths()) == [7, 5, 6] and not source.has_pairs
    sample = source.read(8)
    assert sample.caption == CAPTIONS[0] and sample.image == image_bytes(8) and sample.entities is None
    ds = StreamingCaptions(source, paper_transform(), seed=0, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger="ovseg.data.streaming"):
        items = list(ds)
    assert len(items) == 15 and {it["index"] for it in items} == set(range(18)) - {3, 5, 9}
    assert ds.skipped() == {**dict.fromkeys(ds.skipped(), 0), "corrupt image": 1, "empty caption": 1,
                            "missing caption": 1}
    assert "skipped 3 of 18 samples (corrupt image: 1, empty caption: 1, missing caption: 1)" in caplog.text
    assert items[0]["image"].shape == (3, 32, 32) and items[0]["image"].dtype == torch.float32


def paper_transform() -> TrainTransform:
    return TrainTransform(32, "paper")


def test_a_truncated_shard_keeps_the_samples_before_the_break(shards, caplog):
    data = (shards / "00002.tar").read_bytes()
    (shards / "00002.tar").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        source = ShardSource(str(shards))
    assert 12 < len(source) < 18 and "unreadable after" in caplog.text
    for i in range(len(source)):
        if i not in (3, 5, 9):
            source.read(i)


def test_a_member_that_became_unreadable_is_skipped_and_counted(shards):
    source = ShardSource(str(shards))
    path = shards / "00002.tar"
    path.write_bytes(path.read_bytes()[:4096])  # cut after the index was built
    ds = StreamingCaptions(source, cheap, rank=0, world_size=1)
    assert len(list(ds)) < 15 and ds.skipped()["unreadable member"] >= 4


def test_shard_patterns_and_missing_shards(shards):
    assert len(ShardSource(str(shards / "0000{0..1}.tar"))) == 12
    assert len(ShardSource(f"{shards / '00000.tar'}::{shards / '00002.tar'}")) == 13
    with pytest.raises(OvsegError, match="00003.tar: no such shard"):
        ShardSource(str(shards / "0000{2..3}.tar"))
    empty = shards.parent / "empty"
    empty.mkdir()
    with pytest.raises(OvsegError, match="no .tar shards"):
        open_source("webdataset", shards=str(empty))


# ------------------------------------------------------------------------------------------------- CSV
def test_csv_rows_are_read_and_bad_rows_skipped(tmp_path):
    names = write_images(tmp_path / "images", 6)
    (tmp_path / "images" / names[2]).write_bytes(b"not an image")
    rows = [[n, CAPTIONS[i]] for i, n in enumerate(names)] + [["absent.jpg", "a cat"], [names[0], ""]]
    meta = write_csv(tmp_path / "meta.csv", ["image_id", "caption", "entity"], [r + ["x"] for r in rows])
    source = CsvSource(meta, tmp_path / "images")
    assert len(source) == 8 and not source.has_pairs
    ds = StreamingCaptions(source, paper_transform(), rank=0, world_size=1)
    items = list(ds)
    assert sorted(it["index"] for it in items) == [0, 1, 3, 4, 5]
    assert ds.skipped()["corrupt image"] == 1 and ds.skipped()["missing image"] == 1
    assert ds.skipped()["empty caption"] == 1
    assert source.captions() == [r[1] for r in rows if r[1]]


@pytest.mark.parametrize("header,rows,message", [
    (["image", "caption"], [["a.jpg", "a dog"]], "missing column.s. image_id .found: image, caption."),
    (["image_id", "caption"], [["a.jpg", "3.5"], ["b.jpg", "12"]], "column 'caption' holds numbers"),
    (["image_id", "caption"], [["a.jpg", ""]], "column 'caption' is empty"),
    (["image_id", "caption"], [], "no rows .empty input."),
    (["image_id", "caption"], [["nowhere/a.jpg", "a dog"]], "images it references are absent .first: "),
])
def test_bad_metafiles_are_refused_in_one_line(tmp_path, header, rows, message):
    write_images(tmp_path, 2)
    meta = write_csv(tmp_path / "meta.csv", header, rows)
    with pytest.raises(OvsegError, match=message) as e:
        CsvSource(meta)
    assert "\n" not in str(e.value)


def test_an_empty_metafile_and_a_wrong_image_root(tmp_path):
    (tmp_path / "meta.csv").write_text("")
    with pytest.raises(OvsegError, match="empty file"):
        CsvSource(tmp_path / "meta.csv")
    with pytest.raises(OvsegError, match="no such image folder"):
        CsvSource(tmp_path / "meta.csv", tmp_path / "nowhere")


def test_csv_pair_columns_give_stage2_partners(tmp_path):
    names = write_images(tmp_path, 4)
    rows = [[n, CAPTIONS[i], str([(i + 1) % 4, (i + 2) % 4]), str(["dog", "men"])] for i, n in enumerate(names)]
    source = CsvSource(write_csv(tmp_path / "m.csv", ["image_id", "caption", "pairindex", "pairentity"], rows))
    assert source.has_pairs
    import random

    partners = {source.partner(0, random.Random(s)) for s in range(20)}
    assert partners == {(1, "dog"), (2, "men")}  # the original's raw entity words, as stored


MALFORMED_PAIR_CELLS = [("['x']", "['dog']"), ("5\t6", "['dog']"), ("[1e400]", "['dog']"), ("[-3]", "['dog']"),
                        ("[99999999]", "['dog']"), ("", "[]"), ("[true]", "['dog']"), ("[0]", "['dog', 'men']"),
                        ("[0]", "__import__('os')")]


def test_malformed_pair_cells_are_skipped_samples_counted_like_a_corrupt_image(tmp_path, caplog):
    """Stage 2 on a metafile with bad pairindex/pairentity cells among good rows: the good rows are read,
    the bad ones are counted under their reason, nothing escapes (nor is evaluated)."""
    n = 2 * len(MALFORMED_PAIR_CELLS)
    names = write_images(tmp_path, n)
    good = [(str([(i + 2) % n, (i + 4) % n]), str(["dog", "men"])) for i in range(0, n, 2)]
    good[1] = ("[]", "[]")  # no partner: the sample pairs with its own image
    cells = [c for pair in zip(good, MALFORMED_PAIR_CELLS, strict=True) for c in pair]  # bad rows are odd
    rows = [[name, CAPTIONS[i % 8], *cells[i]] for i, name in enumerate(names)]
    source = CsvSource(write_csv(tmp_path / "m.csv", ["image_id", "caption", "pairindex", "pairentity"], rows))
    for i in range(1, n, 2):
        with pytest.raises(SkippedSample, match=rf"m.csv row {i}: pair(index|entity) .* is not a") as e:
            source.stored_pairs(i)
        assert e.value.reason == MALFORMED_PAIRS
    ds = StreamingCaptions(source, cheap, pair_transform=cheap, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger=streaming.__name__):
        items = list(ds)
    assert sorted(it["index"] for it in items) == list(range(0, n, 2))
    assert {it["cross_entity"] for it in items} == {"dog", "men", ""}
    assert ds.skipped() == {**dict.fromkeys(ds.skipped(), 0), MALFORMED_PAIRS: n // 2}
    assert f"skipped {n // 2} of {n} samples ({MALFORMED_PAIRS}: {n // 2})" in caplog.text
    assert re.search(rf"skipped a sample: {MALFORMED_PAIRS}: m.csv row \d+: pair", caplog.text)  # with the row
    assert len(list(StreamingCaptions(source, cheap, rank=0, world_size=1))) == n  # stage 1 reads no pair cell


# ---------------------------------------------------------------------------------------------- folder
def test_folder_images_with_txt_captions(tmp_path):
    write_images(tmp_path / "a", 4)
    write_images(tmp_path / "a" / "sub", 2)
    (tmp_path / "a" / "img001.txt").unlink()
    source = FolderSource(tmp_path / "a")
    assert len(source) == 6
    ds = StreamingCaptions(source, paper_transform(), rank=0, world_size=1)
    assert len(list(ds)) == 5 and ds.skipped()["missing caption"] == 1


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(OvsegError, match="no such image folder"):
        FolderSource(tmp_path / "nowhere")
    with pytest.raises(OvsegError, match="no images"):
        FolderSource(tmp_path)
    write_images(tmp_path, 2, captions=False)
    with pytest.raises(OvsegError, match="img000.png needs img000.txt"):
        FolderSource(tmp_path)


# ---------------------------------------------------------------------------------------- end to end
TINY = ["data.image_size=32", "model.img_encoder.img_size=32", "model.use_entityloss=true", "data.shuffle_buffer=8"]


def corpus_opts(kind: str, tmp_path: Path, shards: Path) -> list[str]:
    if kind == "webdataset":
        return ["data.type=webdataset", f"data.shards={shards}"]
    names = write_images(tmp_path / "images", 8)
    if kind == "folder":
        return ["data.type=folder", f"data.image_root={tmp_path / 'images'}"]
    write_csv(tmp_path / "meta.csv", ["image_id", "caption"], [[n, CAPTIONS[i]] for i, n in enumerate(names)])
    return ["data.type=csv", f"data.meta_file={tmp_path / 'meta.csv'}", f"data.image_root={tmp_path / 'images'}"]


# stage 2 on raw shards is refused (next test); test_prepare covers stage 2 on prepared shards
@pytest.mark.parametrize("kind,stage", [("webdataset", 1), ("csv", 1), ("folder", 1), ("csv", 2), ("folder", 2)])
def test_build_train_dataset_and_collator_give_a_batch(tmp_path, shards, kind, stage):
    extra = ["model.use_maskloss=true", "train.stage=2"] if stage == 2 else []
    cfg = load_config("configs/tiny.yml", corpus_opts(kind, tmp_path, shards) + TINY + extra)
    ds = build_train_dataset(cfg)
    assert isinstance(ds, StreamingCaptions)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=build_collator(cfg, 0))))
    assert batch["image"].shape == (4, 3, 32, 32) and len(batch["question"]) == 4
    assert all("[MASK]" in q for q, e in zip(batch["question"], batch["entities"], strict=True) if e)
    if stage == 2:
        assert batch["cross_image"].shape == (4, 3, 32, 32) and len(batch["cross_entity"]) == 4


def test_config_mistakes_name_the_key(tmp_path, shards):
    with pytest.raises(ConfigError, match="data.type csv needs data.meta_file"):
        build_train_dataset(load_config("configs/tiny.yml", ["data.type=csv"]))
    with pytest.raises(ConfigError, match="stage 2 needs the pair index of `ovseg prepare`"):
        build_train_dataset(load_config("configs/tiny.yml", ["data.type=webdataset", f"data.shards={shards}",
                                                             "model.use_maskloss=true"]))
    with pytest.raises(ConfigError, match=r"data.augment': Invalid value 'timm', expected one of \['paper', 'none'\]"):
        build_train_dataset(load_config("configs/tiny.yml", corpus_opts("webdataset", tmp_path, shards)
                                        + ["data.augment=timm"]))
    with pytest.raises(ConfigError, match=r"data.type': Invalid value 'lmdb', expected one of \['scenes'"):
        build_train_dataset(load_config("configs/tiny.yml", ["data.type=lmdb"]))


def test_nothing_is_logged_as_a_warning_when_nothing_is_skipped(shards, caplog):
    write_shard(shards / "00000.tar", 0, 7)
    write_shard(shards / "00001.tar", 7, 5)
    ds = StreamingCaptions(ShardSource(str(shards)), cheap, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger=streaming.__name__):
        assert len(list(ds)) == 18
    assert caplog.text == ""
