"""``ovseg prepare``: shards with entities, member index and pair index from each input kind; resumable
with byte-identical output; bad input refused in one line; prepared shards train (stage 1 and 2 batches)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import pickle
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.cli import main
from ovseg.config import load_config
from ovseg.data import prepare as prepare_module
from ovseg.data.builder import build_collator, build_train_dataset
from ovseg.data.entities import EntityExtractor
from ovseg.data.prepare import prepare
from ovseg.data.readers import ShardSource
from ovseg.errors import OvsegError

CAPTIONS = ["a dog on a sofa", "two cats and a man", "a red bus", "a plane in the sky", "people with umbrellas",
            "a catalog of dogmas", "a dog and a cat", "bikes near a house", "Buses, a TV and a couch."]


def image_bytes(i: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def write_corpus(root: Path, n: int = 23) -> Path:
    """Images (JPEG and PNG) with .txt captions and a metafile; row 4 corrupt, row 6 without caption."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"images/{i:03d}." + ("png" if i % 4 == 0 else "jpg")
        (root / name).write_bytes(b"garbage" if i == 4 else image_bytes(i, "PNG" if i % 4 == 0 else "JPEG"))
        caption = "" if i == 6 else CAPTIONS[i % len(CAPTIONS)]
        if caption:
            (root / name).with_suffix(".txt").write_text(caption)
        rows.append([name, caption])
    with open(root / "meta.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_id", "caption"], *rows])
    return root / "meta.csv"


