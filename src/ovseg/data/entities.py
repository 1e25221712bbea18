"""Entity extraction from captions and the masked-entity question/answer (spec §2.2, Appendix A).

Words are matched as whole tokens (so "catalog" is not a cat) after lower-casing, stripping surrounding
punctuation and possessives, and mapping inflected forms (plurals, irregulars) onto the vocabulary; n-grams
up to three words are matched for multi-word entities. ``legacy_strip=True`` reproduces the original's
``word.strip("'s")`` matching (entities starting or ending in "s" never match, and stripped words are
written back into the question), for exact re-training of the released model.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import OvsegError

PAPER_VOCABULARY = Path(__file__).with_name("entity_vocabulary.json")
IRREGULAR_PLURALS = {"man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice",
                     "foot": "feet", "tooth": "teeth", "goose": "geese", "sheep": "sheep", "fish": "fish",
                     "knife": "knives", "leaf": "leaves", "shelf": "shelves", "wolf": "wolves", "ski": "skis",
                     "skis": "skis", "people": "people", "children": "children", "men": "men", "women": "women"}
_EDGE_PUNCT = "\"'“”‘’.,;:!?()[]{}<>*…"
_WORD = re.compile(r"[^\s/,;&+|—–]+")  # words; separators inside a token split it
_LEGACY_WORD = re.compile(r"\S+")  # the original's whitespace split


def plural(word: str) -> str:
    """English plural of a lower-case noun (regular rules and common irregulars)."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def normalise_token(token: str) -> str:
    """Lower-case, strip surrounding punctuation and a possessive ('s, s', ’s)."""
    word = token.strip(_EDGE_PUNCT).lower()
    for suffix in ("'s", "’s"):
        if word.endswith(suffix):
            word = word[: -len(suffix)]
    return word.rstrip("'’")


