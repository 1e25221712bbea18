"""The embedded dataset's object categories, colours and words.

Ten object-like categories with distinct shapes and overlapping typical colours. ``words`` are used in
training captions (the first is the class name, the rest synonyms that captions sometimes use instead);
``held_out`` words never appear in training captions and serve the open-vocabulary synonym test.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    name: str
    shape: str
    words: tuple[str, ...]
    held_out: str
    colours: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("ball", "disc", ("ball", "sphere"), "globe", ("red", "blue", "yellow", "white")),
    Category("box", "square", ("box", "crate"), "cube", ("brown", "yellow", "grey", "blue")),
    Category("tent", "triangle", ("tent",), "teepee", ("green", "orange", "red", "brown")),
    Category("star", "star", ("star",), "asterisk", ("yellow", "white", "orange", "purple")),
    Category("heart", "heart", ("heart",), "valentine", ("red", "pink", "purple", "white")),
    Category("moon", "crescent", ("moon",), "crescent", ("yellow", "white", "grey", "orange")),
    Category("ring", "annulus", ("ring", "donut"), "hoop", ("pink", "brown", "blue", "yellow")),
    Category("cross", "cross", ("cross",), "plus sign", ("red", "green", "white", "blue")),
    Category("kite", "kite", ("kite",), "diamond", ("purple", "green", "red", "orange")),
    Category("arrow", "arrow", ("arrow",), "pointer", ("black", "blue", "green", "grey")),
)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 85, 215), "yellow": (235, 205, 40),
    "orange": (240, 135, 30), "purple": (135, 55, 175), "pink": (240, 125, 180), "white": (240, 240, 235),
    "black": (28, 28, 30), "brown": (125, 78, 40), "grey": (128, 128, 128),
}
