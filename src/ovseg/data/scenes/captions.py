"""A small caption grammar: counts and plurals, colours, synonyms, spatial relations and filler words."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..entities import plural
from .categories import CATEGORIES

NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four"}
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below",
             "near": "next to"}
INTROS = ["", "", "a photo of ", "a picture of ", "an image showing ", "we can see ", "look at ", "there {be} "]
OUTROS = ["", "", "", " on a cluttered background", " in front of a patterned wall", " on a textured surface",
          " in this picture", " here"]


@dataclass
class Phrase:
    """One category's mention: how many, an optional colour, and the word used."""

    category: int
    count: int
    colour: str | None
    word: str

    def text(self, rng: random.Random) -> str:
        noun = self.word if self.count == 1 else plural(self.word)
        colour = f"{self.colour} " if self.colour else ""
        if self.count == 1:
            article = "an" if (colour or noun)[0] in "aeiou" else "a"
            return f"{rng.choice([article, article, article, 'one'])} {colour}{noun}"
        number = rng.choice([NUMBERS[self.count]] * 4 + ["some", "several"])
        return f"{number} {colour}{noun}"


def choose_word(category: int, rng: random.Random, synonym_prob: float) -> str:
    words = CATEGORIES[category].words
    return rng.choice(words[1:]) if len(words) > 1 and rng.random() < synonym_prob else words[0]


def compose(phrases: list[Phrase], relation: tuple[int, int, str] | None, rng: random.Random) -> str:
    """The caption text; ``relation`` = (index of phrase a, index of phrase b, relation key)."""
    texts = [p.text(rng) for p in phrases]
    if relation is not None:
        a, b, key = relation
        core = f"{texts[a]} {RELATIONS[key]} {texts[b]}"
        rest = [t for i, t in enumerate(texts) if i not in (a, b)]
        body = core + (f" and {rest[0]}" if rest else "")
    else:
        body = texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]
    intro = rng.choice(INTROS).replace("{be}", "is" if phrases[0].count == 1 else "are")
    caption = intro + body + rng.choice(OUTROS) + rng.choice(["", ".", "."])
    return caption[0].upper() + caption[1:] if rng.random() < 0.6 else caption
