"""The embedded captioned-scene dataset and entity extraction."""

from __future__ import annotations

import numpy as np

from ovseg.data.entities import EntityExtractor, EntityVocabulary
from ovseg.data.scenes.categories import CATEGORIES
from ovseg.data.scenes.dataset import CaptionedScenes, entity_vocabulary, held_out_names


def test_dataset_is_deterministic_per_seed():
    a, b = CaptionedScenes("val", size=6, image_size=48, seed=3), CaptionedScenes("val", size=6, image_size=48, seed=3)
    c = CaptionedScenes("val", size=6, image_size=48, seed=4)
    for i in range(6):
        assert a.scenes[i].caption == b.scenes[i].caption
        assert np.array_equal(a.render(i)[0], b.render(i)[0]) and np.array_equal(a.render(i)[1], b.render(i)[1])
    assert [s.caption for s in a.scenes] != [s.caption for s in c.scenes]


def test_training_layouts_change_per_epoch_but_captions_do_not():
    ds = CaptionedScenes("train", size=4, image_size=48)
    first = ds.render(0)[0]
    ds.set_epoch(1)
    assert not np.array_equal(first, ds.render(0)[0])
    assert ds[0]["caption"] == ds.scenes[0].caption


def test_masks_match_the_captions_entities():
    ds = CaptionedScenes("test", size=40, image_size=64)
    extractor = EntityExtractor(entity_vocabulary())
    names = [c.name for c in CATEGORIES]
    for i in range(len(ds)):
        _, labels = ds.render(i)
        in_mask = {names[k - 1] for k in np.unique(labels) if k > 0}
        assert in_mask == set(ds.scenes[i].entities)
        assert set(extractor.entities(ds.scenes[i].caption)) == in_mask


def test_splits_differ_and_held_out_synonyms_never_appear_in_training():
    train = CaptionedScenes("train", size=500, image_size=32)
    val = CaptionedScenes("val", size=50, image_size=32)
    assert not {s.caption for s in train.scenes[:50]} >= {s.caption for s in val.scenes}
    words = " ".join(s.caption.lower() for s in train.scenes)
    for held in held_out_names():
        if held not in {w for c in CATEGORIES for w in c.words}:
            assert f" {held} " not in f" {words} ", held


def test_entity_extraction_cases():
    e = EntityExtractor()
    assert e.entities("Two Dogs, a brown one and a black one!") == ["dog"]
    assert e.entities("The man's bicycle.") == ["people", "bicycle"]
    assert e.entities("a catalog of dogmas") == []
    assert e.entities("Buses and glasses, sheep; knives") == ["bus", "glass", "sheep", "knife"]
    assert e.entities("A T-shirt, a couch and an airplane") == ["shirt", "sofa", "aeroplane"]
    question, answer, entities = e.question_answer("Two dogs chase a cat.", "a photo of a ")
    assert question == "Two [MASK] chase a [MASK]." and answer == "a photo of a dog and cat"


def test_legacy_strip_reproduces_the_original_bug():
    legacy = EntityExtractor(legacy_strip=True)
    assert legacy.entities("a bus and a sheep") == []  # entities starting/ending in "s" never match
    assert legacy.entities("dogs, and a dog.") == ["dog"]  # "dogs," does not match, "dog." does
    question, _, _ = legacy.question_answer("Several students sit on the grass")
    assert question == "Several tudent it on the gra"


def test_user_vocabulary_file_with_duplicates_is_refused(tmp_path):
    import pytest

    from ovseg.errors import OvsegError

    path = tmp_path / "vocab.json"
    path.write_text('{"entities": ["cat", "dog", "cat"]}')
    with pytest.raises(OvsegError, match="duplicate entities: cat"):
        EntityVocabulary.load(path)
    path.write_text('{"entities": ["teddy bear"], "synonyms": {"teddy": "teddy bear"}}')
    assert EntityExtractor(EntityVocabulary.load(path)).entities("two teddy bears and a teddy") == ["teddy bear"]


def test_a_fully_hidden_instance_does_not_break_rendering():
    from ovseg.data.scenes.dataset import _paint

    image = np.zeros((8, 8, 3), np.float32)
    _paint(image, np.zeros((8, 8), bool), (255, 0, 0), np.random.default_rng(0))
    assert not image.any()
    ds = CaptionedScenes("train", size=300, image_size=32, clutter=0.0)
    for i in range(300):
        ds.render(i)


def test_pooled_training_backgrounds_are_deterministic_in_any_access_order():
    a = CaptionedScenes("train", size=6, image_size=32, background_pool=3)
    b = CaptionedScenes("train", size=6, image_size=32, background_pool=3)
    forward = [a.render(i)[0] for i in range(6)]
    backward = [b.render(i)[0] for i in reversed(range(6))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(forward, backward, strict=True))
    assert len(a.backgrounds.entries) <= 3  # every background comes from the pool
    val = CaptionedScenes("val", size=2, image_size=32, background_pool=3)
    assert val.backgrounds is None  # validation and test scenes never change
