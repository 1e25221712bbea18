"""The web page's bounds, through ``WebSession`` (no browser, no Gradio): synonyms and prompts per request,
the text cache's size, and error messages that never show the browser a server path."""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pytest
from PIL import Image

import ovseg.inference.segmenter as segmenter_module
from ovseg.cli import serve
from ovseg.errors import OvsegError
from ovseg.inference import Segmenter
from ovseg.inference.lru import LruCache
from ovseg.web import WebLimits, WebSession, page_message, parse_classes
from ovseg.web.session import check_prompts


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return Segmenter.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def make_session(segmenter):
    sessions = []

    def make(**limits) -> WebSession:
        sessions.append(WebSession(segmenter, WebLimits(**limits)))
        return sessions[-1]

    yield make
    for s in sessions:
        s.close()


def _assert_no_server_path(message: str, *dirs) -> None:
    for d in ("/tmp", tempfile.gettempdir(), *map(str, dirs)):
        assert d not in message, message


def test_ordinary_requests_still_work(make_session, photo):
    session = make_session()
    result = session.segment(photo, "cat, dog, person|man|woman", templates="simple", bg_thresh=None,
                             name="holiday.png")
    assert {r.name for r in result.legend} == {"cat", "dog", "person"}
    assert result.mask_path.name == "holiday_mask.png" and result.mask_path.is_file()
    assert session.segment(photo, "cat", templates=None, bg_thresh=0.9).reused
    check_prompts(parse_classes("coco_stuff"), "full", WebLimits())  # every preset with the full templates


def test_too_many_synonyms_are_refused_before_the_upload_is_read(make_session, tmp_path):
    session = make_session()
    with pytest.raises(OvsegError, match=r"at most 16 synonyms per class \('x\|x\|…' has 5000\)"):
        session.segment(tmp_path / "missing.png", "|".join(["x"] * 5000))
    with pytest.raises(OvsegError, match=r"at most 2 synonyms per class \('person\|man\|…' has 3\)"):
        parse_classes("cat, person|man|woman", WebLimits(max_synonyms=2))
    assert parse_classes("person|man|woman", WebLimits(max_synonyms=3)) == ["person|man|woman"]


def test_too_many_prompts_are_refused(make_session, tmp_path):
    session = make_session()
    classes = ", ".join(f"c{i}|d{i}" for i in range(256))
    with pytest.raises(OvsegError, match=r"needs 40,960 prompts \(512 names × 80 templates\); at most 20,480"):
        session.segment(tmp_path / "missing.png", classes, templates="full")
    check_prompts(parse_classes(classes), "subset", WebLimits())  # 3,584 prompts
    check_prompts(["a|b", "c"], "simple", WebLimits(max_prompts=3))
    with pytest.raises(OvsegError, match=r"needs 21 prompts \(3 names × 7 templates\); at most 20 are"):
        check_prompts(["a|b", "c"], "subset", WebLimits(max_prompts=20))
    with pytest.raises(OvsegError, match="templates"):
        session.segment(tmp_path / "missing.png", "cat", templates=["a photo of a {}."] * 100_000)
    with pytest.raises(OvsegError, match="unknown prompt templates"):
        session.segment(tmp_path / "missing.png", "cat", templates="everything")


def test_text_cache_keeps_the_most_recently_used_vocabularies(make_session, photo, monkeypatch):
    embedded = []
    embed = segmenter_module.embed_class_names

    def counting(model, tokenizer, names, templates, *args, **kwargs):
        embedded.append(names[0])
        return embed(model, tokenizer, names, templates, *args, **kwargs)

    monkeypatch.setattr(segmenter_module, "embed_class_names", counting)
    session = make_session(cached_vocabularies=2)
    for vocabulary in ("lru-a", "lru-b", "lru-a", "lru-c", "lru-a", "lru-b"):
        session.segment(photo, vocabulary, templates="simple")
    assert embedded == ["lru-a", "lru-b", "lru-c", "lru-b"]  # c evicted b (a was used after b); b came back
    assert len(session.segmenter.text_cache) == 2


def test_lru_cache_evicts_the_least_recently_used():
    cache = LruCache(2, {"a": 1})
    cache["b"] = 2
    assert cache["a"] == 1  # a is now the most recently used
    cache["c"] = 3
    assert list(cache) == ["a", "c"] and "b" not in cache


def test_long_upload_names_give_no_server_path(make_session, photo, tmp_path):
    session = make_session()
    result = session.segment(photo, "cat", templates="simple", name="a" * 250 + ".png")
    assert result.mask_path.name == "a" * 48 + "_mask.png"
    result = session.segment(photo, "cat", templates="simple", name="é" * 125 + ".png")  # 254 bytes
    assert result.mask_path.is_file()

    missing = tmp_path / ("b" * 300 + ".jpg")  # too long for the file system: stat fails
    with pytest.raises(OvsegError, match="could not be read") as e:
        session.segment(missing, "cat")
    assert "bbbb…" in str(e.value) and len(str(e.value)) < 200
    _assert_no_server_path(page_message(e.value), tmp_path, session.workdir)

    notes = tmp_path / ("c" * 246 + ".png")
    notes.write_text("not an image\n")
    with pytest.raises(OvsegError, match="not an image") as e:
        session.segment(notes, "cat")
    _assert_no_server_path(page_message(e.value), tmp_path)


def test_page_messages_strip_server_paths():
    error = FileNotFoundError(2, "No such file or directory", f"{tempfile.gettempdir()}/gradio/ab12/{'d' * 250}.png")
    shown = page_message(error)
    assert shown.startswith("unexpected error (FileNotFoundError") and "see the server's log" in shown
    _assert_no_server_path(shown)
    assert "d" * 61 not in shown
    for text in ("cannot open '/var/lib/ovseg/x.png': denied", r"cannot open C:\Users\me\AppData\x.png"):
        shown = page_message(OvsegError(text))
        assert "x.png" in shown and "/var" not in shown and "Users" not in shown
    assert page_message(OvsegError("use 'cat, dog' or 'km/h'")) == "use 'cat, dog' or 'km/h'"


def test_serve_flags_match_the_session_defaults():
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    args = parser.parse_args(["--resume", "x.pth"])
    defaults = WebLimits()
    assert (args.max_synonyms, args.max_prompts, args.cached_vocabularies) == \
        (defaults.max_synonyms, defaults.max_prompts, defaults.cached_vocabularies)
    serve._check(args)
    with pytest.raises(OvsegError, match="--max-prompts must be at least 1"):
        serve._check(parser.parse_args(["--resume", "x.pth", "--max-prompts", "0"]))
