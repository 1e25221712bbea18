"""Entity extraction from real-world caption forms (spec §2.2), beyond tests/test_scenes.py's cases: plurals,
possessives, punctuation inside and around words, synonyms, capitals, words that merely contain an entity,
the legacy switch, and user vocabulary files that are refused in one line."""

from __future__ import annotations

import pytest

from ovseg.data.entities import EntityExtractor, EntityVocabulary
from ovseg.errors import OvsegError

E = EntityExtractor()


@pytest.mark.parametrize("caption,entities", [
    # plurals, regular and irregular
    ("boxes, benches and buses", ["box", "bench", "bus"]),
    ("three mice and two knives", ["mouse", "knife"]),
    ("children with oranges and carrots", ["people", "orange", "carrot"]),
    # possessives, straight and curly
    ("the dogs' toys", ["dog"]),
    ("the Dog’s bed", ["dog", "bed"]),
    ("the children's room", ["people"]),
    # punctuation around and inside words
    ('a "bus" (red); a cat...', ["bus", "cat"]),
    ("dog/cat friendly", ["dog", "cat"]),
    ("cat,dog", ["cat", "dog"]),
    ("a dog—and a kite!!", ["dog", "kite"]),
    # synonyms and capitals
    ("Couches, Hotels, BIKES", ["sofa", "house", "bicycle"]),
    ("a TV and two TVs", ["tv"]),
    ("T-Shirts and handbags", ["shirt", "bag"]),
    ("AIRPLANE over a Motorbike", ["aeroplane", "motorcycle"]),
    # words that merely contain an entity
    ("a catalog of dogmas in a scatter of carpets", []),
    ("a bedroom with a cupboard", []),
    ("cat-like hot-dog", []),
])
def test_entities_in_captions(caption, entities):
    assert E.entities(caption) == entities


def test_the_question_masks_the_words_and_keeps_the_punctuation():
    question, answer, entities = E.question_answer("The Dog’s bed; cat,dog  and (buses).", "a photo of a ")
    assert question == "The [MASK]’s [MASK]; [MASK],[MASK] and ([MASK])."
    assert answer == "a photo of a dog and bed and cat and bus" and entities == ["dog", "bed", "cat", "bus"]
    assert E.question_answer("no entity here", "a ")[:2] == ("no entity here", "a ")


def test_legacy_switch_keeps_the_original_whitespace_split_and_strip():
    legacy = EntityExtractor(legacy_strip=True)
    assert legacy.entities("dog/cat") == [] and legacy.entities("dog's bowl") == ["dog", "bowl"]
    assert legacy.entities("a glass and a spoon") == []  # end or start in "s"
    assert legacy.question_answer("the dogs' sofa")[0] == "the [MASK] ofa"


def write(tmp_path, text: str):
    path = tmp_path / "vocab.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ('{"entities": ["dog"], "surface_words": ["dog", "puppy", "puppy"]}', "duplicate surface_words: puppy"),
    ('{"entities": ["dog"], "synonyms": {"puppy": "dog", "puppy": "cat"}}', "duplicate key: puppy"),
    ('{"entities": ["dog"], "synonyms": {"puppy": "dgo"}}', "name unknown entities: dgo"),
    ('{"entities": ["apple", "company"], "synonyms": {"Apple": "company"}}', "'Apple' and 'apple' differ only in case"),
    ('{"entities": []}', "'entities' is missing or empty"),
    ('["dog", "cat"]', "'entities' is missing or empty"),
    ('{"entities": ["dog",]}', "cannot read the entity vocabulary"),
])
def test_bad_vocabulary_files_are_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(OvsegError, match=message) as e:
        EntityVocabulary.load(write(tmp_path, text))
    assert "\n" not in str(e.value) and "vocab.json" in str(e.value)


def test_a_user_vocabulary_replaces_the_papers(tmp_path):
    vocab = EntityVocabulary.load(write(tmp_path, '{"entities": ["glasses", "glass"], '
                                                  '"synonyms": {"spectacles": "glasses"}}'))
    extractor = EntityExtractor(vocab)
    assert extractor.entities("glasses, a glass and spectacles; a dog") == ["glasses", "glass"]