@dataclass
class EntityVocabulary:
    """surface word (any case as written) -> canonical entity; ``entities`` the canonical list."""

    synonyms: dict[str, str]
    entities: list[str]

    @classmethod
    def load(cls, path: str | Path | None = None) -> EntityVocabulary:
        """The paper's vocabulary (default) or a user file of the same JSON form: ``entities`` (canonical
        names), optional ``surface_words`` and ``synonyms`` {surface: canonical}."""
        path = Path(path) if path else PAPER_VOCABULARY
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        except (OSError, ValueError) as e:
            raise OvsegError(f"{path}: cannot read the entity vocabulary ({e})") from e
        if not isinstance(data, dict) or not data.get("entities"):
            raise OvsegError(f"{path}: 'entities' is missing or empty")
        entities, surface = list(data["entities"]), list(data.get("surface_words") or [])
        _refuse_duplicates(path, "entities", entities)
        _refuse_duplicates(path, "surface_words", surface)
        synonyms = {w: w for w in surface} | dict(data.get("synonyms") or {})
        unknown = sorted({c for c in synonyms.values() if c not in entities})
        if unknown:
            raise OvsegError(f"{path}: surface words or synonyms name unknown entities: {', '.join(unknown[:5])}")
        synonyms |= {e: e for e in entities}
        _refuse_case_clashes(path, synonyms)
        return cls(synonyms=synonyms, entities=entities)

    def lookup_table(self) -> dict[tuple[str, ...], str]:
        """Lower-case word n-grams (singular and plural) -> canonical entity."""
        table = {tuple(surface.lower().split()): canonical for surface, canonical in self.synonyms.items()}
        for surface, canonical in self.synonyms.items():  # plurals never override a word given as such
            words = surface.lower().split()
            table.setdefault(tuple(words[:-1] + [plural(words[-1])]), canonical)
        return table


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json object hook: a key given twice is an error (json would keep the last silently)."""
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"duplicate key: {', '.join(repeated)}")
    return dict(pairs)


def _refuse_duplicates(path: Path, name: str, values: list[str]) -> None:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise OvsegError(f"{path}: duplicate {name}: {', '.join(duplicates)}")


def _refuse_case_clashes(path: Path, synonyms: dict[str, str]) -> None:
    """Matching ignores case, so "Apple" and "apple" must not name different entities."""
    seen: dict[str, tuple[str, str]] = {}
    for word, entity in synonyms.items():
        other = seen.setdefault(word.lower(), (word, entity))
        if other[1] != entity:
            raise OvsegError(f"{path}: '{other[0]}' and '{word}' differ only in case but map to different "
                             f"entities ({other[1]}, {entity})")


@dataclass
class EntityMatch:
    """Token positions [start, stop) of one matched mention and its canonical entity."""

    start: int
    stop: int
    entity: str


class EntityExtractor:
    """Finds vocabulary entities in captions and builds the masked question / answer prompt."""

    def __init__(self, vocabulary: EntityVocabulary | None = None, legacy_strip: bool = False):
        self.vocabulary = vocabulary or EntityVocabulary.load()
        self.table = self.vocabulary.lookup_table()
        self.max_words = max(len(k) for k in self.table)
        self.legacy_strip = legacy_strip

    def spans(self, caption: str) -> list[tuple[int, int]]:
        """[start, stop) of each word: split at whitespace and (except in legacy mode) at separators inside
        a token, so "dog/cat", "cat,dog" and "a dog—" yield their words."""
        pattern = _LEGACY_WORD if self.legacy_strip else _WORD
        return [m.span() for m in pattern.finditer(caption)]

    def matches(self, caption: str) -> list[EntityMatch]:
        """Mentions in order (positions index ``spans``); the longest n-gram wins at each position."""
        tokens = [caption[a:b] for a, b in self.spans(caption)]
        words = [self._legacy_word(t) if self.legacy_strip else normalise_token(t) for t in tokens]
        found, i = [], 0
        while i < len(words):
            for n in range(min(self.max_words, len(words) - i), 0, -1):
                entity = self.table.get(tuple(words[i : i + n]))
                if entity is not None and (n == 1 or not self.legacy_strip):
                    found.append(EntityMatch(i, i + n, entity))
                    i += n
                    break
            else:
                i += 1
        return found

    def _legacy_word(self, token: str) -> str:
        """The original's per-word processing: strip("'s"), drop ".", lower, lemmatise (plurals)."""
        word = token.strip("'s").replace(".", "").lower()
        singular = {plural(s.lower()): s.lower() for s in self.vocabulary.synonyms}
        return singular.get(word, word)

    def entities(self, caption: str) -> list[str]:
        """Unique canonical entities in order of first mention."""
        return list(dict.fromkeys(m.entity for m in self.matches(caption)))

    def question_answer(self, caption: str, prefix: str = "a photo of a ") -> tuple[str, str, list[str]]:
        """(caption with every entity word replaced by [MASK], prefix + "e1 and e2 …", entities); the question's
        whitespace is normalised to single spaces."""
        spans, matches = self.spans(caption), self.matches(caption)
        masked = {i for m in matches for i in range(m.start, m.stop)}
        if self.legacy_strip:  # the original writes every stripped word back
            tokens = [caption[a:b].strip("'s") for a, b in spans]
            question = " ".join(_mask_word(t) if i in masked else t for i, t in enumerate(tokens))
        else:
            question = caption
            for i in sorted(masked, reverse=True):
                a, b = spans[i]
                question = question[:a] + _mask_word(caption[a:b]) + question[b:]
            question = " ".join(question.split())
        entities = list(dict.fromkeys(m.entity for m in matches))
        return question, prefix + " and ".join(entities), entities


def _mask_word(token: str) -> str:
    """The word inside ``token`` replaced by [MASK]; surrounding punctuation and possessives stay."""
    core = normalise_token(token)
    masked, count = re.subn(re.escape(core), "[MASK]", token, count=1, flags=re.IGNORECASE) if core else (token, 0)
    return masked if count else "[MASK]"


def random_prefix(templates: list[str], rng: random.Random) -> str:
    """The text before ``{}`` of a random template (the answer prompt's prefix)."""
    return rng.choice(templates).split("{}")[0]
