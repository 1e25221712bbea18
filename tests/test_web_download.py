"""The web page's mask download explains itself: a paletted PNG whose indices are the labels, whose palette holds
the legend's colours and whose ``ovseg:classes`` text chunk names every index (through ``WebSession``, no browser)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.inference import Segmenter
from ovseg.viz import class_palette
from ovseg.web import WebSession
from ovseg.web.session import write_mask


@pytest.fixture(scope="module")
def session(tiny_checkpoint):
    web = WebSession(Segmenter.from_checkpoint(tiny_checkpoint))
    yield web
    web.close()


def read_mask(path) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """(labels, palette (k, 3), class names, mode) of a mask PNG."""
    with Image.open(path) as img:
        img.load()
        palette = np.array(img.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        return np.asarray(img), palette, json.loads(img.text["ovseg:classes"]), img.mode


@pytest.mark.parametrize("bg_thresh", [None, 0.5])
def test_the_downloaded_mask_is_paletted_and_names_its_classes(session, photos, tmp_path, bg_thresh):
    path = tmp_path / "chelsea.png"
    Image.fromarray(photos["chelsea"][::4, ::4]).save(path)
    result = session.segment(path, "cat, person|man|woman, wall", templates="simple", bg_thresh=bg_thresh)
    labels, palette, names, mode = read_mask(result.mask_path)
    assert mode == "P" and labels.shape == photos["chelsea"][::4, ::4].shape[:2]
    assert names == ["background", "cat", "person", "wall"]  # index order; synonyms shown by their first name
    assert set(np.unique(labels)) <= set(range(4)) and (bg_thresh is not None or labels.min() >= 1)
    for row in result.legend:  # the page's legend: same index, name, colour and share as the file
        assert names[row.index] == row.name and tuple(palette[row.index]) == row.colour
        assert row.share == pytest.approx(float((labels == row.index).mean()))
    assert palette[0].tolist() == [0, 0, 0]


def test_unicode_names_round_trip_and_a_huge_vocabulary_gets_16_bits(tmp_path):
    names = ["background", "café", "北京", 'say "hi"']
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask, names)
    labels, palette, read_names, mode = read_mask(tmp_path / "m.png")
    assert (mode, read_names, labels.tolist()) == ("P", names, mask.tolist())
    assert np.array_equal(palette[:4], class_palette(4))

    many = ["background"] + [f"c{i}" for i in range(300)]
    wide = np.array([[0, 299], [256, 17]], dtype=np.uint16)
    write_mask(tmp_path / "wide.png", wide, many)
    labels, _, read_names, _ = read_mask(tmp_path / "wide.png")
    assert labels.tolist() == wide.tolist() and read_names == many