def read_output(folder: Path) -> list[dict]:
    """Every sample of a prepared folder: caption, entities, image bytes."""
    samples = []
    for shard in sorted(folder.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        for key in sorted({name.split(".")[0] for name in members}):
            image = next(v for k, v in members.items() if k.startswith(key) and k.split(".")[1] in ("jpg", "png"))
            samples.append({"caption": members[f"{key}.txt"].decode(), "image": image,
                            **json.loads(members[f"{key}.json"])})
    return samples


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


def test_csv_input_gives_shards_with_entities_index_and_pairs(corpus, tmp_path):
    report = prepare(str(corpus), tmp_path / "out", shard_size=5, pairs=4, workers=1, progress=False)
    assert report.samples == 21 and report.shards == 5 and dict(report.skipped) == {"corrupt image": 1,
                                                                                     "empty caption": 1}
    samples, extractor = read_output(tmp_path / "out"), EntityExtractor()
    assert len(samples) == 21
    for s in samples:
        assert s["entities"] == extractor.entities(s["caption"])
        assert s["image"] == (corpus.parent / s["source"]).read_bytes()
    assert next(s for s in samples if s["caption"] == CAPTIONS[8])["entities"] == ["bus", "tv", "sofa"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["count"] == 21 and [s["count"] for s in manifest["shards"]] == [4, 4, 5, 5, 3]


def test_every_partner_shares_the_entity(corpus, tmp_path):
    prepare(str(corpus), tmp_path / "out", shard_size=7, pairs=6, workers=1, progress=False)
    out = tmp_path / "out"
    pairs, shared = np.load(out / "pairs.npy"), np.load(out / "pair_entities.npy")
    names = json.loads((out / "manifest.json").read_text())["entities"]
    entities = [s["entities"] for s in read_output(out)]
    assert pairs.shape == shared.shape == (len(entities), 6)
    for i, ents in enumerate(entities):
        if not ents:
            assert (pairs[i] == -1).all() and (shared[i] == -1).all()
            continue
        for partner, entity in zip(pairs[i], shared[i], strict=True):
            assert names[entity] in ents and names[entity] in entities[partner]
    assert len(set(pairs[entities.index(["dog", "sofa"])])) > 1  # partners vary


def test_folder_and_shard_inputs(corpus, tmp_path):
    folder = prepare(str(corpus.parent / "images"), tmp_path / "f", shard_size=10, workers=1, progress=False)
    assert folder.samples == 21 and folder.skipped == {"corrupt image": 1, "missing caption": 1}
    again = prepare(str(tmp_path / "f"), tmp_path / "w", workers=1, progress=False, require_entity=True)
    assert again.shards == 3 and again.samples == 16 and again.filtered == 5  # "plane" and "catalog" captions
    assert all(s["entities"] for s in read_output(tmp_path / "w"))
    assert read_output(tmp_path / "w")[0]["source"] == "shard-000000.tar:000000_000000"


def test_a_killed_run_resumes_to_byte_identical_output(corpus, tmp_path, monkeypatch):
    prepare(str(corpus), tmp_path / "clean", shard_size=4, workers=2, progress=False)  # processes
    real, written = prepare_module.write_chunk, []

    def write_then_die(chunk, opts, output):
        if len(written) == 3:
            raise KeyboardInterrupt  # killed while working on the 4th shard
        written.append(chunk.number)
        return real(chunk, opts, output)

    monkeypatch.setattr(prepare_module, "write_chunk", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(corpus), tmp_path / "resumed", shard_size=4, workers=1, progress=False)
    out = tmp_path / "resumed"
    assert sorted(p.name for p in out.glob("*.tar")) == [f"shard-00000{i}.tar" for i in range(3)]
    assert not (out / "manifest.json").exists()
    (out / ".shard-000003.tar.abc123.tmp").write_bytes(b"half a shard")  # what a SIGKILL leaves
    with pytest.raises(OvsegError, match="has not finished here"):
        ShardSource(str(out))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    monkeypatch.setattr(prepare_module, "write_chunk", real)
    report = prepare(str(corpus), out, shard_size=4, workers=1, progress=False)
    assert report.resumed == 3 and all(out.joinpath(k).stat().st_mtime_ns == v for k, v in before.items())
    assert hashes(out) == hashes(tmp_path / "clean")


def test_a_finished_output_is_kept_and_other_options_are_refused(corpus, tmp_path):
    prepare(str(corpus), tmp_path / "out", shard_size=8, workers=1, progress=False)
    first = hashes(tmp_path / "out")
    assert prepare(str(corpus), tmp_path / "out", shard_size=8, workers=1, progress=False).resumed == 3
    assert hashes(tmp_path / "out") == first
    with pytest.raises(OvsegError, match=r"prepared with other options \(differ: pairs, shard_size\)"):
        prepare(str(corpus), tmp_path / "out", shard_size=5, pairs=3, workers=1, progress=False)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["prepare", "--no-progress", "--workers", "1", *args])
    return code, capsys.readouterr().err.strip()


def test_bad_input_gets_one_clear_line(corpus, tmp_path, capsys):
    root = corpus.parent
    (root / "cols.csv").write_text("image,text\nimages/001.jpg,a dog\n")
    (root / "numbers.csv").write_text("image_id,caption\nimages/001.jpg,3\nimages/002.jpg,4.5\n")
    (root / "empty.csv").write_text("image_id,caption\n")
    (root / "vocab.json").write_text('{"entities": ["dog", "cat"], "surface_words": ["dog", "dog"]}')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    (tmp_path / "no-images").mkdir()
    cases = {
        "cols.csv: missing column(s) image_id, caption (found: image, text)": [str(root / "cols.csv")],
        "numbers.csv: column 'caption' holds numbers, not text (e.g. '3')": [str(root / "numbers.csv")],
        "empty.csv: no rows (empty input)": [str(root / "empty.csv")],
        "the images it references are absent (first: ": [str(corpus), "--image-root", str(tmp_path)],
        "vocab.json: duplicate surface_words: dog": [str(corpus), "--vocabulary", str(root / "vocab.json")],
        "no-images: no images (": [str(tmp_path / "no-images")],
        "nowhere.csv: no such file or folder": [str(root / "nowhere.csv")],
        "foreign: not empty and not an `ovseg prepare` output": [str(corpus), "--output", str(tmp_path / "foreign")],
    }
    for message, args in cases.items():
        if "--output" not in args:
            args = [*args, "--output", str(tmp_path / "out")]
        code, err = run_cli(["--input", *args], capsys)
        assert code == 2 and message in err and "\n" not in err, (message, err)
        assert not (tmp_path / "out").exists()  # bad input leaves no output folder behind


def test_prepared_shards_train_both_stages(corpus, tmp_path, capsys):
    code = main(["prepare", "--input", str(corpus), "--output", str(tmp_path / "out"), "--shard-size", "6",
                 "--workers", "1", "--no-progress"])
    assert code == 0 and "prepared 21 samples in 4 shards" in capsys.readouterr().out
    source = ShardSource(str(tmp_path / "out"))
    assert source.prepared and source.has_pairs and len(source) == 21
    partner, entity = source.partner(0, random.Random(0))
    assert entity in source.read(0).entities and entity in source.read(partner).entities
    assert source.image(partner) == source.read(partner).image  # random access through the index
    clone = pickle.loads(pickle.dumps(source))  # as spawned DataLoader workers receive it: maps reopened
    assert clone.partner(0, random.Random(0)) == (partner, entity) and clone.read(5).caption == source.read(5).caption
    for stage in (1, 2):
        cfg = load_config("configs/tiny.yml", ["data.type=webdataset", f"data.shards={tmp_path / 'out'}",
                                               "data.image_size=32", "model.use_entityloss=true",
                                               f"model.use_maskloss={stage == 2}", f"train.stage={stage}"])
        ds = build_train_dataset(cfg)
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=build_collator(cfg, 0))))
        assert batch["image"].shape == (5, 3, 32, 32) and ("cross_image" in batch) == (stage == 2)


def test_two_training_steps_on_prepared_shards(corpus, tmp_path):
    from ovseg.engine.trainer import train

    prepare(str(corpus), tmp_path / "out", shard_size=6, workers=1, progress=False)
    cfg = load_config("configs/tiny.yml", [
        "data.type=webdataset", f"data.shards={tmp_path / 'out'}", "data.image_size=32", "data.batch_size=4",
        "model.img_encoder.img_size=32", "model.use_entityloss=true", "train.max_steps=2", "train.device=cpu",
        "train.warmup_epochs=0", "checkpoint.every_steps=0", "evaluate.val_every_steps=0"])
    assert train(cfg, tmp_path / "run").steps == 2
